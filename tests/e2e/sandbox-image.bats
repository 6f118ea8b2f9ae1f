#!/usr/bin/env bats
# sandbox-image.bats - named sandboxes booted from OCI images (pulled from a local registry built
# by tests/lib/mkimages) and from disk images, against real VMs: the reference is pinned to the
# manifest digest at create, the managed ext4 upper lives in the sandbox directory (persists
# across stop/start, goes with rm), the image's Entrypoint/Cmd/Env/WorkingDir/User apply.
load helpers
bats_require_minimum_version 1.5.0

lib=$BATS_TEST_DIRNAME/../lib

setup_file() {
  registry_setup busybox app
  export CAPSA_BOOT_TIMEOUT=${CAPSA_BOOT_TIMEOUT:-300}
}

teardown_file() {
  sandboxes_teardown
  registry_teardown
}

sbdir() { echo "$CAPSA_HOME/sandboxes/$1"; }
show_log() { cat "$(sbdir "$1")/supervisor.log" >&2 2>/dev/null || true; }

@test "create IMAGE: pulls, pins the digest in the stored spec, exec works" {
  run timeout 600 "$CAPSA_BIN" create --insecure --name img -m 256M "$REG/test/busybox"
  [ "$status" -eq 0 ] || { echo "$output"; show_log img; false; }
  [[ "$output" == *"img"* ]]
  ref=$(capsa inspect img --format json | jq -r '.config.image.Oci.reference')
  [[ "$ref" == "$REG/test/busybox@sha256:"* ]]
  digest=$(capsa image ls --format json | jq -r --arg r "$REG/test/busybox:latest" \
    '.[] | select(.reference == $r) | .manifest_digest')
  [ -n "$digest" ]
  [ "$ref" = "$REG/test/busybox@$digest" ]
  [ "$(capsa inspect img --format json | jq -r '.config.image.Oci.root_disk.kind')" = managed ]
  run timeout 120 "$CAPSA_BIN" exec img -- sh -c 'grep " / " /proc/mounts; echo exec-ok'
  [ "$status" -eq 0 ]
  [[ "$output" == *"overlay / overlay"* ]]
  [[ "$output" == *"exec-ok"* ]]
  [ -f "$(sbdir img)/upper.ext4" ]
  # its upper outlives the VM, so QEMU passes the guest's flushes on (unlike a scratch upper)
  qpid=$(for p in $(pgrep -f qemu-system); do
    grep -qF "$(sbdir img)/upper.ext4" "/proc/$p/cmdline" && echo "$p"; done)
  qargs=$(tr '\0' ' ' <"/proc/$qpid/cmdline")
  [[ "$qargs" =~ upper\.ext4,[^\ ]*cache=writeback ]]
  # under TCG its guest RAM is not in transparent huge pages (KVM keeps them)
  if [[ "$qargs" == *"-accel tcg"* ]]; then
    grep -Eq '^THP_enabled:[[:space:]]+0' "/proc/$qpid/status"
  else
    grep -Eq '^THP_enabled:[[:space:]]+1' "/proc/$qpid/status"
  fi
  # metrics report what the sparse managed upper takes on the host (sampled every second)
  for i in $(seq 50); do
    v=$(capsa metrics img --format json | jq '.[0].upper_host_allocated_bytes')
    [ "$v" -gt 0 ] && break
    sleep 0.2
  done
  [ "$v" -gt 0 ]
  [ "$v" -le "$(($(stat -c %b "$(sbdir img)/upper.ext4") * 512))" ]
}

