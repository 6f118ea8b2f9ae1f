#!/usr/bin/env bats
# archive.bats - `capsa save` / `capsa load`: docker-archive and OCI layout tarballs of images
# pulled from Debian's docker-registry on 127.0.0.1 (built offline by tests/lib/mkimages),
# loaded back and booted as real microVMs without the registry; tampered archives rejected.
load helpers

lib=$BATS_TEST_DIRNAME/../lib

setup_file() {
  registry_setup busybox
  export CAPSA_BOOT_TIMEOUT=180
  "$CAPSA_BIN" pull -q --insecure "$REG/test/busybox"
  CFG=$("$CAPSA_BIN" image inspect "$REG/test/busybox" --format json | jq -r .config_digest)
  export CFG
}

teardown_file() {
  registry_teardown
}

crun() { timeout 300 "$CAPSA_BIN" run --no-tty "$@"; }

cfg_of() { capsa image inspect "$1" --format json | jq -r .config_digest; }

# No load leftovers: no temp dirs, no row for REF.
assert_not_loaded() {
  run capsa image ls -q
  [[ "$output" != *"$1"* ]]
  [ -z "$(ls "$CAPSA_HOME/images/tmp" | grep '^load\.' || true)" ]
}

@test "load/save --help are manual pages; image load/save are aliases" {
  run capsa load --help
  [ "$status" -eq 0 ]
  [[ "$output" == *"Usage: capsa load"* ]]
  run capsa image save --help
  [ "$status" -eq 0 ]
  [[ "$output" == *"--format docker|oci"* ]]
}

@test "save docker, rm, load back: same config digest, runs" {
  local ref="$REG/test/busybox:latest" tar="$BATS_TEST_TMPDIR/bb-docker.tar"
  run capsa save -o "$tar" "$ref"
  [ "$status" -eq 0 ]
  tar -tf "$tar" | grep -qx manifest.json
  [ "$(tar -xOf "$tar" manifest.json | jq -r '.[0].RepoTags[0]')" = "$ref" ]
  run capsa image rm "$ref"
  [ "$status" -eq 0 ]
  assert_not_loaded "$ref"
  run capsa load -i "$tar"
  [ "$status" -eq 0 ]
  [[ "$output" == *"Loaded image: $ref"* ]]
  [ "$(cfg_of "$ref")" = "$CFG" ]
  run crun "$ref" -- echo loaded-docker
  [ "$status" -eq 0 ]
  [[ "$output" == *"loaded-docker"* ]]
}

@test "save oci to stdout, rm, load from stdin: same config digest, runs" {
  local ref="$REG/test/busybox:latest" tar="$BATS_TEST_TMPDIR/bb-oci.tar"
  capsa save --format oci "$ref" >"$tar"
  tar -tf "$tar" | grep -qx oci-layout
  [ "$(tar -xOf "$tar" index.json | jq -r '.manifests[0].annotations["io.containerd.image.name"]')" = "$ref" ]
  run capsa image rm "$ref"
  [ "$status" -eq 0 ]
  run capsa image load <"$tar"
  [ "$status" -eq 0 ]
  [[ "$output" == *"Loaded image: $ref"* ]]
  [ "$(cfg_of "$ref")" = "$CFG" ]
  run crun "$ref" -- echo loaded-oci
  [ "$status" -eq 0 ]
  [[ "$output" == *"loaded-oci"* ]]
}

@test "load --tag names the image; a name with no registry behind it runs" {
  local tar="$BATS_TEST_TMPDIR/bb.tar"
  capsa save -o "$tar" "$REG/test/busybox"
  run capsa load -q -t localhost:1/loaded/bb:v1 -i "$tar"
  [ "$status" -eq 0 ]
  [ -z "$output" ]
  [ "$(cfg_of localhost:1/loaded/bb:v1)" = "$CFG" ]
  run crun localhost:1/loaded/bb:v1 -- echo tagged
  [ "$status" -eq 0 ]
  [[ "$output" == *"tagged"* ]]
}

