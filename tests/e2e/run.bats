#!/usr/bin/env bats
# run.bats - `capsa run` boots real microVMs (QEMU, the capsa kernel, capsa-agent)
# on a busybox root directory and checks what a user of `docker run` would.
load helpers

setup_file() {
  capsa_home_setup
  export ROOTFS="$BATS_FILE_TMPDIR/rootfs"
  "$BATS_TEST_DIRNAME/../lib/mkrootfs-busybox" "$ROOTFS"
  # Decide the accelerator once for the whole file (the probe result is cached).
  export CAPSA_BOOT_TIMEOUT=180
}

crun() { timeout 300 "$CAPSA_BIN" run --no-tty "$ROOTFS" -- "$@"; }

@test "run prints the command's output and exits 0; a debug log is a timeline" {
  run env CAPSA_LOG=debug "$CAPSA_BIN" run --no-tty "$ROOTFS" -- echo hello from the guest
  [ "$status" -eq 0 ]
  [[ "$output" == *"hello from the guest"* ]]
  # host lines carry ms since start; the agent reports its boot marks (guest clock)
  [[ "$output" =~ debug:\ \+[0-9]+\.[0-9]\ ms:\ agent\ said\ hello ]]
  [[ "$output" =~ guest\ timeline.*\ agent\ [0-9.]+\ port\ [0-9.]+\ boot_msg\ [0-9.]+\ ready\ [0-9.]+ ]]
  # ... and the first command's steps, up to its exit
  [[ "$output" =~ guest\ timeline.*\ ready\ [0-9.]+\ exec_req\ [0-9.]+\ user_env\ [0-9.]+\ exec_started\ [0-9.]+\ exec_done\ [0-9.]+\ exited\ [0-9.]+ ]]
  [[ "$output" == *"exec: first output"* ]]
}

@test "exit code 7 is passed through" {
  run crun sh -c 'exit 7'
  [ "$status" -eq 7 ]
}

@test "a missing command exits 127 with a message" {
  run crun /no/such/program
  [ "$status" -eq 127 ]
  [[ "$output" == *"/no/such/program"* ]]
}

@test "a non-executable file exits 126" {
  run crun /opt/noexec.sh
  [ "$status" -eq 126 ]
}

@test "a command killed by a signal exits 128+N" {
  run crun sh -c 'kill -9 $$'
  [ "$status" -eq 137 ]
  run crun sh -c 'kill -TERM $$'
  [ "$status" -eq 143 ]
}

@test "stdout and stderr stay separate" {
  crun sh -c 'echo to-out; echo to-err >&2' >"$BATS_TEST_TMPDIR/out" 2>"$BATS_TEST_TMPDIR/err"
  grep -qx to-out "$BATS_TEST_TMPDIR/out"
  grep -qx to-err "$BATS_TEST_TMPDIR/err"
  ! grep -q to-err "$BATS_TEST_TMPDIR/out"
  ! grep -q to-out "$BATS_TEST_TMPDIR/err"
}

@test "1 MiB of piped stdin arrives intact and EOF closes it" {
  head -c 1048576 /dev/urandom >"$BATS_TEST_TMPDIR/in"
  want=$(sha256sum <"$BATS_TEST_TMPDIR/in" | cut -d' ' -f1)
  got=$(crun sha256sum <"$BATS_TEST_TMPDIR/in" | cut -d' ' -f1)
  [ "$got" = "$want" ]
  run crun wc -c <"$BATS_TEST_TMPDIR/in"
  [ "$status" -eq 0 ]
  [[ "$output" == *1048576* ]]
}

@test "env, workdir and user apply" {
  run timeout 300 "$CAPSA_BIN" run --no-tty -e FOO=bar -e EMPTY= -w /tmp -u app "$ROOTFS" -- \
    sh -c 'echo "$FOO|$EMPTY|$(pwd)|$(id -u):$(id -g)|$(id -G)|$HOME"'
  [ "$status" -eq 0 ]
  [[ "$output" == *"bar||/tmp|1000:1000|1000 2000|/home/app"* ]]
}

@test "numeric uid:gid user and rlimits apply" {
  run timeout 300 "$CAPSA_BIN" run --no-tty -u 1234:4321 --rlimit nofile=123:456 "$ROOTFS" -- \
    sh -c 'echo "$(id -u):$(id -g) $(ulimit -n) $(ulimit -Hn)"'
  [ "$status" -eq 0 ]
  [[ "$output" == *"1234:4321 123 456"* ]]
}

@test "an unknown user fails clearly" {
  run timeout 300 "$CAPSA_BIN" run --no-tty -u nosuchuser "$ROOTFS" -- true
  [ "$status" -ne 0 ]
  [[ "$output" == *"nosuchuser"* ]]
}

@test "--timeout kills a long command" {
  start=$(date +%s)
  run timeout 300 "$CAPSA_BIN" run --no-tty --timeout 2s "$ROOTFS" -- sleep 600
  [ "$status" -eq 124 ]
  [[ "$output" == *"timed out"* ]]
  [ $(( $(date +%s) - start )) -lt 290 ]
}

