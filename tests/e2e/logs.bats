#!/usr/bin/env bats
# logs.bats - `capsa logs` and `capsa metrics` against a real VM (QEMU, the capsa kernel,
# capsa-agent, busybox root): exec.log sources, filters, --follow across rotations, stopped
# sandboxes, system markers, metrics samples. One sandbox ("lg") is shared; cases run in order.
load helpers
bats_require_minimum_version 1.5.0

setup_file() {
  capsa_home_setup
  export ROOTFS="$BATS_FILE_TMPDIR/rootfs"
  "$BATS_TEST_DIRNAME/../lib/mkrootfs-busybox" "$ROOTFS"
  export CAPSA_BOOT_TIMEOUT=${CAPSA_BOOT_TIMEOUT:-300}
  # small rotation so the rotation case stays fast (the supervisor inherits it)
  export CAPSA_LOG_ROTATE_BYTES=65536
  timeout 600 "$CAPSA_BIN" create --name lg -m 128M "$ROOTFS" >"$BATS_FILE_TMPDIR/create.out" 2>&1 || {
    cat "$BATS_FILE_TMPDIR/create.out" "$CAPSA_HOME"/sandboxes/lg/supervisor.log >&2
    return 1
  }
  # the primary exec session of this lifetime is the one that is captured
  timeout 120 "$CAPSA_BIN" exec lg -- sh -c 'echo out1; echo err1 >&2; echo out2' \
    >"$BATS_FILE_TMPDIR/exec.out" 2>&1
}

teardown_file() {
  timeout 60 "$CAPSA_BIN" rm -f lg >/dev/null 2>&1 || true
}

tcapsa() { timeout 600 "$CAPSA_BIN" "$@"; }

# wait_log PATTERN [ARGS...]: until `capsa logs lg ARGS` has a line matching PATTERN (20 s)
wait_log() {
  local pat=$1 i
  shift
  for ((i = 0; i < 100; i++)); do
    capsa logs lg "$@" | grep -q -- "$pat" && return 0
    sleep 0.2
  done
  echo "no line matching '$pat' in capsa logs lg $*:" >&2
  capsa logs lg "$@" >&2
  return 1
}

@test "primary exec output is captured with stdout and stderr kept apart" {
  run capsa logs lg
  [ "$status" -eq 0 ]
  [ "${lines[0]}" = out1 ]
  [[ "$output" == *err1* ]]
  [[ "$output" == *out2* ]]
  run capsa logs lg --json
  [ "$status" -eq 0 ]
  [ "$(echo "$output" | jq -r 'select(.d == "out1\n") | .s')" = stdout ]
  [ "$(echo "$output" | jq -r 'select(.d == "err1\n") | .s')" = stderr ]
  # one session id, present on every exec line
  [ "$(echo "$output" | jq -r 'select(.s != "system") | .id' | sort -u | wc -l)" -eq 1 ]
  [ "$(echo "$output" | jq -r 'select(.s != "system") | .id')" != null ]
}

@test "only the first exec session of a lifetime is captured" {
  run tcapsa exec lg -- echo second-session
  [ "$status" -eq 0 ]
  [ "$output" = second-session ]
  run capsa logs lg --source all
  [[ "$output" != *second-session* ]]
}

@test "run -d output is captured" {
  run tcapsa run -d --name lg "$ROOTFS" -- sh -c 'echo det-out; echo det-err >&2'
  [ "$status" -eq 0 ]
  wait_log det-err
  run capsa logs lg --json
  [ "$(echo "$output" | jq -r 'select(.d == "det-out\n") | .s')" = stdout ]
  [ "$(echo "$output" | jq -r 'select(.d == "det-err\n") | .s')" = stderr ]
}

@test "--tail N keeps the last N entries" {
  run capsa logs lg --tail 1 --source stdout
  [ "$status" -eq 0 ]
  [ "$output" = det-out ]
  run capsa logs lg --tail 2 --source stdout,stderr
  [ "${#lines[@]}" -eq 2 ]
  [ "${lines[1]}" = det-err ]
  run capsa logs lg --tail 0
  [ "$status" -eq 0 ]
  [ -z "$output" ]
  run capsa logs lg --tail x
  [ "$status" -eq 1 ]
  [[ "$output" == *"--tail 'x'"* ]]
}

