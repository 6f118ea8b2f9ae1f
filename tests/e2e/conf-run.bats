#!/usr/bin/env bats
# conf-run.bats - `capsa create` with YAML config files (--conf and the scoped --*-conf),
# $CAPSA_HOME/config.json defaults, CLI flags on top, fields the runtime cannot honour refused
# by name, and runtime.scripts installed at /.capsa/scripts on every start, against real VMs
# on a busybox root. One sandbox ("cr") is shared; cases run in file order.
load helpers
bats_require_minimum_version 1.5.0

setup_file() {
  capsa_home_setup
  export ROOTFS="$BATS_FILE_TMPDIR/rootfs"
  "$BATS_TEST_DIRNAME/../lib/mkrootfs-busybox" "$ROOTFS"
  export CAPSA_BOOT_TIMEOUT=${CAPSA_BOOT_TIMEOUT:-300}
  export CONF="$BATS_FILE_TMPDIR/sandbox.yaml"
  # config.json: lowest layer (cpus is overridden by the file; shell only comes from here)
  cat >"$CAPSA_HOME/config.json" <<'EOF'
{"sandbox_defaults": {"cpus": 1, "shell": "/bin/ash", "workdir": "/"}}
EOF
  cat >"$CONF" <<EOF
image: $ROOTFS
cpus: 2
memory: 128M
workdir: /tmp
env: {FROM_CONF: "yes", OVERRIDE: file}
labels: {origin: conf}
scripts:
  hello: echo "hello from script \$1"
EOF
  cat >"$BATS_FILE_TMPDIR/scripts.yaml" <<'EOF'
greet: |
  #!/bin/sh
  echo "greetings $*"
EOF
  timeout 600 "$CAPSA_BIN" create --name cr --conf "$CONF" \
    --script-conf "$BATS_FILE_TMPDIR/scripts.yaml" -m 256M -e OVERRIDE=cli \
    --script 'bye=echo bye' >"$BATS_FILE_TMPDIR/create.out" 2>&1 || {
    cat "$BATS_FILE_TMPDIR/create.out" "$CAPSA_HOME"/sandboxes/cr/supervisor.log >&2
    return 1
  }
}

teardown_file() {
  "$CAPSA_BIN" ls -q 2>/dev/null | while read -r n; do
    timeout 60 "$CAPSA_BIN" rm -f "$n" >/dev/null 2>&1 || true
  done
}

tcapsa() { timeout 600 "$CAPSA_BIN" "$@"; }

@test "create --conf: cpus, env, workdir and labels from the file take effect in the guest" {
  grep -qx cr "$BATS_FILE_TMPDIR/create.out"
  run -0 capsa exec cr -- sh -c 'grep -c ^processor /proc/cpuinfo'
  [ "$output" = 2 ] # the file's cpus over config.json's 1
  run -0 capsa exec cr -- sh -c 'echo "$FROM_CONF"; pwd'
  [ "${lines[0]}" = yes ]
  [ "${lines[1]}" = /tmp ] # the file's workdir over config.json's /
  run -0 capsa ls -q --label origin=conf
  [ "$output" = cr ]
  # the stored config is the normalized SandboxSpec
  run -0 capsa inspect cr
  echo "$output" | jq -e '.config.resources == {"cpus": 2, "memory_mib": 256}'
  echo "$output" | jq -e '.config.runtime.scripts | keys == ["bye", "greet", "hello"]'
}

@test "create --conf: CLI flags override the file" {
  run -0 capsa exec cr -- sh -c 'echo "$OVERRIDE"; grep MemTotal /proc/meminfo'
  [ "${lines[0]}" = cli ]
  kb=$(echo "${lines[1]}" | awk '{print $2}')
  # -m 256M over the file's 128M (MemTotal is a little below the configured size)
  [ "$kb" -gt 200000 ]
}

@test "scripts run by name through exec, from every source" {
  run -0 capsa exec cr -- hello world
  [ "$output" = "hello from script world" ]
  run -0 capsa exec cr -- greet a b
  [ "$output" = "greetings a b" ]
  run -0 capsa exec cr -- bye
  [ "$output" = bye ]
  run -0 capsa exec cr -- sh -c 'echo "$PATH"; stat -c %a /.capsa/scripts/hello; head -n1 /.capsa/scripts/bye'
  [[ "${lines[0]}" == /.capsa/scripts:* ]]
  [ "${lines[1]}" = 755 ]
  # a body without #! gets the runtime shell (config.json's) as interpreter
  [ "${lines[2]}" = '#!/bin/ash' ]
}

@test "scripts are installed again on every start" {
  run -0 capsa exec cr -- rm -f /.capsa/scripts/hello
  run -0 tcapsa stop cr
  run -0 tcapsa start cr
  run -0 capsa exec cr -- hello again
  [ "$output" = "hello from script again" ]
}

@test "fields the runtime cannot honour are refused by name, nothing is created" {
  printf 'mounts: ["%s:/data"]\n' "$BATS_FILE_TMPDIR" >"$BATS_FILE_TMPDIR/mounts.yaml"
  run -1 capsa create --name bad1 --conf "$CONF" --fs-conf "$BATS_FILE_TMPDIR/mounts.yaml"
  [[ "$output" == *"mounts:"*"not supported"* ]]
  printf 'API_KEY: {value: x, allow: [example.com]}\n' >"$BATS_FILE_TMPDIR/secret.yaml"
  run -1 capsa create --name bad2 --conf "$CONF" --secret-conf "$BATS_FILE_TMPDIR/secret.yaml"
  [[ "$output" == *"network.secrets:"*"not supported"* ]]
  printf 'rlimits: [{resource: nofile, soft: 100}]\n' >"$BATS_FILE_TMPDIR/rl.yaml"
  run -1 capsa create --name bad3 --conf "$CONF" --resource-conf "$BATS_FILE_TMPDIR/rl.yaml"
  [[ "$output" == *"rlimits:"*"not supported"* ]]
  printf 'cmd: [sleep, "1"]\n' >"$BATS_FILE_TMPDIR/cmd.yaml"
  run -1 capsa create --name bad4 --conf "$CONF" --runtime-conf "$BATS_FILE_TMPDIR/cmd.yaml"
  [[ "$output" == *"runtime.cmd:"* ]]
  run -0 capsa ls -q
  [ "$output" = cr ]
}

@test "config file errors name the file, line and field" {
  printf 'cpus: 999\n' >"$BATS_FILE_TMPDIR/badcpus.yaml"
  run -1 capsa create --name bad5 --conf "$CONF" --resource-conf "$BATS_FILE_TMPDIR/badcpus.yaml"
  [[ "$output" == *"badcpus.yaml:1:"*"cpus:"* ]]
  run -1 capsa create --name bad6 --conf "$BATS_FILE_TMPDIR/missing.yaml"
  [[ "$output" == *missing.yaml* ]]
  run -1 capsa create --name bad7 --script '../x=echo' "$ROOTFS"
  [[ "$output" == *"--script"* ]]
  run -0 capsa ls -q
  [ "$output" = cr ]
}

@test "run --name takes the same config files (and creates from them)" {
  run -0 --separate-stderr timeout 600 "$CAPSA_BIN" run --name rn --conf "$CONF" -e OVERRIDE=run \
    -- sh -c 'echo "$FROM_CONF $OVERRIDE"; hello rn'
  [ "${lines[0]}" = "yes run" ]
  [ "${lines[1]}" = "hello from script rn" ]
  run -0 capsa rm -f rn
}
