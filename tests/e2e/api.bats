#!/usr/bin/env bats
# api.bats - the public C API (include/capsa.h) through tests/tools/apitool, and attached
# sandboxes: scenario 40 (an attached sandbox stops when its parent dies, detach() disarms
# that), `capsa run --name` attached semantics (also when the CLI is SIGKILLed), `ping --touch`.
# Real VMs on a busybox root; boots are slow under TCG, so the cases share sandboxes and run in
# file order (5 boots in all).
load helpers
bats_require_minimum_version 1.5.0

setup_file() {
  capsa_home_setup
  export ROOTFS="$BATS_FILE_TMPDIR/rootfs"
  "$BATS_TEST_DIRNAME/../lib/mkrootfs-busybox" "$ROOTFS"
  export CAPSA_BOOT_TIMEOUT=${CAPSA_BOOT_TIMEOUT:-300}
  CAPSA_BIN=$(realpath "$CAPSA_BIN")
  export CAPSA_BIN
  # apitool is not capsa: tell the library which binary runs supervisors
  export CAPSA_SUPERVISOR_EXE="$CAPSA_BIN"
  export APITOOL="${APITOOL:-$CAPSA_BUILD/tests/tools/apitool}"
  [ -x "$APITOOL" ] || { echo "no apitool at $APITOOL (build tests/tools/apitool)" >&2; return 1; }
}

teardown_file() {
  sandboxes_teardown
  if [ -d "$BATS_FILE_TMPDIR/registry" ]; then
    "$BATS_TEST_DIRNAME/../lib/registry" stop "$BATS_FILE_TMPDIR/registry" || true
  fi
}

show_log() { tail -30 "$CAPSA_HOME/sandboxes/$1/supervisor.log" >&2 || true; }
api() { timeout 600 "$APITOOL" "$@"; }
spec() { jq -n --arg n "$1" --arg r "$ROOTFS" '{name: $n, image: {Bind: $r}, resources: {memory_mib: 128}, env: [{key: "GREETING", value: "hi"}], labels: {suite: "api", who: $n}}' >"$BATS_FILE_TMPDIR/$1.json"; echo "$BATS_FILE_TMPDIR/$1.json"; }
# wait until FILE contains a line equal to WORD (SECONDS), or process PID has exited
wait_line() {
  local i
  for ((i = 0; i < $3 * 5; i++)); do
    grep -qx "$2" "$1" 2>/dev/null && return 0
    kill -0 "$4" 2>/dev/null || break
    sleep 0.2
  done
  echo "no line '$2' in $1:" >&2
  cat "$1" >&2
  return 1
}

@test "API: create attached, exec with output and exit code, detach; the sandbox outlives apitool" {
  run --separate-stderr api create "$(spec api1)" --detach --exec sh -c 'echo "out $GREETING"; echo err >&2; exit 5'
  [ "$status" -eq 5 ] || { echo "$output $stderr"; show_log api1; false; }
  [ "${lines[0]}" = "created api1 attached=1" ]
  [ "${lines[1]}" = "out hi" ]
  [ "$stderr" = err ]
  # detached before apitool exited: still running afterwards
  sleep 2
  [ "$(status_of api1)" = running ]
  run -0 api status api1
  [[ "$output" == "running "[0-9]*" 0" ]]
  [ "$(capsa inspect api1 | jq -r .runs[-1].termination_reason)" = null ]
}

