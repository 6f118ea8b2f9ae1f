#!/usr/bin/env bats
# lifecycle.bats - named sandboxes with a per-sandbox supervisor, against real VMs (QEMU, the
# capsa kernel, capsa-agent) on a busybox root: create/exec/stop/start/rm, crash handling,
# lifecycle timers, listing formats, label selectors, concurrency. Boots are expensive, so most
# cases share one sandbox ("shared") created in setup_file; cases run in file order.
load helpers
bats_require_minimum_version 1.5.0

setup_file() {
  capsa_home_setup
  export ROOTFS="$BATS_FILE_TMPDIR/rootfs"
  "$BATS_TEST_DIRNAME/../lib/mkrootfs-busybox" "$ROOTFS"
  export CAPSA_BOOT_TIMEOUT=${CAPSA_BOOT_TIMEOUT:-300}
  timeout 600 "$CAPSA_BIN" create --name shared -m 128M --label team=blue --label tier=web \
    -e GREETING=hello "$ROOTFS" >"$BATS_FILE_TMPDIR/create.out" 2>&1 || {
    cat "$BATS_FILE_TMPDIR/create.out" "$CAPSA_HOME"/sandboxes/shared/supervisor.log >&2
    return 1
  }
}

teardown_file() {
  sandboxes_teardown
}

# capsa with a time limit (boots are slow under TCG)
tcapsa() { timeout 600 "$CAPSA_BIN" "$@"; }
last_reason() { capsa inspect "$1" | jq -r '.runs[-1].termination_reason'; }

@test "create prints the name and leaves the sandbox running" {
  grep -qx shared "$BATS_FILE_TMPDIR/create.out"
  [ "$(status_of shared)" = running ]
  pid=$(sup_pid shared)
  [ "$pid" -gt 0 ]
  grep -q __supervisor "/proc/$pid/cmdline"
  # the control socket is private
  sock=$(capsa inspect shared | jq -r .paths.control_socket)
  [ "$(stat -c %a "$sock")" = 600 ]
}

@test "exec runs commands with the sandbox env and passes exit codes through" {
  run capsa exec shared -- sh -c 'echo "$GREETING from $(hostname)"'
  [ "$status" -eq 0 ]
  [ "$output" = "hello from shared" ]
  run capsa exec shared -- sh -c 'exit 7'
  [ "$status" -eq 7 ]
  run -127 capsa exec shared -- /no/such/program
  [ "$status" -eq 127 ]
  run -126 capsa exec shared -- /opt/noexec.sh
  [ "$status" -eq 126 ]
  run capsa exec shared -- sh -c 'kill -9 $$'
  [ "$status" -eq 137 ]
  run capsa exec shared --timeout 1s -- sleep 30
  [ "$status" -eq 124 ]
  run capsa exec -e A=1 -w /home/app -u app shared -- sh -c 'echo $A $(pwd) $(id -u)'
  [ "$status" -eq 0 ]
  [ "$output" = "1 /home/app 1000" ]
  # stdin is forwarded
  out=$(echo piped | capsa exec shared -- cat)
  [ "$out" = piped ]
}

@test "a directory root (9p cache=loose): a file an exec wrote is on the host when exec returns" {
  run capsa exec shared -- sh -c 'echo written-in-guest > /from-exec; mkdir -p /d1/d2; echo x > /d1/d2/f'
  [ "$status" -eq 0 ]
  [ "$(cat "$ROOTFS/from-exec")" = written-in-guest ]
  [ "$(cat "$ROOTFS/d1/d2/f")" = x ]
  # a new host file appears in the guest
  echo from-host >"$ROOTFS/new-on-host"
  run capsa exec shared -- cat /new-on-host
  [ "$output" = from-host ]
  rm -rf "$ROOTFS/from-exec" "$ROOTFS/d1" "$ROOTFS/new-on-host"
}

