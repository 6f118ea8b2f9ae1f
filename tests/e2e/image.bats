#!/usr/bin/env bats
# image.bats - `capsa pull` / `capsa image` against Debian's docker-registry on 127.0.0.1,
# serving images tests/lib/mkimages builds offline; hostile registries are local listeners.
load helpers

lib=$BATS_TEST_DIRNAME/../lib

setup_file() {
  registry_setup
  export STORAGE="$REGDIR/storage/docker/registry/v2/blobs/sha256"
}

teardown_file() {
  registry_teardown
}

teardown() {
  if [ -n "${LISTENER_PID:-}" ]; then kill "$LISTENER_PID" 2>/dev/null || true; wait "$LISTENER_PID" 2>/dev/null || true; fi
}

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# layer_of NAME [INDEX]: hex digest of an image's layer as the registry serves it.
layer_of() {
  curl -fsS -H 'Accept: application/vnd.oci.image.manifest.v1+json' \
    "http://$REG/v2/test/$1/manifests/latest" | jq -r ".layers[${2:-0}].digest" | cut -c8-
}

disk_dir_of() { # REF -> the image's disk directory
  capsa image inspect "$1" --format json | jq -r .disk | xargs dirname
}

# Nothing half-written: no disks, no partial or build leftovers, no row for REF.
assert_clean_failure() {
  local ref=$1
  run capsa image ls -q
  [[ "$output" != *"$ref"* ]]
  [ -z "$(ls "$CAPSA_HOME/images/tmp" | grep -E '\.(tree|build|put)\.' || true)" ]
}

@test "pull --help is a manual page" {
  run capsa pull --help
  [ "$status" -eq 0 ]
  [[ "$output" == *"Usage: capsa pull"* ]]
  [[ "$output" == *"--insecure"* ]]
  [[ "$output" == *"--ca-certs"* ]]
  run capsa image --help
  [ "$status" -eq 0 ]
  [[ "$output" == *"inspect REF"* ]]
}

@test "pull busybox: index narrowed to linux/amd64, erofs disk and config built" {
  run capsa pull --insecure "$REG/test/busybox"
  [ "$status" -eq 0 ]
  [[ "$output" == *"$REG/test/busybox:latest sha256:"* ]]
  [[ "$output" == *"diff_id verified"* ]]
  run capsa image inspect "$REG/test/busybox" --format json
  [ "$status" -eq 0 ]
  [ "$(echo "$output" | jq -r .layers_count)" = 1 ]
  [ "$(echo "$output" | jq -r '.config.architecture')" = amd64 ]
  disk=$(echo "$output" | jq -r .disk)
  [ -f "$disk" ]
  dump.erofs -s "$disk" | grep -qi "Filesystem magic number"
  cfg=$(dirname "$disk")/config.json
  [ "$(jq -r '.config.Cmd[0]' "$cfg")" = sh ]
  [ "$(jq -r '.config.Env[0]' "$cfg")" = "PATH=/usr/sbin:/usr/bin:/sbin:/bin" ]
  ex="$BATS_TEST_TMPDIR/ex"
  fsck.erofs --extract="$ex" "$disk" >/dev/null
  [ -x "$ex/bin/busybox" ]
  [ ! -e "$ex/ARM64" ] # the arm64 decoy was not chosen
}

@test "pull twice: the second is a cache hit with no network" {
  capsa pull -q --insecure "$REG/test/busybox"
  # A registry address that hangs would fail: the cache answers without asking.
  run capsa pull --insecure "$REG/test/busybox"
  [ "$status" -eq 0 ]
  [[ "$output" == *"(cached)"* ]]
  [[ "$output" == *"already present"* ]]
  [[ "$output" != *"resolving"* ]]
}

@test "pull -q prints nothing; -f re-resolves and rebuilds" {
  run capsa pull -q -f --insecure "$REG/test/busybox"
  [ "$status" -eq 0 ]
  [ -z "$output" ]
  run capsa pull -f --insecure "$REG/test/busybox"
  [ "$status" -eq 0 ]
  [[ "$output" == *"resolving"* ]]
  [[ "$output" != *"(cached)"* ]]
}

@test "pull a Docker schema 2 image; layers are shared by digest" {
  run capsa pull --insecure "$REG/test/busybox-v2s2"
  [ "$status" -eq 0 ]
  run capsa image inspect "$REG/test/busybox-v2s2" --format json
  [ "$(echo "$output" | jq -r .media_type)" = application/vnd.docker.distribution.manifest.v2+json ]
  # Same layer digest as the OCI busybox: stored once.
  l1=$(capsa image inspect "$REG/test/busybox" --format json | jq -r '.layers[0].digest')
  l2=$(echo "$output" | jq -r '.layers[0].digest')
  [ "$l1" = "$l2" ]
  [ -f "$CAPSA_HOME/images/blobs/sha256/${l1#sha256:}" ]
}

