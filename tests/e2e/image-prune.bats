#!/usr/bin/env bats
# image-prune.bats - `capsa image prune` and `capsa image rm` matching, against Debian's
# docker-registry on 127.0.0.1 serving tests/lib/mkimages' images: prune keeps what a sandbox
# uses, removes dangling (-a: all unused) images and every unreferenced blob, disk, partial
# download and free lock file, never what another process holds; rm by reference, digest,
# REPO@digest and digest prefix, refused (naming the sandbox) for an image in use.
load helpers
bats_require_minimum_version 1.5.0

lib=$BATS_TEST_DIRNAME/../lib

setup_file() {
  registry_setup busybox busybox-v2s2 layers app diffid
  export IMG="$CAPSA_HOME/images"
  export CAPSA_BOOT_TIMEOUT=${CAPSA_BOOT_TIMEOUT:-300}
}

teardown_file() {
  sandboxes_teardown
  registry_teardown
}

teardown() {
  if [ -n "${HOLDER_PID:-}" ]; then kill "$HOLDER_PID" 2>/dev/null || true; wait "$HOLDER_PID" 2>/dev/null || true; fi
}

pull() { capsa pull -q --insecure "$REG/test/$1"; }
digest_of() { capsa image inspect "$1" --format json | jq -r .manifest_digest; }
store_kb() { du -sk "$IMG" | cut -f1; }
# retag SRC DST: make the registry serve test/SRC:latest as test/DST:latest too
retag() {
  skopeo copy -q --src-tls-verify=false --dest-tls-verify=false \
    "docker://$REG/test/$1:latest" "docker://$REG/test/$2:latest" >/dev/null
}
# hold FILE [-x|-s] [SECS]: flock FILE from another process (one pid: killing it releases
# the lock) until it is killed or SECS pass
hold() {
  ( exec 9>>"$1"; flock "${2:--x}" 9; exec sleep "${3:-300}" ) >/dev/null 2>&1 &
  HOLDER_PID=$!
  for _ in $(seq 100); do flock -n "$1" true 2>/dev/null || return 0; sleep 0.05; done
  false
}
refs() { capsa image ls -q | sort | tr '\n' ' '; }

@test "image prune --help; image --help lists prune and the REF forms" {
  run capsa image prune --help
  [ "$status" -eq 0 ]
  [[ "$output" == *"Usage: capsa image prune"* ]]
  [[ "$output" == *"dangling"* ]]
  run capsa image --help
  [[ "$output" == *"prune [-a]"* ]]
  [[ "$output" == *"digest prefix"* ]]
  run capsa image prune --format yaml
  [ "$status" -ne 0 ]
  [[ "$output" == *"--format 'yaml'"* ]]
}

@test "rm by unique digest prefix, bare and sha256: forms" {
  pull layers
  d=$(digest_of "$REG/test/layers")
  run capsa image rm "${d:7:12}"
  [ "$status" -eq 0 ]
  [ "$output" = "removed $REG/test/layers:latest" ]
  [ ! -e "$IMG/disks/${d:7}" ]
  pull layers
  run capsa image rm "sha256:${d:7:20}"
  [ "$status" -eq 0 ]
  [ "$output" = "removed $REG/test/layers:latest" ]
  [ -z "$(capsa image ls -q)" ]
}

@test "rm by full digest takes every reference to it; by bare 64 hex; by REPO@digest" {
  retag busybox-v2s2 alias
  pull busybox-v2s2
  pull alias
  d=$(digest_of "$REG/test/busybox-v2s2")
  [ "$(digest_of "$REG/test/alias")" = "$d" ]
  run capsa image rm "$d"
  [ "$status" -eq 0 ]
  [[ "$output" == *"removed $REG/test/alias:latest"* ]]
  [[ "$output" == *"removed $REG/test/busybox-v2s2:latest"* ]]
  [ -z "$(capsa image ls -q)" ]
  [ ! -e "$IMG/disks/${d:7}" ]
  pull busybox-v2s2
  run capsa image rm "${d:7}"
  [ "$status" -eq 0 ]
  [ "$output" = "removed $REG/test/busybox-v2s2:latest" ]
  # REPO@digest names that repository's references only
  pull busybox-v2s2
  pull alias
  run capsa image rm "$REG/test/alias@$d"
  [ "$status" -eq 0 ]
  [ "$output" = "removed $REG/test/alias:latest" ]
  [ "$(refs)" = "$REG/test/busybox-v2s2:latest " ]
  [ -e "$IMG/disks/${d:7}/lower.erofs" ] # still used by busybox-v2s2
  capsa image rm -q "$REG/test/busybox-v2s2"
}