@test "--source selects sources and rejects unknown ones" {
  run capsa logs lg --source stderr
  [ "$status" -eq 0 ]
  [ "${lines[0]}" = err1 ]
  [[ "$output" != *out1* ]]
  run capsa logs lg --source system
  [[ "$output" == *"--- sandbox started ---"* ]]
  [[ "$output" != *out1* ]]
  [[ "$output" == *"supervisor: "* ]]
  # default = stdout,stderr,output: no system lines
  run capsa logs lg
  [[ "$output" != *"sandbox started"* ]]
  [ "$(capsa logs lg --source all | wc -l)" -gt "$(capsa logs lg | wc -l)" ]
  run capsa logs lg --source stdout,bogus
  [ "$status" -eq 1 ]
  [[ "$output" == *"unknown source 'bogus'"* ]]
}

@test "--since and --until filter by time; bad times are rejected" {
  run capsa logs lg --since 1d
  [ "$(echo "$output" | head -1)" = out1 ]
  run capsa logs lg --until 1d
  [ "$status" -eq 0 ]
  [ -z "$output" ]
  run capsa logs lg --since 2099-01-01T00:00:00Z
  [ -z "$output" ]
  # since the time of det-out: exactly det-out and det-err (and anything later)
  local t
  t=$(capsa logs lg --json | jq -r 'select(.d == "det-out\n") | .t')
  run capsa logs lg --since "$t" --source stdout,stderr
  [ "${lines[0]}" = det-out ]
  [[ "$output" != *out1* ]]
  run capsa logs lg --until "$t" --source stdout,stderr
  [[ "$output" == *out1* ]]
  [[ "$output" != *det-out* ]]
  run capsa logs lg --since yesterday
  [ "$status" -eq 1 ]
  [[ "$output" == *"--since"*"yesterday"* ]]
  run capsa logs lg --until 2026-13-01
  [ "$status" -eq 1 ]
}

@test "--json prints raw JSON lines, --timestamps prefixes RFC 3339 times" {
  run capsa logs lg --json --source all
  [ "$status" -eq 0 ]
  echo "$output" | jq -e -s 'length > 3 and all(.[]; (.t | test("^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9:]{8}\\.[0-9]{3}Z$")) and (.s | IN("stdout","stderr","output","system")) and (.d | type == "string"))'
  run capsa logs lg --timestamps --tail 1
  [[ "$output" =~ ^20[0-9]{2}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\.[0-9]{3}Z\ det-err$ ]]
}

@test "logs of an unknown sandbox and a bad name fail clearly" {
  run capsa logs nosuch
  [ "$status" -eq 1 ]
  [[ "$output" == *"no sandbox named 'nosuch'"* ]]
  run capsa logs
  [ "$status" -eq 1 ]
  run capsa logs --help
  [ "$status" -eq 0 ]
  [[ "$output" == *"--follow"* ]]
}

@test "--follow prints a line written later and exits when killed" {
  local out="$BATS_TEST_TMPDIR/follow.out" pid i
  # the binary itself, not the capsa() function: $! must be its pid
  "$CAPSA_BIN" logs lg -f >"$out" 2>&1 &
  pid=$!
  sleep 0.5
  tcapsa run -d --name lg "$ROOTFS" -- sh -c 'sleep 0.5; echo followed-line'
  for ((i = 0; i < 100; i++)); do
    grep -q followed-line "$out" && break
    sleep 0.2
  done
  kill "$pid"
  wait "$pid" || true
  grep -q followed-line "$out"
  grep -q out1 "$out"
  ! kill -0 "$pid" 2>/dev/null
}