@test "multi-layer image: whiteouts, opaque dir, hardlinks, symlinks, devices, xattrs, owners" {
  CAPSA_IMAGE_KEEP_ROOTFS=1 run capsa pull --insecure "$REG/test/layers"
  [ "$status" -eq 0 ]
  r="$(disk_dir_of "$REG/test/layers")/rootfs"
  [ "$(cat "$r/data/keep")" = v2 ]                 # upper layer wins
  [ ! -e "$r/data/gone" ]    # .wh.gone
  [ ! -e "$r/data/gonedir" ] # .wh.gonedir (a directory)
  [ ! -e "$r/data/.wh.gone" ]
  [ ! -e "$r/data/dir/a" ] # whiteout in the 3rd (plain tar) layer
  [ -f "$r/data/dir/b" ]
  [ -f "$r/opq/new" ] # opaque dir: only this layer's entries remain
  [ ! -e "$r/opq/old1" ]
  [ ! -e "$r/opq/sub" ]
  [ ! -e "$r/opq/.wh..wh..opq" ]
  [ "$(stat -c %a "$r/opq")" = 750 ]
  [ "$(stat -c %i "$r/data/hl1")" = "$(stat -c %i "$r/data/hl2")" ]
  [ "$(stat -c %h "$r/data/hl1")" = 2 ]
  [ "$(readlink "$r/data/link")" = keep ]
  [ "$(readlink "$r/data/abslink")" = /etc/hostname ]
  [ "$(stat -c '%F %t:%T %a' "$r/dev/capsa-null")" = "character special file 1:3 666" ]
  [ -p "$r/data/fifo" ]
  [ "$(python3 -c 'import os,sys; print(os.getxattr(sys.argv[1], "user.capsa").decode())' "$r/data/xattr")" = hello ]
  [ "$(stat -c %a "$r/data/suid")" = 4755 ]
  [ "$(stat -c %u:%g:%a "$r/data/owned")" = 1000:2000:640 ]
  [ "$(stat -c %u:%g "$r/home/app")" = 1000:1000 ]
  # The erofs disk holds the same tree.
  ex="$BATS_TEST_TMPDIR/ex"
  fsck.erofs --extract="$ex" "$(disk_dir_of "$REG/test/layers")/lower.erofs" >/dev/null
  [ "$(cat "$ex/data/keep")" = v2 ]
  [ ! -e "$ex/data/gone" ]
  [ ! -e "$ex/opq/old1" ]
  [ -f "$ex/opq/new" ]
  disk="$(disk_dir_of "$REG/test/layers")/lower.erofs"
  [ "$(dump.erofs --path=/data/hl1 "$disk" | grep -o 'NID: [0-9]*')" = "$(dump.erofs --path=/data/hl2 "$disk" | grep -o 'NID: [0-9]*')" ]
  dump.erofs --path=/data/hl1 "$disk" | grep -q 'Links: 2'
  dump.erofs --path=/data/xattr "$disk" | grep -q 'Xattr size: [1-9]'
  cfg="$(disk_dir_of "$REG/test/layers")/config.json"
  [ "$(jq -r .config.StopSignal "$cfg")" = SIGINT ]
  [ "$(jq -c .config.Cmd "$cfg")" = '["cat","/data/keep"]' ]
}

@test "image ls lists pulled images, as a table and as JSON" {
  capsa pull -q --insecure "$REG/test/busybox"
  run capsa image ls
  [ "$status" -eq 0 ]
  [[ "$output" == *REFERENCE*DIGEST*SIZE* ]]
  [[ "$output" == *"$REG/test/busybox:latest"* ]]
  run capsa image ls --format json
  [ "$status" -eq 0 ]
  echo "$output" | jq -e --arg r "$REG/test/busybox:latest" 'map(select(.reference == $r)) | length == 1'
}

@test "digest mismatch (corrupted blob in the registry): clear error, nothing half-written" {
  l=$(layer_of corrupt)
  printf 'X' | dd of="$STORAGE/${l:0:2}/$l/data" bs=1 seek=100 conv=notrunc 2>/dev/null
  run capsa pull --insecure "$REG/test/corrupt"
  [ "$status" -eq 1 ]
  [[ "$output" == *"blob sha256:$l: digest mismatch"* ]]
  [ ! -e "$CAPSA_HOME/images/blobs/sha256/$l" ]
  [ ! -e "$CAPSA_HOME/images/tmp/$l.part" ]
  assert_clean_failure test/corrupt
}

