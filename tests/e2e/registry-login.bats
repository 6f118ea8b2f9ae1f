#!/usr/bin/env bats
# registry-login.bats - `capsa registry login|logout|ls` against Debian's docker-registry with
# htpasswd Basic auth on 127.0.0.1 (tests/lib/registry), serving tests/lib/mkimages' busybox.
load helpers

lib=$BATS_TEST_DIRNAME/../lib

setup_file() {
  capsa_home_setup
  export REGDIR="$BATS_FILE_TMPDIR/authreg"
  AREG=$("$lib/registry" start "$REGDIR" alice:s3cret)
  export AREG
  MKIMAGES_CREDS=alice:s3cret "$lib/mkimages" "$AREG" busybox-v2s2
}

teardown_file() {
  registry_teardown
}

@test "registry --help names the verbs" {
  run capsa registry --help
  [ "$status" -eq 0 ]
  [[ "$output" == *"registry login HOST"* ]]
  [[ "$output" == *"--password-stdin"* ]]
  run capsa registry frob
  [ "$status" -eq 1 ]
}

@test "pull fails without login, works after login, fails again after logout" {
  export CAPSA_HOME="$BATS_TEST_TMPDIR/home1"
  mkdir -p "$CAPSA_HOME"
  run capsa pull --insecure "$AREG/test/busybox-v2s2"
  [ "$status" -eq 1 ]
  [[ "$output" == *"authentication required"* ]]

  run capsa registry login "$AREG" --username alice --password-stdin --insecure <<<"s3cret"
  [ "$status" -eq 0 ]
  [[ "$output" == *"Login succeeded"* ]]
  [[ "$output" != *"s3cret"* ]]
  [ "$(stat -c %a "$CAPSA_HOME/auth.json")" = 600 ]
  [ "$(jq -r --arg h "$AREG" '.auths[$h].auth' "$CAPSA_HOME/auth.json" | base64 -d)" = alice:s3cret ]
  [ -z "$(ls "$CAPSA_HOME" | grep '\.tmp\.' || true)" ]

  run capsa registry ls
  [ "$status" -eq 0 ]
  [[ "$output" == *"$AREG"*alice* ]]
  [[ "$output" != *"s3cret"* ]]
  [[ "$output" != *"$(printf alice:s3cret | base64)"* ]]
  run capsa registry ls --format json
  [ "$status" -eq 0 ]
  [ "$(echo "$output" | jq -r '.[0].host')" = "$AREG" ]
  [ "$(echo "$output" | jq -r '.[0].username')" = alice ]
  [ "$(echo "$output" | jq -r '.[0] | keys | join(",")')" = host,username ]

  run capsa pull --insecure "$AREG/test/busybox-v2s2"
  [ "$status" -eq 0 ]
  capsa image rm "$AREG/test/busybox-v2s2" >/dev/null

  run capsa registry logout "$AREG"
  [ "$status" -eq 0 ]
  [ "$(stat -c %a "$CAPSA_HOME/auth.json")" = 600 ]
  [ "$(jq -r --arg h "$AREG" '.auths[$h]' "$CAPSA_HOME/auth.json")" = null ]
  run capsa pull --insecure "$AREG/test/busybox-v2s2"
  [ "$status" -eq 1 ]
  [[ "$output" == *"authentication required"* ]]
  run capsa registry logout "$AREG"
  [ "$status" -eq 1 ]
  [[ "$output" == *"not logged in"* ]]
}

@test "login keeps other hosts' entries" {
  export CAPSA_HOME="$BATS_TEST_TMPDIR/home2"
  mkdir -p "$CAPSA_HOME"
  printf '{"auths":{"other.example:5000":{"auth":"%s"}}}' "$(printf bob:pw | base64)" >"$CAPSA_HOME/auth.json"
  chmod 600 "$CAPSA_HOME/auth.json"
  run capsa registry login "$AREG" -u alice --password-stdin --insecure <<<"s3cret"
  [ "$status" -eq 0 ]
  run capsa registry ls --format json
  [ "$(echo "$output" | jq -r 'map(.host + "=" + .username) | sort | join(" ")')" = "$AREG=alice other.example:5000=bob" ]
}

@test "a wrong password is an error at login time and nothing is stored" {
  export CAPSA_HOME="$BATS_TEST_TMPDIR/home3"
  mkdir -p "$CAPSA_HOME"
  run capsa registry login "$AREG" --username alice --password-stdin --insecure <<<"wrong"
  [ "$status" -eq 1 ]
  [[ "$output" == *"wrong username or password"* ]]
  [ ! -e "$CAPSA_HOME/auth.json" ]
  # Without --insecure a plain-http registry is refused.
  run capsa registry login "$AREG" --username alice --password-stdin <<<"s3cret"
  [ "$status" -eq 1 ]
  [[ "$output" == *"--insecure"* ]]
  [ ! -e "$CAPSA_HOME/auth.json" ]
  run capsa registry login "not a host" --username alice --password-stdin <<<"s3cret"
  [ "$status" -eq 1 ]
  [[ "$output" == *"expected"* ]]
}

@test "Docker's config.json is used when capsa has no login; capsa's own login wins" {
  export CAPSA_HOME="$BATS_TEST_TMPDIR/home4"
  mkdir -p "$CAPSA_HOME" "$BATS_TEST_TMPDIR/docker"
  export DOCKER_CONFIG="$BATS_TEST_TMPDIR/docker"
  run capsa pull --insecure "$AREG/test/busybox-v2s2"
  [ "$status" -eq 1 ]
  [[ "$output" == *"authentication required"* ]]
  jq -n --arg h "$AREG" --arg a "$(printf alice:s3cret | base64)" \
    '{auths: {($h): {auth: $a}}}' >"$DOCKER_CONFIG/config.json"
  run capsa pull -q --insecure "$AREG/test/busybox-v2s2"
  [ "$status" -eq 0 ]
  capsa image rm -q "$AREG/test/busybox-v2s2"
  # a stale password in capsa's auth.json is used first (and fails): no silent mixing
  jq -n --arg h "$AREG" --arg a "$(printf alice:wrong | base64)" \
    '{auths: {($h): {auth: $a}}}' >"$CAPSA_HOME/auth.json"
  chmod 600 "$CAPSA_HOME/auth.json"
  run capsa pull -q --insecure "$AREG/test/busybox-v2s2"
  [ "$status" -eq 1 ]
  [[ "$output" == *"alice"* ]]
}