@test "several clients exec at once; a client that disconnects has its command killed" {
  capsa exec shared -- sh -c 'sleep 2; echo one' >"$BATS_TEST_TMPDIR/1" &
  capsa exec shared -- sh -c 'sleep 2; echo two' >"$BATS_TEST_TMPDIR/2" &
  wait
  [ "$(cat "$BATS_TEST_TMPDIR/1")" = one ]
  [ "$(cat "$BATS_TEST_TMPDIR/2")" = two ]
  # a client killed mid-command: the guest process dies with its connection
  "$CAPSA_BIN" exec shared -- sh -c 'echo $$ >/tmp/victim.pid; exec sleep 300' &
  cpid=$!
  for i in $(seq 50); do capsa exec shared -- test -s /tmp/victim.pid && break; sleep 0.2; done
  kill -9 "$cpid"
  wait "$cpid" || true
  gone=
  for i in $(seq 50); do
    if ! capsa exec shared -- sh -c 'kill -0 $(cat /tmp/victim.pid)' 2>/dev/null; then gone=1; break; fi
    sleep 0.2
  done
  [ -n "$gone" ]
  [ "$(capsa inspect shared | jq -r .status)" = running ]
}

@test "ping and touch answer; run --name reuses the running sandbox; run -d detaches" {
  run capsa ping shared
  [ "$status" -eq 0 ]
  [[ "$output" == "shared: pong in "* ]]
  run capsa touch shared
  [ "$status" -eq 0 ]
  run capsa run --name shared "$ROOTFS" -- sh -c 'echo via-run; exit 3'
  [ "$status" -eq 3 ]
  [ "$output" = via-run ]
  [ "$(status_of shared)" = running ]
  run capsa run -d --name shared "$ROOTFS" -- sh -c 'echo detached-out >/tmp/detached; echo to-log'
  [ "$status" -eq 0 ]
  [ "$output" = shared ]
  for i in $(seq 50); do capsa exec shared -- test -s /tmp/detached && break; sleep 0.2; done
  run capsa exec shared -- cat /tmp/detached
  [ "$output" = detached-out ]
  [ "$(capsa logs shared --json | jq -r 'select(.d == "to-log\n") | .s')" = stdout ]
  # a detached command that cannot start is reported
  run capsa run -d --name shared "$ROOTFS" -- /no/such/program
  [ "$status" -eq 1 ]
  [[ "$output" == *"could not start"*"/no/such/program"* ]]
}

@test "ls, ps and inspect: tables and JSON" {
  run capsa ls
  [ "$status" -eq 0 ]
  [[ "${lines[0]}" == NAME*IMAGE*STATUS*CREATED ]]
  [[ "$output" == *shared*"$ROOTFS"*running* ]]
  run capsa ls -q
  [ "$output" = shared ]
  capsa ls --format json | jq -e '.[0] | .name == "shared" and .status == "running" and
    .labels.team == "blue" and (.created_at | test("Z$")) and .last_error == null'
  capsa ps --format json | jq -e '.[0] | .name == "shared" and .pid > 0 and .memory_mib == 128
    and .cpus == 1 and .uptime_secs >= 0'
  run capsa ps
  [[ "${lines[0]}" == NAME*IMAGE*STATUS*PID*CPUS*MEM*UPTIME ]]
  capsa inspect shared --format json | jq -e '.name == "shared" and .status == "running" and
    .config.image.Bind != null and .config.resources.memory_mib == 128 and
    (.runs | length) == 1 and .runs[0].ended_at == null and .supervisor_pid > 0'
  run capsa inspect nosuch
  [ "$status" -eq 1 ]
  [[ "$output" == *nosuch* ]]
}