@test "truncated blob: clear error, nothing half-written" {
  l=$(layer_of truncated)
  truncate -s 50 "$STORAGE/${l:0:2}/$l/data"
  run capsa pull --insecure "$REG/test/truncated"
  [ "$status" -eq 1 ]
  [[ "$output" == *"truncated: registry sent 50 of"* ]]
  [ ! -e "$CAPSA_HOME/images/blobs/sha256/$l" ]
  [ ! -e "$CAPSA_HOME/images/tmp/$l.part" ]
  assert_clean_failure test/truncated
}

@test "a layer that escapes with '..' is refused; nothing written outside the store" {
  run capsa pull --insecure "$REG/test/badtar"
  [ "$status" -eq 1 ]
  [[ "$output" == *"'../escaped': '..' component escapes the root"* ]]
  [ -z "$(find "$CAPSA_HOME" "$BATS_FILE_TMPDIR" -name escaped)" ]
  assert_clean_failure test/badtar
  # Every disk directory present is complete (no half-built one).
  [ -z "$(find "$CAPSA_HOME/images/disks" -mindepth 1 -maxdepth 1 -type d '!' -exec test -f '{}/lower.erofs' ';' -print)" ]
}

@test "diff_id mismatch between layer and config: clear error" {
  run capsa pull --insecure "$REG/test/diffid"
  [ "$status" -eq 1 ]
  [[ "$output" == *"diff_id mismatch"* ]]
  assert_clean_failure test/diffid
}

@test "an interrupted download resumes with a Range request" {
  export CAPSA_HOME="$BATS_TEST_TMPDIR/home2"
  l=$(curl -fsS -H 'Accept: application/vnd.docker.distribution.manifest.v2+json' \
    "http://$REG/v2/test/busybox-v2s2/manifests/latest" | jq -r '.layers[0].digest' | cut -c8-)
  mkdir -p "$CAPSA_HOME/images/tmp"
  head -c 300000 "$STORAGE/${l:0:2}/$l/data" >"$CAPSA_HOME/images/tmp/$l.part"
  run capsa pull --insecure "$REG/test/busybox-v2s2"
  [ "$status" -eq 0 ]
  [[ "$output" == *"sha256:$l: resuming at 300000"* ]]
  [[ "$output" == *"sha256:$l: verified"* ]]
  [ ! -e "$CAPSA_HOME/images/tmp/$l.part" ]
}

@test "concurrent pulls of the same image download each blob once" {
  export CAPSA_HOME="$BATS_TEST_TMPDIR/home3"
  mkdir -p "$CAPSA_HOME"
  capsa pull --insecure "$REG/test/layers" >"$BATS_TEST_TMPDIR/a" 2>&1 &
  p1=$!
  capsa pull --insecure "$REG/test/layers" >"$BATS_TEST_TMPDIR/b" 2>&1 &
  p2=$!
  wait $p1
  wait $p2
  for l in 0 1 2 3; do
    d=$(layer_of layers $l)
    [ "$(cat "$BATS_TEST_TMPDIR/a" "$BATS_TEST_TMPDIR/b" | grep -c "sha256:$d: downloading")" -eq 1 ]
  done
  [ "$(cat "$BATS_TEST_TMPDIR/a" "$BATS_TEST_TMPDIR/b" | grep -c "building lower disk")" -eq 1 ]
  run capsa image ls -q
  [ "$output" = "$REG/test/layers:latest" ]
}

@test "a registry that never answers ends in a clear error within a bounded time" {
  port=$(free_port)
  socat TCP-LISTEN:"$port",bind=127.0.0.1,reuseaddr,fork SYSTEM:'sleep 120' &
  LISTENER_PID=$!
  sleep 0.3
  start=$(date +%s)
  run capsa pull --timeout 2 --insecure "127.0.0.1:$port/x/hang"
  end=$(date +%s)
  [ "$status" -eq 1 ]
  [[ "$output" == *"did not answer within 2 s"* ]]
  [ $((end - start)) -lt 15 ]
}