@test "writes in the guest land in the root directory (9p, read-write)" {
  run crun sh -c 'echo persisted > /work/note.txt && mkdir -p /work/a/b && echo ok'
  [ "$status" -eq 0 ]
  [ "$(cat "$ROOTFS/work/note.txt")" = persisted ]
  [ -d "$ROOTFS/work/a/b" ]
}

@test "a PTY session: tty, window size and terminal output" {
  run timeout 300 script -qec "stty rows 33 cols 101; $CAPSA_BIN run -t $ROOTFS -- sh -c 'tty; stty size; exit 3'" /dev/null
  [[ "$output" == *"/dev/pts/"* ]]
  [[ "$output" == *"33 101"* ]]
  [ "$status" -eq 3 ]
}

@test "bad flags are rejected before anything boots" {
  run capsa run --memory 12X "$ROOTFS" -- true
  [ "$status" -eq 1 ]; [[ "$output" == *"size '12X'"* ]]
  run capsa run --rlimit bogus=1 "$ROOTFS" -- true
  [ "$status" -eq 1 ]; [[ "$output" == *"unknown resource 'bogus'"* ]]
  run capsa run --rlimit nofile=9:3 "$ROOTFS" -- true
  [ "$status" -eq 1 ]; [[ "$output" == *"above hard limit"* ]]
  run capsa run --timeout soon "$ROOTFS" -- true
  [ "$status" -eq 1 ]; [[ "$output" == *"duration 'soon'"* ]]
  run capsa run "$ROOTFS"
  [ "$status" -eq 1 ]; [[ "$output" == *"no command given"* ]]
  run capsa run "$BATS_TEST_TMPDIR/missing" -- true
  [ "$status" -eq 1 ]; [[ "$output" == *"not a directory"* ]]
  run capsa run --accel warp "$ROOTFS" -- true
  [ "$status" -eq 1 ]; [[ "$output" == *"warp"* ]]
}

@test "nothing is left behind: no run dir, no QEMU process" {
  crun true
  [ -z "$(ls -A "$CAPSA_HOME/run" 2>/dev/null)" ]
  ! pgrep -f "qemu-system.*$CAPSA_HOME" >/dev/null
}

@test "run --help documents the flags" {
  run capsa run --help
  [ "$status" -eq 0 ]
  [[ "$output" == *"--timeout DUR"* ]]
  [[ "$output" == *"Exit status"* ]]
}

@test "fs round trip through the agent in a real VM (mkdir, write 3 MiB, read, stat, rename, list, remove)" {
  run timeout 300 "$CAPSA_BUILD/tests/tools/vmtool" "$ROOTFS" fs-roundtrip
  echo "$output"
  [ "$status" -eq 0 ]
  [[ "$output" == *"fs ok"* ]]
}

@test "many execs and pings in one booted VM" {
  run timeout 300 "$CAPSA_BUILD/tests/tools/vmtool" "$ROOTFS" exec-bench 20
  echo "$output"
  [ "$status" -eq 0 ]
  [[ "$output" == *"exec n=20"* ]]
}

@test "cpus and memory reach the guest" {
  run timeout 300 "$CAPSA_BIN" run --no-tty -c 2 -m 300M "$ROOTFS" -- \
    sh -c 'echo "cpus=$(nproc) mem_kb=$(awk "/MemTotal/ {print \$2}" /proc/meminfo)"; echo nets $(ls /sys/class/net)'
  [ "$status" -eq 0 ]
  [[ "$output" == *"cpus=2 "* ]]
  # the kernel has no tunnel drivers that add interfaces of their own (sit0): only loopback
  [[ "$output" == *"nets lo"* ]]
  [[ "$output" != *"nets lo "* ]]
  kb=$(echo "$output" | sed -n 's/.*mem_kb=\([0-9]*\).*/\1/p')
  [ "$kb" -gt 250000 ] && [ "$kb" -le 307200 ]
}

@test "--rootfs DIR -- CMD: the command after -- is never taken as the root" {
  run timeout 300 "$CAPSA_BIN" run --no-tty --rootfs "$ROOTFS" -- echo via-rootfs-flag
  [ "$status" -eq 0 ]
  [[ "$output" == *"via-rootfs-flag"* ]]
}

@test "scripts/qemu-tb-count counts what TCG translates, per guest kernel symbol" {
  out="$BATS_TEST_TMPDIR/tb.txt"
  run env TB_COUNT_OUT="$out" CAPSA_QEMU="$BATS_TEST_DIRNAME/../../scripts/qemu-tb-count" \
    timeout 600 "$CAPSA_BIN" run --no-tty --accel tcg "$ROOTFS" -- echo counted
  [ "$status" -eq 0 ]
  [[ "$output" == *"counted"* ]]
  total=$(awk '$2 == "TOTAL" {print $1}' "$out")
  [ "${total:-0}" -gt 10000 ]
  # a directory root is mounted over 9p: its code was translated, and its first use is
  # recorded in order after the kernel's start
  grep -q ' v9fs_mount$' "$out"
  [ "$(awk '$2 == "v9fs_mount" {print $1}' "$out.seq")" -gt "$(awk '$2 == "start_kernel" {print $1}' "$out.seq")" ]
}