@test "rm errors name the reference: not found, short prefix, bad reference" {
  run capsa image rm sha256:000000000000
  [ "$status" -eq 1 ]
  [[ "$output" == *"image sha256:000000000000: not found"* ]]
  run capsa image rm sha256:0123
  [ "$status" -eq 1 ]
  [[ "$output" == *"'sha256:0123': a digest prefix needs at least 12 hex digits"* ]]
  run capsa image rm "$REG/test/nope:v9"
  [ "$status" -eq 1 ]
  [[ "$output" == *"$REG/test/nope:v9: not found"* ]]
  run capsa image rm 'Bad Ref'
  [ "$status" -eq 1 ]
  [[ "$output" == *"Bad Ref"* ]]
  run capsa image inspect 0123456789ab
  [ "$status" -eq 1 ]
  [[ "$output" == *"0123456789ab: not found"* ]]
}

@test "a sandbox created from busybox pins its digest (booted once, then stopped)" {
  run timeout 600 "$CAPSA_BIN" create --insecure --name pinned -m 256M "$REG/test/busybox"
  [ "$status" -eq 0 ] || { echo "$output"; cat "$CAPSA_HOME/sandboxes/pinned/supervisor.log" >&2 || true; false; }
  timeout 120 "$CAPSA_BIN" stop pinned >/dev/null || true
  d=$(digest_of "$REG/test/busybox")
  [ "$(capsa inspect pinned --format json | jq -r '.config.image.Oci.reference')" = "$REG/test/busybox@$d" ]
}

@test "rm of the image the sandbox uses fails naming it, by reference, digest and prefix" {
  d=$(digest_of "$REG/test/busybox")
  for key in "$REG/test/busybox" "$d" "${d:7:12}" "$REG/test/busybox@$d"; do
    run capsa image rm "$key"
    [ "$status" -eq 1 ]
    [[ "$output" == *"in use by sandbox pinned"* ]]
    [[ "$output" == *"-f"* ]]
  done
  [ -e "$IMG/disks/${d:7}/lower.erofs" ]
  [[ "$(refs)" == *"$REG/test/busybox:latest"* ]]
}

@test "prune -a keeps the image the sandbox uses, removes every other one; the store shrinks" {
  pull busybox-v2s2
  pull layers
  pull app
  bb=$(digest_of "$REG/test/busybox")
  app=$(digest_of "$REG/test/app")
  lay=$(digest_of "$REG/test/layers")
  before=$(store_kb)
  run capsa image prune -a -f --format json
  [ "$status" -eq 0 ]
  echo "$output" | jq -e '.images_removed | map(.reference) | sort ==
    ["'"$REG"'/test/app:latest", "'"$REG"'/test/busybox-v2s2:latest", "'"$REG"'/test/layers:latest"]'
  echo "$output" | jq -e '.manifests_removed == 3 and .files_removed_by_kind.disk == 3'
  echo "$output" | jq -e '.bytes_reclaimed > 1000000'
  echo "$output" | jq -e --arg p "disks/${app:7}" '.files_removed | map(.path) | index($p) != null'
  [ "$(refs)" = "$REG/test/busybox:latest " ]
  [ "$(ls "$IMG/disks")" = "${bb:7}" ]
  [ ! -e "$IMG/disks/${lay:7}" ]
  # the kept image is whole: manifest, config and layer blobs present, disk in place
  run capsa image inspect "$REG/test/busybox" --format json
  for b in "$bb" $(echo "$output" | jq -r '.config_digest, .layers[].digest'); do
    [ -f "$IMG/blobs/sha256/${b:7}" ]
  done
  [ -f "$IMG/disks/${bb:7}/lower.erofs" ]
  # every blob left is one the kept image uses
  [ "$(ls "$IMG/blobs/sha256" | wc -l)" -eq 3 ]
  after=$(store_kb)
  echo "store: $before KiB -> $after KiB" >&3
  [ "$after" -lt "$before" ]
  # nothing left to do
  run capsa image prune -a -f --format json
  echo "$output" | jq -e '.images_removed == [] and .files_removed == [] and .bytes_reclaimed == 0'
}

@test "default prune: only dangling (digest-only) images go, plus the files of a re-pointed tag" {
  pull app
  app=$(digest_of "$REG/test/app")
  capsa image rm -q "$REG/test/app"
  pull "app@$app" # digest-only reference: dangling
  pull layers     # tagged, unused: kept without -a
  retag busybox-v2s2 moving
  pull moving
  old=$(digest_of "$REG/test/moving")
  retag layers moving
  capsa pull -q -f --insecure "$REG/test/moving" # the tag now names another manifest
  [ -e "$IMG/disks/${old:7}" ]                  # the old disk is left behind, unreferenced
  run capsa image prune -f
  [ "$status" -eq 0 ]
  [[ "$output" == *"Deleted image: $REG/test/app@$app ($app)"* ]]
  [[ "$output" == *"Deleted disk    disks/${old:7}"* ]]
  [[ "$output" == *"Total reclaimed space:"* ]]
  [ "$(refs)" = "$REG/test/busybox:latest $REG/test/layers:latest $REG/test/moving:latest " ]
  [ ! -e "$IMG/disks/${app:7}" ]
  [ ! -e "$IMG/disks/${old:7}" ]
  [ ! -e "$IMG/blobs/sha256/${old:7}" ]
  capsa image rm -q "$REG/test/layers" "$REG/test/moving"
}