@test "names: 129 bytes are rejected, bad characters too, duplicates need --replace" {
  n129=$(printf 'a%.0s' $(seq 129))
  run capsa create --name "$n129" "$ROOTFS"
  [ "$status" -eq 1 ]
  [[ "$output" == *"129 bytes long, at most 128"* ]]
  run capsa create --name 'bad/name' "$ROOTFS"
  [ "$status" -eq 1 ]
  [[ "$output" == *"not allowed"* ]]
  run capsa create --name shared "$ROOTFS"
  [ "$status" -eq 1 ]
  [[ "$output" == *"already exists"*--replace* ]]
  run capsa create --name x1 --spec <(echo '{"image": {"Oci": {"reference": "alpine"}}, "pull_policy": "Never"}')
  [ "$status" -eq 1 ]
  [[ "$output" == *"not in the local store"* ]]
  run capsa create --name x2 /no/such/dir
  [ "$status" -eq 1 ]
  [ -z "$(status_of x1)$(status_of x2)" ]
}

@test "rm refuses a running sandbox without -f" {
  run capsa rm shared
  [ "$status" -eq 1 ]
  [[ "$output" == *"running"*"--force"* ]]
  [ "$(status_of shared)" = running ]
}

@test "stop and start by label selector; runs record the reason" {
  run capsa stop --label team=blue --label tier=web
  [ "$status" -eq 0 ]
  [ "$output" = shared ]
  [ "$(status_of shared)" = stopped ]
  [ "$(last_reason shared)" = shutdown_requested ]
  # nothing left of the run: no supervisor, no QEMU, no run dir
  [ "$(qemu_procs)" -eq 0 ]
  [ -z "$(ls -A "$CAPSA_HOME/run")" ]
  # a selector that matches nothing is not an error and does nothing
  run capsa start --label team=red
  [ "$status" -eq 0 ]
  [ "$(status_of shared)" = stopped ]
  run tcapsa start --label team=blue
  [ "$status" -eq 0 ]
  [ "$(status_of shared)" = running ]
  run capsa exec shared -- echo back
  [ "$output" = back ]
}

@test "SIGKILL of the supervisor: QEMU dies too, ls shows crashed with an error, start works" {
  pid=$(sup_pid shared)
  kill -9 "$pid"
  for i in $(seq 50); do [ "$(qemu_procs)" -eq 0 ] && break; sleep 0.2; done
  [ "$(qemu_procs)" -eq 0 ]
  [ "$(status_of shared)" = crashed ]
  capsa ls --format json | jq -e '.[0].last_error | test("supervisor")'
  [ "$(last_reason shared)" = internal_error ]
  # the killed supervisor could not write its stop marker: the reaper did
  run capsa logs shared --source system
  [[ "$output" == *"--- sandbox crashed (supervisor_died) ---"* ]]
  run tcapsa start shared
  [ "$status" -eq 0 ]
  [ "$(status_of shared)" = running ]
  [ "$(capsa inspect shared | jq -r .last_error)" = null ]
}

@test "SIGKILL of QEMU: the supervisor records crashed and exits" {
  pid=$(sup_pid shared)
  qpid=$(pgrep -P "$pid" qemu-system)
  kill -9 "$qpid"
  wait_status shared crashed 20
  capsa inspect shared | jq -e '.last_error | test("QEMU.*killed by signal 9")'
  for i in $(seq 50); do [ -d "/proc/$pid" ] || break; sleep 0.2; done
  [ ! -d "/proc/$pid" ]
}

@test "exec on a crashed/stopped sandbox starts it, runs, and stops it again" {
  runs_before=$(capsa inspect shared | jq '.runs | length')
  run tcapsa exec shared -- sh -c 'echo temp; exit 5'
  [ "$status" -eq 5 ]
  [ "$output" = temp ]
  [ "$(status_of shared)" = stopped ]
  [ "$(capsa inspect shared | jq '.runs | length')" -eq $((runs_before + 1)) ]
  # even when the command cannot run
  run -127 tcapsa exec shared -- /no/such/program
  [ "$status" -eq 127 ]
  [ "$(status_of shared)" = stopped ]
  # invalid options fail before any start
  run capsa exec shared --rlimit bogus=1 -- true
  [ "$status" -eq 1 ]
  [ "$(capsa inspect shared | jq '.runs | length')" -eq $((runs_before + 2)) ]
}

