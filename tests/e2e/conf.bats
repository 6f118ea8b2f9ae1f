#!/usr/bin/env bats
# conf.bats - `capsa spec from-yaml` over the YAML examples in tests/conf: valid files give the
# normalized SandboxSpec their .jq assertion expects, invalid files fail with every expected
# FILE:LINE:COL error; scoped files, precedence, substitution and config.json defaults.
load helpers
bats_require_minimum_version 1.5.0

CONF_DIR="$BATS_TEST_DIRNAME/../conf"

setup_file() { capsa_home_setup; }
setup() { rm -f "$CAPSA_HOME/config.json"; }

@test "every valid example loads, exits 0 and satisfies its .jq assertion" {
  local n=0 f
  export CONF_E2E_TOKEN=e2e-token
  for f in "$CONF_DIR"/valid/*.yaml; do
    run --separate-stderr capsa spec from-yaml --conf "$f" --name t
    if [ "$status" -ne 0 ]; then echo "$f: status $status: $stderr"; return 1; fi
    echo "$output" | jq -e -f "${f%.yaml}.jq" >/dev/null || { echo "$f: assertion failed"; echo "$output"; return 1; }
    n=$((n + 1))
  done
  [ "$n" -ge 4 ]
}

@test "the output is a normalized SandboxSpec: capsa spec check prints it unchanged" {
  export CONF_E2E_TOKEN=e2e-token
  local tmp=$BATS_TEST_TMPDIR
  capsa spec from-yaml --conf "$CONF_DIR/valid/full.yaml" --name t >"$tmp/a.json"
  capsa spec check "$tmp/a.json" >"$tmp/b.json"
  cmp "$tmp/a.json" "$tmp/b.json"
  capsa spec from-yaml --conf "$CONF_DIR/valid/full.yaml" --name t --format compact >"$tmp/c.json"
  [ "$(wc -l <"$tmp/c.json")" -eq 1 ]
}

@test "every invalid example exits 1 and reports each expected error on stderr" {
  local n=0 f line
  for f in "$CONF_DIR"/invalid/*.yaml; do
    [ -f "${f%.yaml}.err" ] || { echo "missing ${f%.yaml}.err"; return 1; }
    run --separate-stderr capsa spec from-yaml --conf "$f" --name t
    if [ "$status" -ne 1 ]; then echo "$f: status $status"; return 1; fi
    [ -z "$output" ] || { echo "$f: printed to stdout: $output"; return 1; }
    while IFS= read -r line; do
      [ -n "$line" ] || continue
      if [[ "$stderr" != *"capsa: error: conf: "*"$line"* ]]; then
        echo "$f: expected '$line' in:"; echo "$stderr"; return 1
      fi
    done <"${f%.yaml}.err"
    n=$((n + 1))
  done
  [ "$n" -ge 20 ]
}

@test "errors have the FILE:LINE:COL: PATH: MESSAGE shape and all are listed" {
  run --separate-stderr capsa spec from-yaml --conf "$CONF_DIR/invalid/many-errors.yaml"
  [ "$status" -eq 1 ]
  local count=0 line
  while IFS= read -r line; do
    [[ "$line" =~ ^capsa:\ error:\ conf:\ [^:]+many-errors\.yaml:[0-9]+:[0-9]+:\ [^:]+:\ .+ ]] || { echo "bad line: $line"; return 1; }
    count=$((count + 1))
  done <<<"$stderr"
  [ "$count" -eq 5 ]
}

@test "scoped files: each flag takes its unwrapped shape" {
  local s=$CONF_DIR/scoped
  export CAPSA_E2E_NPM_SOURCE=unused-at-load
  run --separate-stderr capsa spec from-yaml --conf "$s/base.yaml" --net-conf "$s/net.yaml" \
    --resource-conf "$s/resources.yaml" --runtime-conf "$s/runtime.yaml" --fs-conf "$s/fs.yaml" \
    --secret-conf "$s/secrets.yaml" --script-conf "$s/scripts.yaml" --name scoped -f compact
  [ "$status" -eq 0 ] || { echo "$stderr"; return 1; }
  echo "$output" | jq -e '
    .resources == {"cpus": 3, "memory_mib": 2048}
    and .lifecycle.max_duration_secs == 3600 and .lifecycle.idle_timeout_secs == 300
    and .rlimits == [{"resource": "Nproc", "soft": 512, "hard": 1024}]
    and .runtime.workdir == "/work" and .runtime.user == "1000:1000" and .runtime.cmd == ["make", "test"]
    and .security_profile == "restricted" and .init.cmd == "/sbin/init"
    and ([.env[] | .key] == ["A", "B", "CI"])
    and (.mounts | length) == 1 and .mounts[0].guest == "/data" and .mounts[0].options.readonly
    and (.mounts[0].host | endswith("tests/conf/scoped/shared"))
    and (.patches[0].CopyFile.src | endswith("tests/conf/scoped/shared/file.txt"))
    and ([.network.ports[] | "\(.host_port)/\(.protocol)"] == ["8080/tcp", "5353/udp"])
    and .network.max_connections == 64
    and (.network.policy.rules | map(.destination.domain) | index("example.com")) != null
    and .network.secrets.secrets[1].source == {"kind": "env", "var": "CAPSA_E2E_NPM_SOURCE"}
    and .network.secrets.secrets[0].allowed_hosts[1] == {"wildcard": "*.githubusercontent.com"}
    and .network.tls.enabled and .network.dns.rebind_protection
    and .runtime.scripts.build == "#!/bin/ash\nmake -j2"
    and (.runtime.scripts.py | startswith("#!/usr/bin/env python3\n"))' >/dev/null
}

@test "a root-shape field in a scoped file is an unknown field there" {
  run --separate-stderr capsa spec from-yaml --conf "$CONF_DIR/valid/minimal.yaml" \
    --resource-conf "$CONF_DIR/scoped/runtime.yaml"
  [ "$status" -eq 1 ]
  [[ "$stderr" == *"runtime.yaml:2:1: workdir: unknown field 'workdir' in a --resource-conf file (expected one of: cpus, memory, max_duration, idle_timeout, rlimits)"* ]]
}

@test "precedence: files left to right, scalars replace, maps merge, lists replace" {
  local s=$CONF_DIR/scoped
  run capsa spec from-yaml --conf "$s/base.yaml" --conf "$s/override.yaml" -f compact
  [ "$status" -eq 0 ]
  echo "$output" | jq -e '
    .name == "sandbox" and .resources.cpus == 4 and .resources.memory_mib == 512
    and .env == [{"key":"A","value":"1"},{"key":"B","value":"override"},{"key":"C","value":"3"}]
    and .labels == {"owner": "ops", "tier": "base"}
    and .mounts == [.mounts[0]] and .mounts[0].type == "Tmpfs"
    and .network.policy.rules[0] == {"direction":"egress","destination":{"domain":"ads.example.com"},"protocols":[],"ports":[],"action":"deny"}
    and .network.policy.rules[1].destination == {"domain": "example.com"}' >/dev/null
  # reversed order: base wins
  run capsa spec from-yaml --conf "$s/override.yaml" --conf "$s/base.yaml" -f compact
  [ "$status" -eq 0 ]
  [ "$(echo "$output" | jq -c '[.resources.cpus, .mounts[0].type, (.env[] | select(.key == "B") | .value)]')" = '[2,"Bind","2"]' ]
}

@test "config.json sandbox_defaults sit below the files; --name is applied last" {
  cat >"$CAPSA_HOME/config.json" <<'EOF'
{"sandbox_defaults": {"cpus": 6, "memory_mib": 1536, "shell": "/bin/bash", "workdir": "/home/app"}}
EOF
  run capsa spec from-yaml --conf "$CONF_DIR/valid/minimal.yaml" --name web -f compact
  [ "$status" -eq 0 ]
  [ "$(echo "$output" | jq -c '[.name, .resources.cpus, .resources.memory_mib, .runtime.shell, .runtime.workdir]')" = \
    '["web",6,1536,"/bin/bash","/home/app"]' ]
  run capsa spec from-yaml --conf "$CONF_DIR/scoped/base.yaml" -f compact
  [ "$(echo "$output" | jq -c '[.resources.cpus, .resources.memory_mib]')" = '[2,512]' ]
}

@test "config.json: unknown and unsupported fields are rejected" {
  echo '{"sandbox_defaults": {"cpus": 2, "thp": "never"}}' >"$CAPSA_HOME/config.json"
  run --separate-stderr capsa spec from-yaml --conf "$CONF_DIR/valid/minimal.yaml"
  [ "$status" -eq 1 ]
  [[ "$stderr" == *"config.json: sandbox_defaults.thp: unknown field (capsa accepts: cpus, memory_mib"* ]]
  echo '{"profiles": {}}' >"$CAPSA_HOME/config.json"
  run --separate-stderr capsa spec from-yaml --conf "$CONF_DIR/valid/minimal.yaml"
  [ "$status" -eq 1 ]
  [[ "$stderr" == *"config.json: profiles: unknown field"* ]]
  echo '{"log_level": "info", "registries": {"hosts": {"127.0.0.1:5000": {"insecure": true}}}}' >"$CAPSA_HOME/config.json"
  run capsa spec from-yaml --conf "$CONF_DIR/valid/minimal.yaml"
  [ "$status" -eq 0 ]
}

@test "\${NAME} substitution reads the environment at load time" {
  local f=$BATS_TEST_TMPDIR/subst.yaml
  printf 'image: "${E2E_IMAGE}"\ncpus: ${E2E_CPUS}\n' >"$f"
  E2E_IMAGE=alpine:3.19 E2E_CPUS=3 run capsa spec from-yaml --conf "$f" -f compact
  [ "$status" -eq 0 ]
  [ "$(echo "$output" | jq -c '[.image.Oci.reference, .resources.cpus]')" = '["alpine:3.19",3]' ]
  run --separate-stderr capsa spec from-yaml --conf "$f"
  [ "$status" -eq 1 ]
  [[ "$stderr" == *"subst.yaml:1:8: image: environment variable E2E_IMAGE is not set"* ]]
}

@test "usage errors exit 2; a missing file is an error with its name" {
  run capsa spec from-yaml --bogus x
  [ "$status" -eq 2 ]
  run capsa spec from-yaml --conf
  [ "$status" -eq 2 ]
  run capsa spec from-yaml --conf "$CONF_DIR/valid/minimal.yaml" --format yaml
  [ "$status" -eq 2 ]
  run --separate-stderr capsa spec from-yaml --conf /nonexistent/c.yaml
  [ "$status" -eq 1 ]
  [[ "$stderr" == *"/nonexistent/c.yaml:1:1: (root): "* ]]
}