@test "metrics: JSON with the reference keys and sane values" {
  local i m1 m2
  for ((i = 0; i < 50; i++)); do
    m1=$(capsa metrics lg --format json)
    [ "$(echo "$m1" | jq '.[0].memory_bytes')" -gt 0 ] && break
    sleep 0.2
  done
  echo "$m1" | jq -e '.[0] | keys == (["name","state","cpus","timestamp","cpu_percent","vcpu_time_ns","memory_bytes","memory_available_bytes","memory_host_resident_bytes","memory_limit_bytes","disk_read_bytes","disk_write_bytes","net_rx_bytes","net_tx_bytes","upper_used_bytes","upper_free_bytes","upper_host_allocated_bytes","uptime_secs"] | sort)'
  echo "$m1" | jq -e '.[0] | .name == "lg" and .state == "running" and .cpus == 1 and .cpu_percent >= 0 and .vcpu_time_ns > 0 and .memory_bytes > 0 and .memory_available_bytes > 0 and .memory_bytes + .memory_available_bytes <= .memory_limit_bytes and .memory_host_resident_bytes > 0 and .memory_limit_bytes == 134217728 and (.timestamp | type == "string")'
  sleep 2.5
  m2=$(capsa metrics lg --format json)
  [ "$(echo "$m2" | jq '.[0].uptime_secs')" -gt "$(echo "$m1" | jq '.[0].uptime_secs')" ]
  [ "$(echo "$m2" | jq '.[0].vcpu_time_ns')" -ge "$(echo "$m1" | jq '.[0].vcpu_time_ns')" ]
  run capsa metrics
  [ "$status" -eq 0 ]
  [[ "${lines[0]}" == NAME*STATE*CPU%* ]]
  [[ "${lines[1]}" == lg*running* ]]
  run capsa metrics nosuch
  [ "$status" -eq 1 ]
  [[ "$output" == *"no sandbox named 'nosuch'"* ]]
}

@test "a stopped sandbox: logs still readable, stop marker and console in system, metrics exited" {
  run tcapsa stop lg
  [ "$status" -eq 0 ]
  run capsa logs lg
  [ "$status" -eq 0 ]
  [ "${lines[0]}" = out1 ]
  run capsa logs lg --source system
  [[ "$output" == *"--- sandbox started ---"* ]]
  [[ "$output" == *"--- sandbox stopped (shutdown_requested) ---"* ]]
  [[ "$output" == *"console: "* ]]
  run capsa metrics lg --format json
  [ "$status" -eq 0 ]
  echo "$output" | jq -e '.[0].state == "exited" and .[0].timestamp == null'
  run capsa metrics --format json
  [ "$output" = "[]" ]
  run capsa metrics -a --format json
  echo "$output" | jq -e 'length == 1 and .[0].name == "lg"'
}

@test "exec.log rotates at CAPSA_LOG_ROTATE_BYTES keeping 3 files; --follow reads across rotations" {
  local d="$CAPSA_HOME/sandboxes/lg" out="$BATS_TEST_TMPDIR/follow.out" pid i f
  run tcapsa start lg
  [ "$status" -eq 0 ]
  "$CAPSA_BIN" logs lg -f --source stdout >"$out" 2>&1 &
  pid=$!
  sleep 0.5
  tcapsa run -d --name lg "$ROOTFS" -- sh -c \
    'i=0; while [ $i -lt 3000 ]; do [ $((i % 300)) -eq 0 ] && sleep 0.5; echo "rot $i xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"; i=$((i+1)); done'
  wait_log "rot 2999 " --source stdout --tail 1
  for ((i = 0; i < 50; i++)); do
    grep -q "rot 2999 " "$out" && break
    sleep 0.2
  done
  kill "$pid"
  wait "$pid" || true
  for f in exec.log exec.log.1 exec.log.2 exec.log.3; do
    [ -f "$d/$f" ]
    [ "$(stat -c %s "$d/$f")" -le 65536 ]
  done
  [ ! -e "$d/exec.log.4" ]
  # every line of every file is a valid entry
  cat "$d"/exec.log.3 "$d"/exec.log.2 "$d"/exec.log.1 "$d"/exec.log | jq -e -s 'length > 0' >/dev/null
  # the follower saw every line once, in order, although files rotated under it (the
  # writer pauses every ~30 KB: a follower polls every 200 ms and can only recover files
  # that were not already rotated out of the 3 kept while it slept)
  [ "$(grep -c '^rot ' "$out")" -eq 3000 ]
  [ "$(grep '^rot ' "$out" | awk '{print $2}' | sort -n -c && echo sorted)" = sorted ]
  run capsa logs lg --tail 1 --source stdout
  [[ "$output" == "rot 2999 "* ]]
}

@test "each lifetime captures its own primary session; a PTY session is the output source" {
  run tcapsa exec lg -t -- sh -c 'echo tty-line'
  [ "$status" -eq 0 ]
  run tcapsa exec lg -t -- sh -c 'echo not-primary'
  run capsa logs lg --json --source output
  [ "$status" -eq 0 ]
  [[ "$output" == *'"s":"output","d":"tty-line\r\n"'* ]]
  [[ "$output" != *not-primary* ]]
  run capsa logs lg --tail 1 --source stdout,stderr
  [[ "$output" == "rot 2999 "* ]]
}
