#!/usr/bin/env bats
# registry-bearer.bats - the Bearer token flow end to end: Debian's docker-registry with
# `auth: token` (tests/lib/registry --token) and tests/lib/tokenserver issuing RS256 JWTs
# (x5c, checked against the registry's rootcertbundle). test/busybox is public (anonymous pull
# tokens), test/app private (alice:s3cret). Every token request is logged by the token server,
# so the tests count them: one per pull, none per blob, at most one retry for a refused token,
# one renewal when a token expires before the blob downloads.
load helpers

lib=$BATS_TEST_DIRNAME/../lib

setup_file() {
  capsa_home_setup
  export TOKDIR="$BATS_FILE_TMPDIR/tok" REGDIR="$BATS_FILE_TMPDIR/reg"
  REALM=$("$lib/tokenserver" start "$TOKDIR" alice:s3cret --public test/busybox)
  BREG=$("$lib/registry" start "$REGDIR" --token "$TOKDIR")
  export REALM BREG
  MKIMAGES_CREDS=alice:s3cret "$lib/mkimages" "$BREG" busybox app
}

teardown_file() {
  "$lib/registry" stop "$REGDIR"
  "$lib/tokenserver" stop "$TOKDIR"
}

setup() {
  # A private CAPSA_HOME per test: nothing cached, no stored login.
  export CAPSA_HOME="$BATS_TEST_TMPDIR/home"
  mkdir -p "$CAPSA_HOME"
  echo 0 >"$TOKDIR/invalid"
  rm -f "$TOKDIR/lifetime"
  wc -l <"$TOKDIR/requests.log" >"$BATS_TEST_TMPDIR/mark"
}

# The token requests logged since setup(), one JSON object per line.
tokens() { tail -n +"$(($(cat "$BATS_TEST_TMPDIR/mark") + 1))" "$TOKDIR/requests.log"; }

@test "the registry really demands tokens from the token server" {
  run curl -sS -o /dev/null -D - "http://$BREG/v2/test/busybox/manifests/latest"
  [[ "$output" == *" 401 "* ]]
  [[ "$output" == *"Bearer realm=\"$REALM\""*"scope=\"repository:test/busybox:pull\""* ]]
  # skopeo pushed with alice's tokens (pull,push granted).
  [ "$(jq -s 'map(select(.account == "alice" and (.granted | index("repository:test/app:pull,push")))) | length' "$TOKDIR/requests.log")" -ge 1 ]
}

@test "anonymous pull of a public repository: one token for every request of the pull" {
  run capsa pull --insecure "$BREG/test/busybox"
  [ "$status" -eq 0 ]
  # index, manifest, config and layer were fetched with a single anonymous token.
  [ "$(tokens | wc -l)" -eq 1 ]
  [ "$(tokens | jq -r '[.account, .scope, (.granted | join(" ")), .status] | join("|")')" = \
    "|repository:test/busybox:pull|repository:test/busybox:pull|200" ]
  run capsa image inspect "$BREG/test/busybox"
  [ "$status" -eq 0 ]
  [[ "$output" == *"Layers:"* ]]
}

@test "a private repository without credentials fails clearly after one token request" {
  run capsa pull --insecure "$BREG/test/app"
  [ "$status" -eq 1 ]
  [[ "$output" == *"registry $BREG: authentication required"* ]]
  [[ "$output" == *"test/app"* ]]
  [[ "$output" == *"capsa registry login $BREG"* ]]
  # The anonymous token grants nothing; capsa does not ask again for the same scope.
  [ "$(tokens | wc -l)" -eq 1 ]
  [ "$(tokens | jq -r '[.account, .scope, (.granted | length)] | join("|")')" = "|repository:test/app:pull|0" ]
  run capsa image inspect "$BREG/test/app"
  [ "$status" -ne 0 ]
}

@test "after registry login the private repository pulls with the user's token" {
  run capsa registry login "$BREG" --username alice --password-stdin --insecure <<<"s3cret"
  [ "$status" -eq 0 ]
  [[ "$output" == *"Login succeeded"* ]]
  [ "$(tokens | jq -r '[.account, .status] | join("|")')" = "alice|200" ]
  [ "$(stat -c %a "$CAPSA_HOME/auth.json")" = 600 ]

  wc -l <"$TOKDIR/requests.log" >"$BATS_TEST_TMPDIR/mark"
  run capsa pull --insecure "$BREG/test/app"
  [ "$status" -eq 0 ]
  # manifest, config and two layers (fetched in parallel): still one token.
  [ "$(tokens | wc -l)" -eq 1 ]
  [ "$(tokens | jq -r '[.account, .scope, (.granted | join(" "))] | join("|")')" = \
    "alice|repository:test/app:pull|repository:test/app:pull" ]
  run capsa image inspect "$BREG/test/app"
  [ "$status" -eq 0 ]
  [ "$(echo "$output" | grep -c '^  sha256:')" -eq 2 ]

  # The stored login also serves the public repository, as alice.
  wc -l <"$TOKDIR/requests.log" >"$BATS_TEST_TMPDIR/mark"
  run capsa pull --insecure "$BREG/test/busybox"
  [ "$status" -eq 0 ]
  [ "$(tokens | jq -r '[.account, .scope] | join("|")')" = "alice|repository:test/busybox:pull" ]
}