@test "a tag moved away from the digest a sandbox pinned: prune -a keeps that image's files" {
  retag busybox-v2s2 moving2
  pull moving2
  old=$(digest_of "$REG/test/moving2")
  run timeout 600 "$CAPSA_BIN" create --insecure --name pin2 -m 128M "$REG/test/moving2"
  [ "$status" -eq 0 ] || { echo "$output"; false; }
  timeout 120 "$CAPSA_BIN" stop pin2
  retag layers moving2
  capsa pull -q -f --insecure "$REG/test/moving2" # the tag now names another manifest
  run capsa image prune -a -f
  [ "$status" -eq 0 ]
  [ -f "$IMG/disks/${old:7}/lower.erofs" ]
  [ -f "$IMG/blobs/sha256/${old:7}" ]
  run timeout 120 "$CAPSA_BIN" rm -f pin2
  [ "$status" -eq 0 ]
  run capsa image prune -a -f
  [ "$status" -eq 0 ]
  [ ! -e "$IMG/disks/${old:7}" ]
  [ ! -e "$IMG/blobs/sha256/${old:7}" ]
}

@test "a failed pull's blobs, a partial download, stale temp and lock files are collected" {
  # a pull that fails after downloading: its verified blobs stay without a row
  run capsa pull --insecure "$REG/test/diffid"
  [ "$status" -eq 1 ]
  [[ "$output" == *"diff_id mismatch"* ]]
  m=$(curl -fsS -H 'Accept: application/vnd.oci.image.manifest.v1+json' \
    "http://$REG/v2/test/diffid/manifests/latest")
  left=$(echo "$m" | jq -r '.config.digest, .layers[].digest' | cut -c8-)
  for h in $left; do [ -f "$IMG/blobs/sha256/$h" ]; done
  # an interrupted download, a temp tree of a dead process, a stale lock, a stray blob
  junk=$(head -c 200000 /dev/urandom | tee "$BATS_TEST_TMPDIR/junk" | sha256sum | cut -c1-64)
  cp "$BATS_TEST_TMPDIR/junk" "$IMG/blobs/sha256/$junk"
  part=$(printf 'a%.0s' $(seq 64))
  head -c 100000 /dev/urandom >"$IMG/tmp/$part.part"
  mkdir -p "$IMG/tmp/$part.tree.999999/etc" && echo x >"$IMG/tmp/$part.tree.999999/etc/f"
  stale=$(printf 'b%.0s' $(seq 64))
  : >"$IMG/locks/$stale.lock"
  : >"$IMG/blobs/sha256/notes.txt" # not a name capsa creates: left alone
  before=$(store_kb)
  run capsa image prune -f --format json
  [ "$status" -eq 0 ]
  echo "$output" | jq -e '.images_removed == [] and .kept == []'
  for h in $left "$junk"; do
    [ ! -e "$IMG/blobs/sha256/$h" ]
    echo "$output" | jq -e --arg p "blobs/sha256/$h" '.files_removed | map(.path) | index($p) != null'
  done
  echo "$output" | jq -e --arg p "tmp/$part.part" '.files_removed[] | select(.path == $p) | .kind == "partial"'
  echo "$output" | jq -e --arg p "tmp/$part.tree.999999" '.files_removed[] | select(.path == $p) | .kind == "tmp"'
  echo "$output" | jq -e --arg p "locks/$stale.lock" '.files_removed[] | select(.path == $p) | .kind == "lock"'
  [ ! -e "$IMG/tmp/$part.part" ]
  [ ! -e "$IMG/tmp/$part.tree.999999" ]
  [ ! -e "$IMG/locks/$stale.lock" ]
  [ -e "$IMG/locks/gc.lock" ]
  [ -e "$IMG/blobs/sha256/notes.txt" ]
  rm "$IMG/blobs/sha256/notes.txt"
  [ "$(store_kb)" -lt "$before" ]
  # the sandbox's image survived all of it
  [[ "$(refs)" == *"$REG/test/busybox:latest"* ]]
  [ -f "$(capsa image inspect "$REG/test/busybox" --format json | jq -r .disk)" ]
}