@test "a 100 MB manifest is refused at the cap" {
  port=$(free_port)
  python3 - "$port" <<'PY' &
import http.server, sys
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Type", "application/vnd.oci.image.manifest.v1+json")
        if "nolength" not in self.path:
            self.send_header("Content-Length", str(100 << 20))
        self.end_headers()
        chunk = b" " * 65536
        try:
            for _ in range((100 << 20) // len(chunk)):
                self.wfile.write(chunk)
        except (BrokenPipeError, ConnectionResetError):
            pass
    def log_message(self, *a):
        pass
http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
PY
  LISTENER_PID=$!
  for _ in $(seq 50); do curl -s -o /dev/null "http://127.0.0.1:$port/" -m 1 --max-filesize 1 && break; sleep 0.1; done
  run capsa pull --timeout 5 --insecure "127.0.0.1:$port/x/big"
  [ "$status" -eq 1 ]
  [[ "$output" == *"larger than the 4194304-byte cap"* ]]
  run capsa pull --timeout 5 --insecure "127.0.0.1:$port/x/nolength"
  [ "$status" -eq 1 ]
  [[ "$output" == *"larger than the 4194304-byte cap"* ]]
}

@test "an http registry without --insecure is refused (TLS required)" {
  run capsa pull --timeout 5 "$REG/test/busybox-v2s2:nope"
  [ "$status" -eq 1 ]
  [[ "$output" == *"TLS"* ]]
  [[ "$output" == *"--insecure"* ]]
}

@test "unknown tag and bad references are clear errors" {
  run capsa pull --insecure "$REG/test/busybox:nope"
  [ "$status" -eq 1 ]
  [[ "$output" == *"not found"* ]]
  run capsa pull "Bad/Name"
  [ "$status" -eq 1 ]
  [[ "$output" == *"lowercase"* ]]
  run capsa pull --ca-certs /nonexistent.pem --insecure "$REG/test/busybox:nope"
  [ "$status" -eq 1 ]
  [[ "$output" == *"--ca-certs /nonexistent.pem"* ]]
}

@test "image rm removes the disk and orphaned blobs, keeps shared layers" {
  capsa pull -q --insecure "$REG/test/busybox"
  capsa pull -q --insecure "$REG/test/busybox-v2s2"
  dir=$(disk_dir_of "$REG/test/busybox-v2s2")
  l=$(capsa image inspect "$REG/test/busybox-v2s2" --format json | jq -r '.layers[0].digest')
  run capsa image rm "$REG/test/busybox-v2s2"
  [ "$status" -eq 0 ]
  [ ! -e "$dir" ]
  [ -f "$CAPSA_HOME/images/blobs/sha256/${l#sha256:}" ] # still used by test/busybox
  run capsa image inspect "$REG/test/busybox-v2s2"
  [ "$status" -eq 1 ]
  [[ "$output" == *"not found"* ]]
  run capsa image rm "$REG/test/busybox-v2s2"
  [ "$status" -eq 1 ]
  # Removing the last user of the layer removes its blob.
  capsa image rm "$REG/test/layers" >/dev/null 2>&1 || true
  run capsa image rm "$REG/test/busybox"
  [ "$status" -eq 0 ]
  [ ! -e "$CAPSA_HOME/images/blobs/sha256/${l#sha256:}" ]
}

@test "a registry with Basic auth: refused without credentials, pulled with them" {
  dir="$BATS_TEST_TMPDIR/authreg"
  areg=$("$lib/registry" start "$dir" alice:s3cret)
  MKIMAGES_CREDS=alice:s3cret "$lib/mkimages" "$areg" busybox-v2s2
  export CAPSA_HOME="$BATS_TEST_TMPDIR/home4"
  run capsa pull --insecure "$areg/test/busybox-v2s2"
  [ "$status" -eq 1 ]
  [[ "$output" == *"authentication required"* ]]
  CAPSA_REGISTRY_USERNAME=alice CAPSA_REGISTRY_PASSWORD=wrong run capsa pull --insecure "$areg/test/busybox-v2s2"
  [ "$status" -eq 1 ]
  [[ "$output" == *"access denied"* ]]
  CAPSA_REGISTRY_USERNAME=alice CAPSA_REGISTRY_PASSWORD=s3cret run capsa pull --insecure "$areg/test/busybox-v2s2"
  [ "$status" -eq 0 ]
  # Credentials from $CAPSA_HOME/auth.json (must be private).
  capsa image rm "$areg/test/busybox-v2s2" >/dev/null
  printf '{"auths":{"%s":{"auth":"%s"}}}' "$areg" "$(printf alice:s3cret | base64)" >"$CAPSA_HOME/auth.json"
  chmod 644 "$CAPSA_HOME/auth.json"
  run capsa pull --insecure "$areg/test/busybox-v2s2"
  [ "$status" -eq 1 ]
  [[ "$output" == *"readable by others"* ]]
  chmod 600 "$CAPSA_HOME/auth.json"
  run capsa pull --insecure "$areg/test/busybox-v2s2"
  "$lib/registry" stop "$dir"
  [ "$status" -eq 0 ]
}