@test "create --replace replaces an existing sandbox" {
  old_created=$(capsa inspect shared | jq -r .created_at)
  run tcapsa create --replace --name shared -m 128M --label team=green "$ROOTFS"
  [ "$status" -eq 0 ]
  [ "$(status_of shared)" = running ]
  capsa inspect shared | jq -e --arg old "$old_created" '.created_at != $old and
    .labels.team == "green" and (.runs | length) == 1'
  # --replace-with-timeout 0 implies --replace and kills the old one at once
  old_pid=$(sup_pid shared)
  run tcapsa create --replace-with-timeout 0 --name shared -m 128M --label team=green "$ROOTFS"
  [ "$status" -eq 0 ]
  [ "$(status_of shared)" = running ]
  [ "$(sup_pid shared)" != "$old_pid" ]
  ! kill -0 "$old_pid" 2>/dev/null
  run capsa create --replace-with-timeout soon --name shared "$ROOTFS"
  [ "$status" -eq 1 ]
  [[ "$output" == *"--replace-with-timeout"* ]]
  [ "$(status_of shared)" = running ]
}

@test "stop -f kills at once; rm -f removes a running sandbox with its files" {
  run capsa stop -f shared
  [ "$status" -eq 0 ]
  [ "$(status_of shared)" = stopped ]
  capsa inspect shared | jq -e '.runs[-1].termination_detail | test("forced")'
  run tcapsa start shared
  [ "$status" -eq 0 ]
  run capsa rm -f shared
  [ "$status" -eq 0 ]
  [ -z "$(capsa ls -q)" ]
  [ ! -e "$CAPSA_HOME/sandboxes/shared" ]
  [ -z "$(ls -A "$CAPSA_HOME/run")" ]
  [ "$(qemu_procs)" -eq 0 ]
  run capsa rm shared
  [ "$status" -eq 1 ]
}

@test "--max-duration stops the sandbox when it expires" {
  run tcapsa create --name maxdur -m 128M --max-duration 4s "$ROOTFS"
  [ "$status" -eq 0 ]
  wait_status maxdur stopped 40
  [ "$(last_reason maxdur)" = max_duration_exceeded ]
  capsa rm maxdur
}

@test "--idle-timeout stops an idle sandbox; touch and running commands postpone it" {
  run tcapsa create --name idle -m 128M --idle-timeout 6s "$ROOTFS"
  [ "$status" -eq 0 ]
  sleep 3
  capsa touch idle
  sleep 4
  # 7 s since start, 4 s since the touch: still running
  [ "$(status_of idle)" = running ]
  # ping is not activity; a running command holds it open past the timeout
  capsa ping idle
  run capsa exec idle -- sleep 8
  [ "$status" -eq 0 ]
  [ "$(status_of idle)" = running ]
  wait_status idle stopped 30
  [ "$(last_reason idle)" = idle_timeout ]
  capsa rm idle
}

@test "ephemeral capsa run leaves no row, directory or process" {
  # compare with what exists before (other sandboxes may run when cases are filtered)
  rows=$(capsa ls -q)
  dirs=$(ls -A "$CAPSA_HOME/sandboxes" 2>/dev/null || true)
  runs=$(ls -A "$CAPSA_HOME/run")
  qemus=$(qemu_procs)
  sups=$(sup_pids | wc -l)
  run --separate-stderr tcapsa run --no-tty -m 128M "$ROOTFS" -- echo ephemeral
  [ "$status" -eq 0 ]
  [ "$output" = ephemeral ]
  [ "$(capsa ls -q)" = "$rows" ]
  [ "$(ls -A "$CAPSA_HOME/sandboxes" 2>/dev/null || true)" = "$dirs" ]
  [ "$(ls -A "$CAPSA_HOME/run")" = "$runs" ]
  [ "$(qemu_procs)" -eq "$qemus" ]
  [ "$(sup_pids | wc -l)" -eq "$sups" ]
}