# flip_layer TAR OUT: copy of TAR with one byte of its largest blob flipped.
flip_layer() {
  local d="$BATS_TEST_TMPDIR/x" big
  rm -rf "$d"; mkdir "$d"
  tar -xf "$1" -C "$d"
  big=$(ls -S "$d"/blobs/sha256/* | head -1)
  python3 - "$big" <<'PY'
import sys
p = sys.argv[1]
b = bytearray(open(p, 'rb').read())
b[len(b) // 2] ^= 0xff
open(p, 'wb').write(b)
PY
  (cd "$d" && tar -cf "$2" *)
}

@test "a tampered archive (layer byte flipped) fails with a digest error, loads nothing" {
  local tar="$BATS_TEST_TMPDIR/ok.tar"
  for fmt in docker oci; do
    capsa save --format $fmt -o "$tar" "$REG/test/busybox"
    flip_layer "$tar" "$BATS_TEST_TMPDIR/bad-$fmt.tar"
    run capsa load -t localhost:1/tampered/$fmt:v1 -i "$BATS_TEST_TMPDIR/bad-$fmt.tar"
    [ "$status" -ne 0 ]
    [[ "$output" == *"digest mismatch"* ]]
    assert_not_loaded "tampered/$fmt"
  done
}

@test "hostile archives: path escape, not an archive, missing blob" {
  local d="$BATS_TEST_TMPDIR/h"
  mkdir -p "$d"
  echo hi >"$d/f"
  tar -cf "$d/esc.tar" -C "$d" --transform 's,^f$,../../escape,' f
  run capsa load -t localhost:1/h/esc:v1 -i "$d/esc.tar"
  [ "$status" -ne 0 ]
  [[ "$output" == *"'..' component"* ]]
  [ ! -e "$CAPSA_HOME/escape" ] && [ ! -e "$CAPSA_HOME/images/escape" ]
  head -c 2000 /dev/urandom >"$d/junk.tar"
  run capsa load -t localhost:1/h/junk:v1 -i "$d/junk.tar"
  [ "$status" -ne 0 ]
  echo '[{"Config":"c.json","RepoTags":["localhost:1/h/m:v1"],"Layers":["nope.tar"]}]' >"$d/manifest.json"
  echo '{}' >"$d/c.json"
  tar -cf "$d/missing.tar" -C "$d" manifest.json c.json
  run capsa load -i "$d/missing.tar"
  [ "$status" -ne 0 ]
  [[ "$output" == *"not in the archive"* ]]
  ln -s ../../../etc/passwd "$d/nope.tar"
  tar -cf "$d/link.tar" -C "$d" manifest.json c.json nope.tar
  run capsa load -i "$d/link.tar"
  [ "$status" -ne 0 ]
  [[ "$output" == *"'..' component"* ]]
  assert_not_loaded localhost:1/h/
}

@test "skopeo oci-archive output loads" {
  command -v skopeo >/dev/null || skip "skopeo not installed"
  local x="$BATS_TEST_TMPDIR/skopeo.tar"
  skopeo copy -q --src-tls-verify=false "docker://$REG/test/busybox:latest" "oci-archive:$x" 2>/dev/null ||
    skopeo copy -q --src-tls-verify=false --override-arch amd64 "docker://$REG/test/busybox:latest" "oci-archive:$x"
  run capsa load -t localhost:1/skopeo/bb:v1 -i "$x"
  [ "$status" -eq 0 ]
  [ "$(cfg_of localhost:1/skopeo/bb:v1)" = "$CFG" ]
}

# legacy_docker TAR DIR: rewrite a capsa docker save as an old `docker save` layout in DIR:
# <hex>.json config, abc/layer.tar, and the manifest naming layers through a symlink.
legacy_docker() {
  local d=$2 cfg layer
  rm -rf "$d"; mkdir -p "$d/x"
  tar -xf "$1" -C "$d/x"
  cfg=$(jq -r '.[0].Config' "$d/x/manifest.json")
  layer=$(jq -r '.[0].Layers[0]' "$d/x/manifest.json")
  mkdir "$d/t" "$d/t/abc" "$d/t/def"
  cp "$d/x/$cfg" "$d/t/$(basename "$cfg").json"
  cp "$d/x/$layer" "$d/t/abc/layer.tar"
  ln -s ../abc/layer.tar "$d/t/def/layer.tar"
  jq -c --arg c "$(basename "$cfg").json" '.[0].Config=$c | .[0].Layers=["def/layer.tar"]' \
    "$d/x/manifest.json" >"$d/t/manifest.json"
}

@test "legacy docker save layout (id/layer.tar, symlinked layer) loads" {
  local d="$BATS_TEST_TMPDIR/legacy"
  capsa save -o "$BATS_TEST_TMPDIR/s.tar" "$REG/test/busybox"
  legacy_docker "$BATS_TEST_TMPDIR/s.tar" "$d"
  (cd "$d/t" && tar -cf ../legacy.tar *)
  run capsa load -t localhost:1/legacy/bb:v1 -i "$d/legacy.tar"
  [ "$status" -eq 0 ]
  [ "$(cfg_of localhost:1/legacy/bb:v1)" = "$CFG" ]
}

@test "a failed load removes the blobs it added (layer tampered where no name says its digest)" {
  local d="$BATS_TEST_TMPDIR/rb" bad
  capsa save -o "$BATS_TEST_TMPDIR/s.tar" "$REG/test/busybox"
  legacy_docker "$BATS_TEST_TMPDIR/s.tar" "$d"
  python3 -c 'import sys; p=sys.argv[1]; b=bytearray(open(p,"rb").read()); b[-100]^=0xff; open(p,"wb").write(b)' "$d/t/abc/layer.tar"
  bad=$(sha256sum "$d/t/abc/layer.tar" | cut -c1-64)
  (cd "$d/t" && tar -cf ../bad.tar *)
  run capsa load -t localhost:1/rollback/bb:v1 -i "$d/bad.tar"
  [ "$status" -ne 0 ]
  [[ "$output" == *"layer 0"* ]]
  [ ! -e "$CAPSA_HOME/images/blobs/sha256/$bad" ]
  assert_not_loaded localhost:1/rollback
}