@test "a wrong password: login refuses it; a stored one fails the pull clearly, once" {
  run capsa registry login "$BREG" --username alice --password-stdin --insecure <<<"wrong"
  [ "$status" -eq 1 ]
  [[ "$output" == *"wrong username or password"* ]]
  [ ! -e "$CAPSA_HOME/auth.json" ]
  [ "$(tokens | jq -r '[.account, .status] | join("|")')" = "!alice|401" ]

  # A password changed after the login: the token server refuses the stored one.
  printf '{"auths":{"%s":{"auth":"%s"}}}' "$BREG" "$(printf alice:stale | base64)" >"$CAPSA_HOME/auth.json"
  chmod 600 "$CAPSA_HOME/auth.json"
  wc -l <"$TOKDIR/requests.log" >"$BATS_TEST_TMPDIR/mark"
  run capsa pull --insecure "$BREG/test/app"
  [ "$status" -eq 1 ]
  [[ "$output" == *"registry $BREG: token server $REALM refused the credentials for 'alice'"* ]]
  [[ "$output" == *"wrong username or password"* ]]
  [[ "$output" != *"stale"* ]]
  [ "$(tokens | wc -l)" -eq 1 ]
  [ "$(tokens | jq -r '[.account, .status] | join("|")')" = "!alice|401" ]

  # The same through the environment.
  rm "$CAPSA_HOME/auth.json"
  CAPSA_REGISTRY_USERNAME=alice CAPSA_REGISTRY_PASSWORD=nope run capsa pull --insecure "$BREG/test/busybox"
  [ "$status" -eq 1 ]
  [[ "$output" == *"refused the credentials for 'alice'"* ]]
}

@test "an expired token: the registry answers 401 again and capsa fetches one new token" {
  echo 1 >"$TOKDIR/invalid" # the next token is issued already expired
  run capsa pull --insecure "$BREG/test/busybox"
  [ "$status" -eq 0 ]
  [ "$(tokens | jq -r '.invalid' | paste -sd,)" = "true,false" ]
  [ "$(cat "$TOKDIR/invalid")" = 0 ]
  run capsa image inspect "$BREG/test/busybox"
  [ "$status" -eq 0 ]
}

@test "a token the registry always refuses: capsa gives up after one retry, not in a loop" {
  echo 1000 >"$TOKDIR/invalid"
  run timeout 60 "$CAPSA_BIN" pull --insecure "$BREG/test/busybox"
  [ "$status" -eq 1 ]
  [[ "$output" == *"registry $BREG: "*"refused"*"invalid_token"* ]]
  [ "$(tokens | wc -l)" -eq 2 ]
  [ "$(tokens | jq -r '.invalid' | paste -sd,)" = "true,true" ]
  run capsa image inspect "$BREG/test/busybox"
  [ "$status" -ne 0 ]
}

@test "a token that expires between the manifest and the parallel blob downloads is renewed once" {
  # LD_PRELOAD delays capsa's parallel blob phase (its curl_multi_init) by 6 s; tokens live 3 s.
  command -v cc >/dev/null || skip "no C compiler for the delay shim"
  cat >"$BATS_TEST_TMPDIR/slow.c" <<'C'
#define _GNU_SOURCE
#include <dlfcn.h>
#include <unistd.h>
void *curl_multi_init(void)
{
    void *(*real)(void) = (void *(*)(void))dlsym(RTLD_NEXT, "curl_multi_init");
    sleep(6);
    return real();
}
C
  cc -shared -fPIC -o "$BATS_TEST_TMPDIR/slow.so" "$BATS_TEST_TMPDIR/slow.c" -ldl
  echo 3 >"$TOKDIR/lifetime"
  CAPSA_REGISTRY_USERNAME=alice CAPSA_REGISTRY_PASSWORD=s3cret LD_PRELOAD="$BATS_TEST_TMPDIR/slow.so" \
    run capsa pull --insecure "$BREG/test/app"
  rm -f "$TOKDIR/lifetime"
  [ "$status" -eq 0 ]
  # One token for manifest and config; both layer downloads got 401 with it, and one new
  # token served both retries.
  [ "$(tokens | wc -l)" -eq 2 ]
  [ "$(tokens | jq -r '[.account, .scope] | join("|")' | sort -u)" = "alice|repository:test/app:pull" ]
  run capsa image inspect "$BREG/test/app"
  [ "$status" -eq 0 ]
  [ "$(echo "$output" | grep -c '^  sha256:')" -eq 2 ]
}
