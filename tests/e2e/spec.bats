#!/usr/bin/env bats
# spec.bats - `capsa spec check` over the example documents in tests/spec: valid ones
# normalize and are stable under re-checking, invalid ones fail with their expected errors.
load helpers
bats_require_minimum_version 1.5.0

SPEC_DIR="$BATS_TEST_DIRNAME/../spec"

setup_file() { capsa_home_setup; }

# type_of FILE: the type is the file name up to the first dot (SandboxSpec.minimal.json).
type_of() { local b; b=$(basename "$1"); echo "${b%%.*}"; }

@test "every valid example checks, exits 0 and prints JSON" {
  local n=0 f t
  for f in "$SPEC_DIR"/valid/*.json; do
    t=$(type_of "$f")
    run capsa spec check --type "$t" "$f"
    if [ "$status" -ne 0 ]; then echo "$f: status $status: $output"; return 1; fi
    echo "$output" | jq -e . >/dev/null || { echo "$f: output is not JSON"; return 1; }
    n=$((n + 1))
  done
  [ "$n" -ge 60 ]
}

@test "normalization is idempotent for every valid example (pretty and compact)" {
  local f t fmt tmp=$BATS_TEST_TMPDIR
  for f in "$SPEC_DIR"/valid/*.json; do
    t=$(type_of "$f")
    for fmt in json compact; do
      capsa spec check -t "$t" -f "$fmt" "$f" >"$tmp/n1"
      capsa spec check -t "$t" -f "$fmt" "$tmp/n1" >"$tmp/n2"
      cmp "$tmp/n1" "$tmp/n2" || { echo "$f ($fmt) is not stable"; diff "$tmp/n1" "$tmp/n2"; return 1; }
    done
  done
}

@test "every invalid example exits 1 and reports each expected error on stderr" {
  local n=0 f t line
  for f in "$SPEC_DIR"/invalid/*.json; do
    t=$(type_of "$f")
    [ -f "${f%.json}.err" ] || { echo "missing ${f%.json}.err"; return 1; }
    run --separate-stderr capsa spec check --type "$t" "$f"
    if [ "$status" -ne 1 ]; then echo "$f: status $status"; return 1; fi
    [ -z "$output" ] || { echo "$f: printed to stdout: $output"; return 1; }
    while IFS= read -r line; do
      [ -n "$line" ] || continue
      if [[ "$stderr" != *"capsa: error: spec: "*"$line"* ]]; then
        echo "$f: expected '$line' in:"; echo "$stderr"; return 1
      fi
    done <"${f%.json}.err"
    n=$((n + 1))
  done
  [ "$n" -ge 60 ]
}

@test "every error line has the capsa: error: spec: PATH: MESSAGE shape" {
  run --separate-stderr capsa spec check "$SPEC_DIR/invalid/SandboxSpec.many-errors.json"
  [ "$status" -eq 1 ]
  local count=0 line
  while IFS= read -r line; do
    [[ "$line" =~ ^capsa:\ error:\ spec:\ [^:]+:\ .+ ]] || { echo "bad line: $line"; return 1; }
    count=$((count + 1))
  done <<<"$stderr"
  [ "$count" -eq 6 ]
}

@test "minimal SandboxSpec gets the documented defaults" {
  run capsa spec check -f compact "$SPEC_DIR/valid/SandboxSpec.minimal.json"
  [ "$status" -eq 0 ]
  [ "$(echo "$output" | jq -c '[.resources.cpus, .resources.memory_mib, .pull_policy, .security_profile,
       .lifecycle.ephemeral, .network.enabled, .image.Oci.root_disk.kind, .image.Oci.root_disk.size_mib,
       .runtime.metrics_sample_interval_ms]')" = '[1,512,"IfMissing","default",false,true,"managed",4096,1000]' ]
  # fields in the seed's order
  [ "$(echo "$output" | jq -r 'keys_unsorted | join(",")')" = \
    "name,image,resources,runtime,env,labels,rlimits,mounts,patches,network,init,pull_policy,security_profile,lifecycle" ]
}

@test "deprecated upper_size_mib becomes root_disk managed size" {
  run capsa spec check -f compact "$SPEC_DIR/valid/SandboxSpec.legacy-upper-size.json"
  [ "$status" -eq 0 ]
  [ "$(echo "$output" | jq -c .image)" = '{"Oci":{"reference":"python","root_disk":{"kind":"managed","size_mib":2048}}}' ]
}

@test "reads standard input with -" {
  run bash -c "echo '{\"name\":\"a\",\"image\":{\"Bind\":\"/r\"}}' | '$CAPSA_BIN' spec check -f compact -"
  [ "$status" -eq 0 ]
  [[ "$output" == '{"name":"a","image":{"Bind":"/r"},"resources":{"cpus":1,"memory_mib":512}'* ]]
}

@test "128-byte name is accepted, 129 bytes rejected" {
  local n128 n129
  n128=$(printf 'a%.0s' $(seq 128)); n129="${n128}b"
  run bash -c "echo '{\"name\":\"$n128\",\"image\":{\"Bind\":\"/r\"}}' | '$CAPSA_BIN' spec check -"
  [ "$status" -eq 0 ]
  run bash -c "echo '{\"name\":\"$n129\",\"image\":{\"Bind\":\"/r\"}}' | '$CAPSA_BIN' spec check -"
  [ "$status" -eq 1 ]
  [[ "$output" == *"name: must be at most 128 bytes (got 129)"* ]]
}

@test "usage errors exit 2 with a pointer to help" {
  run capsa spec check
  [ "$status" -eq 2 ]
  [[ "$output" == *"missing FILE"* ]]
  run capsa spec check --type Bogus "$SPEC_DIR/valid/SandboxSpec.minimal.json"
  [ "$status" -eq 2 ]
  [[ "$output" == *"unknown type 'Bogus'"* ]]
  run capsa spec check --format yaml "$SPEC_DIR/valid/SandboxSpec.minimal.json"
  [ "$status" -eq 2 ]
  run capsa spec frob
  [ "$status" -eq 2 ]
}

@test "unreadable file is an error naming it" {
  run capsa spec check /nonexistent/spec.json
  [ "$status" -eq 1 ]
  [[ "$output" == *"cannot read /nonexistent/spec.json"* ]]
}

@test "spec --help documents the verb and spec types lists every type" {
  run capsa spec check --help
  [ "$status" -eq 0 ]
  [[ "$output" == *"Usage: capsa spec check"* ]]
  [[ "$output" == *"Exit status"* ]]
  run capsa spec types
  [ "$status" -eq 0 ]
  local t
  for t in SandboxSpec VolumeSpec SnapshotSpec NamedVolumeCreate CloudCreateSandboxRequest CloudSandbox \
           CloudSandboxStatus CloudPaginated CloudMessageResponse CloudErrorBody NetworkPolicy DnsConfig \
           TlsConfig SecretsConfig InterfaceOverrides RootDisk; do
    [[ $'\n'"$output"$'\n' == *$'\n'"$t"$'\n'* ]] || { echo "missing $t"; return 1; }
  done
}

@test "every type listed by spec types has a valid and an invalid example" {
  local t
  for t in $(capsa spec types); do
    [ "$t" = JsonValue ] && continue
    compgen -G "$SPEC_DIR/valid/$t.*.json" >/dev/null || { echo "no valid example for $t"; return 1; }
    compgen -G "$SPEC_DIR/invalid/$t.*.json" >/dev/null || { echo "no invalid example for $t"; return 1; }
  done
}