@test "API exec: stdin, env, cwd, timeout, bounded output, start failures" {
  run -0 api exec api1 --stdin 'from stdin' -- cat
  [ "$output" = "from stdin" ]
  run -0 api exec api1 --env A=1 --env GREETING=over --cwd /tmp -- sh -c 'echo "$A $GREETING $(pwd)"'
  [ "$output" = "1 over /tmp" ]
  run -3 api exec api1 -- sh -c 'exit 3'
  run -137 api exec api1 -- sh -c 'kill -9 $$'
  SECONDS=0
  run -124 --separate-stderr api exec api1 --timeout 1000 -- sleep 30
  [ "$SECONDS" -lt 20 ]
  [[ "$stderr" == *"timed out"* ]]
  run -0 --separate-stderr api exec api1 --max 10 -- sh -c 'yes | head -c 100000'
  [ "${#output}" -le 10 ]
  [[ "$stderr" == *"stdout truncated"* ]]
  run -99 api exec api1 -- /no/such/program
  [[ "$output" == *"could not start"*"(errno 2)"* ]]
  # a bad argument is refused before anything runs
  run -99 api exec api1 --env NOEQ -- true
  [[ "$output" == *"req.env[0]"* ]]
  # run --name on a running sandbox uses it and leaves it running (not attached)
  run -0 timeout 120 "$CAPSA_BIN" run --name api1 "$ROOTFS" -- echo via-run
  [ "$output" = via-run ]
  [ "$(status_of api1)" = running ]
}

@test "API fs: 1 MiB binary round trip, stat, list, mkdir, rename, remove; errors name the path" {
  t="$BATS_TEST_TMPDIR"
  head -c 1048576 /dev/urandom >"$t/blob"
  run -0 api fs api1 write /root/blob "$t/blob"
  run -0 api fs api1 read /root/blob "$t/back"
  cmp "$t/blob" "$t/back"
  run -0 api fs api1 stat /root/blob
  [ "$output" = "file 1048576 644" ]
  # the guest sees the same bytes
  run -0 api exec api1 -- md5sum /root/blob
  [ "${output%% *}" = "$(md5sum <"$t/blob" | cut -d' ' -f1)" ]
  # max smaller than the file fails cleanly: nothing written on the host
  run -99 api fs api1 read /root/blob "$t/short" 1000
  [[ "$output" == *"/root/blob"*"larger than max (1000 bytes)"*"(errno 27)"* ]]
  [ ! -e "$t/short" ]
  run -99 api fs api1 read /root/no-such-file "$t/x"
  [[ "$output" == *"/root/no-such-file"*"(errno 2)"* ]]
  run -0 api fs api1 mkdir /root/d1/d2/d3 -p
  run -0 api fs api1 mkdir /root/d1/d2/d3 -p
  run -99 api fs api1 mkdir /root/d1
  [[ "$output" == *"/root/d1"*"already exists"*"(errno 17)"* ]]
  run -99 api fs api1 mkdir /root/nope/sub
  [[ "$output" == *"/root/nope/sub"*"(errno 2)"* ]]
  run -0 api fs api1 mkdir /root/d1/plain
  run -0 api fs api1 mv /root/blob /root/d1/blob2
  run -0 api fs api1 ls /root/d1
  [ "${lines[0]}" = "blob2 file 1048576" ]
  [[ "${lines[1]}" == "d2 dir "* ]]
  [[ "${lines[2]}" == "plain dir "* ]]
  [ "${#lines[@]}" -eq 3 ]
  run -99 api fs api1 stat /root/blob
  [[ "$output" == *"/root/blob"*"(errno 2)"* ]]
  run -99 api fs api1 rm /root/d1
  [[ "$output" == *"/root/d1"* ]]
  run -0 api fs api1 rm /root/d1 -r
  run -99 api fs api1 ls /root/d1
  [[ "$output" == *"/root/d1"*"(errno 2)"* ]]
  # arguments are checked before anything is sent
  run -99 api fs api1 stat relative/path
  [[ "$output" == *"path 'relative/path': must be an absolute guest path"* ]]
  # an empty file round-trips too
  : >"$t/empty"
  run -0 api fs api1 write /tmp/empty "$t/empty" 600
  run -0 api fs api1 stat /tmp/empty
  [ "$output" = "file 0 600" ]
}