@test "20 sandboxes created concurrently from 4 processes all run, then are removed" {
  long=$(printf 'L%.0s' $(seq 124))
  for p in 1 2 3 4; do
    (
      for i in 1 2 3 4 5; do
        name="c$p-$i"
        [ "$p$i" = 45 ] && name="${long}c4-5" # a 128-byte name works end to end
        timeout 900 "$CAPSA_BIN" create -q --name "$name" -m 128M --label conc=yes "$ROOTFS" ||
          echo "create $name failed" >>"$BATS_TEST_TMPDIR/failures"
      done
    ) &
  done
  wait
  [ ! -e "$BATS_TEST_TMPDIR/failures" ] || { cat "$BATS_TEST_TMPDIR/failures"; false; }
  [ "$(capsa ls --label conc=yes --format json | jq '[.[] | select(.status == "running")] | length')" -eq 20 ]
  [ "$(capsa ls -q --running --label conc=yes | wc -l)" -eq 20 ]
  [ "$(printf '%s' "$(capsa ls -q | grep c4-5)" | wc -c)" -eq 128 ]
  run capsa exec "${long}c4-5" -- echo long-name-ok
  [ "$output" = long-name-ok ]
  run tcapsa rm -f --label conc=yes
  [ "$status" -eq 0 ]
  [ -z "$(capsa ls -q --label conc=yes)" ]
  for n in $(seq 4); do [ ! -e "$CAPSA_HOME/sandboxes/c$n-1" ]; done
  for p in $(sup_pids); do
    if tr '\0' ' ' <"/proc/$p/cmdline" | grep -qE "__supervisor (c[1-4]-|L+c4-5)"; then
      echo "supervisor $p is left" >&2
      false
    fi
  done
}

@test "create rejects bad flag values with a message naming the flag, before anything is stored" {
  run capsa create --name badflags --rlimit bogus=1 "$ROOTFS"
  [ "$status" -eq 1 ]; [[ "$output" == *"unknown resource 'bogus'"* ]]
  run capsa create --name badflags -c 0 "$ROOTFS"
  [ "$status" -eq 1 ]; [[ "$output" == *"--cpus '0'"* ]]
  run capsa create --name badflags --timeout 0 "$ROOTFS"
  [ "$status" -eq 1 ]
  run capsa ls -q
  [[ "$output" != *badflags* ]]
}

@test "stop during the boot abandons it: stopped (not crashed), reason shutdown_requested, no QEMU" {
  q0=$(qemu_procs)
  timeout 600 "$CAPSA_BIN" create --name early -m 128M "$ROOTFS" >"$BATS_TEST_TMPDIR/c.out" 2>&1 &
  cpid=$!
  seen=
  for i in $(seq 500); do
    [ "$(status_of early)" = starting ] && { seen=1; break; }
    sleep 0.02
  done
  [ -n "$seen" ]
  run tcapsa stop early
  [ "$status" -eq 0 ]
  run wait "$cpid"
  [ "$status" -ne 0 ]
  grep -q "stopped while it was booting" "$BATS_TEST_TMPDIR/c.out"
  [ "$(status_of early)" = stopped ]
  [ "$(last_reason early)" = shutdown_requested ]
  [ "$(capsa inspect early | jq -r .last_error)" = null ]
  for i in $(seq 50); do pgrep -f "capsa __supervisor early" >/dev/null || break; sleep 0.2; done
  ! pgrep -f "capsa __supervisor early"
  [ "$(qemu_procs)" -eq "$q0" ]
  run capsa logs early --source system
  [[ "$output" == *"stopped while booting"* ]]
  run tcapsa rm early
  [ "$status" -eq 0 ]
}