@test "a file written survives stop/start (persistent upper); the upper stays clean" {
  run timeout 120 "$CAPSA_BIN" exec img -- sh -c \
    'echo kept > /etc/kept; rm /bin/ls; sync; echo flushes $(awk "{print \$16}" /sys/block/vdb/stat)'
  [ "$status" -eq 0 ]
  # unlike an ephemeral run's scratch upper, a sandbox's upper is written with cache flushes
  flushes=$(echo "$output" | sed -n 's/^flushes //p')
  [ "${flushes:-0}" -gt 0 ]
  run timeout 120 "$CAPSA_BIN" stop img
  [ "$status" -eq 0 ]
  up="$(sbdir img)/upper.ext4"
  run e2fsck -fn "$up"
  [ "$status" -eq 0 ]
  [[ "$(dumpe2fs -h "$up" 2>/dev/null | grep -i features)" != *needs_recovery* ]]
  # a named sandbox's upper outlives crashes: it is journaled (an ephemeral run's is not)
  [[ "$(dumpe2fs -h "$up" 2>/dev/null | grep -i features)" == *has_journal* ]]
  # overlayfs' work/work is still the one the upper's template was made with (same inode,
  # mode 0, same creation time; copy-ups changed its mtime): the boot reused it instead of
  # removing and making it again (kernel patch 0002)
  tmpl=$(ls -t "$CAPSA_HOME"/cache/upper/ext4-4096m-v*.img | grep -v scratch | head -1)
  wstat() { debugfs -R "stat work/work" "$1" 2>/dev/null | grep -E '^Inode:|^crtime:'; }
  [[ "$(wstat "$up")" == *"Mode:  0000"* ]]
  [ "$(wstat "$up")" = "$(wstat "$tmpl")" ]
  # leftovers in work/work (as a crash in the middle of a copy-up leaves them) are not
  # reused: the next boot cleans them up
  echo junk >"$BATS_TEST_TMPDIR/junk"
  printf 'cd work/work\nwrite %s leftover\n' "$BATS_TEST_TMPDIR/junk" | debugfs -w -f - "$up" >/dev/null 2>&1
  [[ "$(debugfs -R 'ls work/work' "$up" 2>/dev/null)" == *leftover* ]]
  run timeout 600 "$CAPSA_BIN" start img
  [ "$status" -eq 0 ] || { echo "$output"; show_log img; false; }
  run timeout 120 "$CAPSA_BIN" exec img -- sh -c 'cat /etc/kept; ls /bin/ls 2>&1; true'
  [ "$status" -eq 0 ]
  [[ "$output" == *"kept"* ]]
  [[ "$output" == *"No such file"* ]]
  run timeout 120 "$CAPSA_BIN" stop img
  [ "$status" -eq 0 ]
  [[ "$(debugfs -R 'ls work/work' "$up" 2>/dev/null)" != *leftover* ]]
  run e2fsck -fn "$up"
  [ "$status" -eq 0 ]
}

@test "image rm of an image a sandbox uses is refused without -f" {
  run capsa image rm "$REG/test/busybox:latest"
  [ "$status" -ne 0 ]
  [[ "$output" == *"img"* || "$output" == *"sandbox"* ]]
  run capsa image ls -q
  [[ "$output" == *"$REG/test/busybox:latest"* ]]
}

@test "rm deletes the sandbox directory and its upper.ext4" {
  [ -f "$(sbdir img)/upper.ext4" ]
  run timeout 120 "$CAPSA_BIN" rm -f img
  [ "$status" -eq 0 ]
  [ ! -e "$(sbdir img)/upper.ext4" ]
  [ ! -e "$(sbdir img)" ]
}

@test "run --name N IMAGE without a command runs Entrypoint + Cmd with Env/WorkingDir/User" {
  run timeout 600 "$CAPSA_BIN" run --no-tty --insecure -q --name app -m 256M "$REG/test/app"
  [ "$status" -eq 0 ] || { echo "$output"; show_log app; false; }
  [[ "$output" == *"cmd: hello from the image in /srv/app as 1000"* ]]
  # run stopped what it started; a later exec starts it again and sees the image defaults, spec env lies over image Env
  run timeout 120 "$CAPSA_BIN" exec app -- sh -c 'echo "$GREETING $(pwd) $(id -u)"'
  [ "$status" -eq 0 ]
  [[ "$output" == *"hello from the image /srv/app 1000"* ]]
  run timeout 120 "$CAPSA_BIN" rm -f app
  [ "$status" -eq 0 ]
}