@test "API list with a label selector; info has times and the root" {
  run -0 api list
  [ "$output" = api1 ]
  run -0 api list suite=api
  [ "$output" = api1 ]
  run -0 api list "suite=api,who=api1"
  [ "$output" = api1 ]
  run -0 api list who
  [ "$output" = api1 ]
  run -0 api list who=someone-else
  [ -z "$output" ]
  run -99 api list "=x"
  [[ "$output" == *"label_selector"* ]]
  run -0 api info api1
  read -r st img created started <<<"$output"
  [ "$st" = running ]
  [ "$img" = "$ROOTFS" ]
  [ "$created" -gt 1700000000000 ]
  [ "$started" -ge "$created" ]
}

@test "API streaming exec: output arrives as it is produced; stdin, stderr, exit code, timeout, cancel" {
  run -0 api stream api1 -- sh -c 'echo a; sleep 1; echo b'
  [ "${#lines[@]}" -eq 2 ] || { echo "$output"; false; }
  read -r ta wa da <<<"${lines[0]}"
  read -r tb wb db <<<"${lines[1]}"
  [ "$wa $da $wb $db" = "out a out b" ]
  # a came through while b did not exist yet
  [ $((tb - ta)) -ge 700 ] || { echo "$output"; false; }
  run -3 api stream api1 --stdin hello -- sh -c 'cat; echo oops >&2; exit 3'
  [[ "$output" == *" out hello"* ]]
  [[ "$output" == *" err oops"* ]]
  SECONDS=0
  run -124 api stream api1 --timeout 1000 -- sleep 30
  [ "$SECONDS" -lt 20 ]
  SECONDS=0
  run -99 api stream api1 --cancel -- sh -c 'echo first; sleep 30'
  [[ "$output" == *" out first"* ]]
  [[ "$output" == *"cancelled"*"(errno 125)"* ]]
  [ "$SECONDS" -lt 20 ]
  run -99 api stream api1 -- /no/such/program
  [[ "$output" == *"could not start"*"(errno 2)"* ]]
  # the cancelled command is gone from the guest
  run -0 api exec api1 -- sh -c 'ps | grep -c "[s]leep 30" || true'
  [ "$output" = 0 ]
}

@test "ping --touch: exit 0 when running, non-zero when stopped" {
  run -0 capsa ping --touch api1
  [[ "$output" == "api1: pong in "* ]]
  run -0 api stop api1
  [ "$(status_of api1)" = stopped ]
  run capsa ping api1
  [ "$status" -ne 0 ]
  run capsa ping --touch api1
  [ "$status" -ne 0 ]
  [[ "$output" == *"not running"* ]]
}

@test "scenario 40: an attached sandbox stops when its parent is SIGKILLed; the row stays stopped" {
  out="$BATS_TEST_TMPDIR/w1.out"
  "$APITOOL" create "$(spec w1)" --hold >"$out" 2>&1 &
  apid=$!
  wait_line "$out" held 300 "$apid" || { show_log w1; false; }
  grep -qx "created w1 attached=1" "$out"
  [ "$(status_of w1)" = running ]
  spid=$(sup_pid w1)
  [ "$spid" -gt 0 ]
  [ "$(qemu_procs)" -eq 1 ]
  kill -9 "$apid"
  wait "$apid" || true
  SECONDS=0
  wait_status w1 stopped 30 || { show_log w1; false; }
  [ "$SECONDS" -lt 30 ]
  # supervisor and QEMU are gone; the run says why
  for i in $(seq 50); do kill -0 "$spid" 2>/dev/null || break; sleep 0.1; done
  ! kill -0 "$spid" 2>/dev/null
  [ "$(qemu_procs)" -eq 0 ]
  run -0 capsa inspect w1
  [ "$(echo "$output" | jq -r .runs[-1].termination_reason)" = shutdown_requested ]
  [[ "$(echo "$output" | jq -r .runs[-1].termination_detail)" == *"attached parent process exited"* ]]
  [ "$(echo "$output" | jq -r .last_error)" = null ]
}