@test "a lock another process holds is kept, with the blob and partial download it guards" {
  held=$(head -c 50000 /dev/urandom | tee "$BATS_TEST_TMPDIR/held" | sha256sum | cut -c1-64)
  cp "$BATS_TEST_TMPDIR/held" "$IMG/blobs/sha256/$held"
  head -c 1000 "$BATS_TEST_TMPDIR/held" >"$IMG/tmp/$held.part"
  hold "$IMG/locks/$held.lock"
  run capsa image prune -f --format json
  [ "$status" -eq 0 ]
  [ -e "$IMG/blobs/sha256/$held" ]
  [ -e "$IMG/tmp/$held.part" ]
  [ -e "$IMG/locks/$held.lock" ]
  echo "$output" | jq -e --arg h "$held" '[.kept[].path] | sort ==
    (["blobs/sha256/" + $h, "locks/" + $h + ".lock", "tmp/" + $h + ".part"] | sort)'
  run capsa image prune -f
  [[ "$output" == *"Kept (in use by another process): locks/$held.lock"* ]]
  kill "$HOLDER_PID"
  wait "$HOLDER_PID" 2>/dev/null || true
  HOLDER_PID=
  run capsa image prune -f --format json
  echo "$output" | jq -e '.kept == []'
  [ ! -e "$IMG/blobs/sha256/$held" ]
  [ ! -e "$IMG/tmp/$held.part" ]
  [ ! -e "$IMG/locks/$held.lock" ]
}

@test "prune waits for a pull in progress (the gc lock held shared)" {
  hold "$IMG/locks/gc.lock" -s 2
  start=$(date +%s%N)
  run --separate-stderr capsa image prune -f
  [ "$status" -eq 0 ]
  ms=$(( ($(date +%s%N) - start) / 1000000 ))
  [ "$ms" -ge 1000 ]
  [[ "$stderr" == *"waiting for the pulls and loads in progress"* ]]
}

@test "create holds the gc lock (shared) from resolving its image until its row exists" {
  hold "$IMG/locks/gc.lock" -x 300 # what a running prune holds
  timeout 600 "$CAPSA_BIN" create --insecure --name gcwait -m 128M "$REG/test/busybox" \
    >"$BATS_TEST_TMPDIR/c.out" 2>&1 &
  cpid=$!
  sleep 2
  kill -0 "$cpid" # still waiting for the lock
  ! capsa ls -q | grep -qx gcwait
  kill "$HOLDER_PID"
  wait "$HOLDER_PID" 2>/dev/null || true
  HOLDER_PID=
  wait "$cpid" || { cat "$BATS_TEST_TMPDIR/c.out"; false; }
  capsa ls -q | grep -qx gcwait
  run timeout 120 "$CAPSA_BIN" rm -f gcwait
  [ "$status" -eq 0 ]
}

@test "pulls racing prunes: every pull that succeeds leaves a whole image" {
  for i in 1 2 3; do
    capsa pull -q --insecure "$REG/test/layers" >/dev/null &
    p=$!
    capsa image prune -f -q
    wait "$p"
    d=$(digest_of "$REG/test/layers")
    [ -f "$IMG/disks/${d:7}/lower.erofs" ]
    run capsa image inspect "$REG/test/layers" --format json
    for b in $(echo "$output" | jq -r '.config_digest, .layers[].digest'); do
      [ -f "$IMG/blobs/sha256/${b:7}" ]
    done
    capsa image rm -q "$REG/test/layers"
    capsa image prune -f -q
  done
}

@test "an interrupted prune (rows gone, files left) is finished by the next prune" {
  pull app
  app=$(digest_of "$REG/test/app")
  # what a prune killed right after its commit leaves: no rows, the files still there
  sqlite3 "$CAPSA_HOME/capsa.db" "PRAGMA foreign_keys = ON; DELETE FROM images WHERE manifest_digest = '$app';
    DELETE FROM manifests WHERE digest = '$app';"
  mv "$IMG/disks/${app:7}" "$IMG/tmp/${app:7}.prune.999999" # a half-removed disk
  run capsa image prune -f --format json
  [ "$status" -eq 0 ]
  echo "$output" | jq -e '.layers_removed >= 1'
  [ ! -e "$IMG/tmp/${app:7}.prune.999999" ]
  [ ! -e "$IMG/blobs/sha256/${app:7}" ]
  [ "$(refs)" = "$REG/test/busybox:latest " ]
}

@test "rm -f removes an image a sandbox uses; prune -a then finds nothing it may keep" {
  d=$(digest_of "$REG/test/busybox")
  run capsa image rm -f "${d:7:12}"
  [ "$status" -eq 0 ]
  [ "$output" = "removed $REG/test/busybox:latest" ]
  [ ! -e "$IMG/disks/${d:7}" ]
  [ -z "$(capsa image ls -q)" ]
  capsa ls -q | grep -qx pinned
  run capsa image prune -a -f --format json
  [ "$status" -eq 0 ]
  [ -z "$(ls "$IMG/blobs/sha256")" ]
  [ -z "$(ls "$IMG/disks")" ]
}