@test "run --name N IMAGE -- CMD keeps the Entrypoint; a start after image rm -f re-pulls with the stored --insecure" {
  run timeout 600 "$CAPSA_BIN" run --no-tty --insecure -q --name app2 -m 256M "$REG/test/app" -- 'echo "ep: $GREETING"'
  [ "$status" -eq 0 ] || { echo "$output"; show_log app2; false; }
  [[ "$output" == *"ep: hello from the image"* ]]
  [ "$(jq -r .insecure "$(sbdir app2)/pull.json")" = true ]
  timeout 120 "$CAPSA_BIN" stop app2 || true
  run capsa image rm -f "$REG/test/app:latest"
  [ "$status" -eq 0 ]
  run capsa image ls -q
  [[ "$output" != *"$REG/test/app"* ]]
  run timeout 600 "$CAPSA_BIN" start app2
  [ "$status" -eq 0 ] || { echo "$output"; show_log app2; false; }
  run timeout 120 "$CAPSA_BIN" exec app2 -- cat /srv/app/hello.txt
  [ "$status" -eq 0 ]
  [[ "$output" == *"from the app layer"* ]]
  run timeout 120 "$CAPSA_BIN" rm -f app2
  [ "$status" -eq 0 ]
}

@test "--spec with {\"Oci\": ...} and a tmpfs root_disk; bad references fail cleanly" {
  spec="$BATS_TEST_TMPDIR/spec.json"
  jq -n --arg r "$REG/test/busybox" \
    '{image: {Oci: {reference: $r, root_disk: {kind: "tmpfs"}}}, resources: {memory_mib: 256}}' >"$spec"
  run timeout 600 "$CAPSA_BIN" create --insecure --name spec1 --spec "$spec"
  [ "$status" -eq 0 ] || { echo "$output"; show_log spec1; false; }
  [ "$(capsa inspect spec1 --format json | jq -r '.config.image.Oci.root_disk.kind')" = tmpfs ]
  run timeout 120 "$CAPSA_BIN" exec spec1 -- sh -c 'grep " / " /proc/mounts'
  [ "$status" -eq 0 ]
  [ ! -e "$(sbdir spec1)/upper.ext4" ]
  run timeout 120 "$CAPSA_BIN" rm -f spec1
  [ "$status" -eq 0 ]
  # an image that is not there: nothing is created
  run timeout 120 "$CAPSA_BIN" create --insecure --name nope "$REG/test/missing"
  [ "$status" -ne 0 ]
  [[ "$output" == *"test/missing"* ]]
  run capsa inspect nope
  [ "$status" -ne 0 ]
  run timeout 60 "$CAPSA_BIN" create --name nope2 --pull never "$REG/test/app:other"
  [ "$status" -ne 0 ]
  [[ "$output" == *"pull policy is never"* ]]
}

@test "a DiskImage root (raw ext4 made with mkfs.ext4 -d) as a named sandbox" {
  tree="$BATS_TEST_TMPDIR/tree"
  "$lib/mkrootfs-busybox" "$tree" >/dev/null
  img="$BATS_TEST_TMPDIR/root.raw"
  mkfs.ext4 -q -F -d "$tree" "$img" 64M >/dev/null
  run timeout 600 "$CAPSA_BIN" create --name disk -m 128M "$img"
  [ "$status" -eq 0 ] || { echo "$output"; show_log disk; false; }
  [ "$(capsa inspect disk --format json | jq -r '.config.image.DiskImage.path')" = "$img" ]
  run timeout 120 "$CAPSA_BIN" exec disk -- sh -c 'grep " / " /proc/mounts; echo on-disk > /marker'
  [ "$status" -eq 0 ]
  [[ "$output" == *"/dev/vda / ext4 rw"* ]]
  run timeout 120 "$CAPSA_BIN" stop disk
  [ "$status" -eq 0 ]
  run e2fsck -fn "$img"
  [ "$status" -eq 0 ]
  [ "$(debugfs -R 'cat /marker' "$img" 2>/dev/null)" = on-disk ]
  run timeout 120 "$CAPSA_BIN" rm disk
  [ "$status" -eq 0 ]
  [ -f "$img" ] # a user's disk image is never deleted
  # --spec form
  spec="$BATS_TEST_TMPDIR/disk.json"
  jq -n --arg p "$img" '{image: {DiskImage: {path: $p, format: "Raw", fstype: "ext4"}}, resources: {memory_mib: 128}}' >"$spec"
  run timeout 600 "$CAPSA_BIN" run --no-tty -q --name disk2 --spec "$spec" -- cat /marker
  [ "$status" -eq 0 ] || { echo "$output"; show_log disk2; false; }
  [[ "$output" == *"on-disk"* ]]
  run timeout 120 "$CAPSA_BIN" rm -f disk2
  [ "$status" -eq 0 ]
}