@test "scenario 40 during the boot: the parent SIGKILLed while starting abandons the boot at once" {
  out="$BATS_TEST_TMPDIR/w2.out"
  "$APITOOL" create "$(spec w2)" --hold >"$out" 2>&1 &
  apid=$!
  seen=
  for i in $(seq 500); do
    [ "$(status_of w2)" = starting ] && { seen=1; break; }
    sleep 0.02
  done
  [ -n "$seen" ]
  kill -9 "$apid"
  wait "$apid" || true
  wait_status w2 stopped 30 || { show_log w2; false; }
  for i in $(seq 50); do [ -z "$(sup_pids)" ] && break; sleep 0.1; done
  [ -z "$(sup_pids)" ]
  [ "$(qemu_procs)" -eq 0 ]
  run -0 capsa inspect w2
  [[ "$(echo "$output" | jq -r .runs[-1].termination_detail)" == *"parent process exited while the sandbox was booting"* ]]
  run capsa logs w2 --source system
  [[ "$output" == *"stopped while booting"* ]]
  run -0 capsa rm w2
}

@test "capsa run --name: a sandbox the run started stops when the command ends (exec restarts it)" {
  run -0 timeout 600 "$CAPSA_BIN" run --name r1 -m 128M "$ROOTFS" -- sh -c 'echo x >/root/f; echo wrote'
  [ "$output" = wrote ]
  [ "$(status_of r1)" = stopped ]
  [ "$(capsa inspect r1 | jq -r .runs[-1].termination_reason)" = shutdown_requested ]
  # reference scenario 4: exec auto-starts the stopped sandbox and sees the persisted upper
  run -0 timeout 600 "$CAPSA_BIN" exec r1 -- cat /root/f
  [ "$output" = x ]
  [ "$(status_of r1)" = stopped ]
}

@test "capsa run --name: SIGKILL of the CLI stops the sandbox it started" {
  out="$BATS_TEST_TMPDIR/r1.out"
  "$CAPSA_BIN" run --name r1 "$ROOTFS" -- sh -c 'echo started; exec sleep 300' >"$out" 2>&1 &
  cpid=$!
  wait_line "$out" started 300 "$cpid" || { show_log r1; false; }
  spid=$(sup_pid r1)
  [ "$spid" -gt 0 ]
  kill -9 "$cpid"
  wait "$cpid" || true
  wait_status r1 stopped 30 || { show_log r1; false; }
  for i in $(seq 50); do kill -0 "$spid" 2>/dev/null || break; sleep 0.1; done
  ! kill -0 "$spid" 2>/dev/null
  [ "$(qemu_procs)" -eq 0 ]
  [[ "$(capsa inspect r1 | jq -r .runs[-1].termination_detail)" == *"attached parent process exited"* ]]
}

# last: it starts a local registry (tests/lib/registry, tests/lib/mkimages) for itself
@test "API create2: an OCI image from an insecure local registry needs opts.insecure" {
  export REGDIR="$BATS_FILE_TMPDIR/registry"
  REG=$("$BATS_TEST_DIRNAME/../lib/registry" start "$REGDIR")
  "$BATS_TEST_DIRNAME/../lib/mkimages" "$REG" busybox
  jq -n --arg r "$REG/test/busybox" '{name: "img1", image: {Oci: {reference: $r}}, resources: {memory_mib: 256}, labels: {suite: "oci"}}' >"$BATS_TEST_TMPDIR/img1.json"
  # the default pull options refuse a plain-HTTP registry; nothing is stored
  run -99 api create "$BATS_TEST_TMPDIR/img1.json" --detached
  [[ "$output" == *"--insecure"* ]]
  run -0 api list suite=oci
  [ -z "$output" ]
  run -0 api create "$BATS_TEST_TMPDIR/img1.json" --detached --insecure --exec sh -c 'echo "from $(cat /etc/hostname 2>/dev/null || hostname)"; test -x /bin/busybox'
  [ "${lines[0]}" = "created img1 attached=0" ] || { echo "$output"; show_log img1; false; }
  [[ "${lines[1]}" == "from "* ]]
  run -0 api info img1
  [[ "$output" == "running $REG/test/busybox@sha256:"* ]]
  run -0 api list suite=oci
  [ "$output" = img1 ]
  run -0 api rm img1
  run -0 api list suite=oci
  [ -z "$output" ]
}
