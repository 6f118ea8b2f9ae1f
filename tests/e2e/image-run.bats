#!/usr/bin/env bats
# image-run.bats - `capsa run IMAGE` boots OCI images as real microVMs: images pulled from
# Debian's docker-registry on 127.0.0.1 (built offline by tests/lib/mkimages), an erofs
# lower disk + an ext4 (or tmpfs) upper, overlayfs in the guest; and disk-image roots.
load helpers

lib=$BATS_TEST_DIRNAME/../lib

setup_file() {
  registry_setup busybox layers app nocmd
  export CAPSA_BOOT_TIMEOUT=180
}

teardown_file() {
  registry_teardown
}

# --insecure: the test registry speaks plain http (each test may be the first to pull)
crun() { timeout 300 "$CAPSA_BIN" run --no-tty --insecure "$@"; }
crun_plain() { timeout 300 "$CAPSA_BIN" run --no-tty "$@"; }

# Nothing of an ephemeral run is left: no run dir (and so no upper.ext4).
assert_no_run_left() {
  [ -z "$(ls -A "$CAPSA_HOME/run" 2>/dev/null | grep '^run-' || true)" ]
}

@test "run IMAGE -- echo hi: pulls if missing, boots the image, prints hi" {
  run crun "$REG/test/busybox" -- echo hi
  [ "$status" -eq 0 ]
  [[ "$output" == *"hi"* ]]
  [[ "$output" == *"pulled sha256:"* ]]
  run capsa image ls -q
  [[ "$output" == *"$REG/test/busybox:latest"* ]]
  assert_no_run_left
  # the second run finds it in the store: no pull, no registry flags needed
  run crun_plain -q "$REG/test/busybox" -- sh -c 'echo again; grep " / " /proc/mounts'
  [ "$status" -eq 0 ]
  [[ "$output" == *"again"* ]]
  [[ "$output" == *"overlay / overlay"* ]]
  [[ "$output" != *"pulled"* ]]
}

@test "the root is overlayfs: erofs lower read-only, ext4 upper writable, both by serial" {
  # the superblock's compat, incompat and ro_compat feature words (offset 1024 + 0x5c..0x64)
  feat='dd if=/dev/vdb bs=4 skip=279 count=3 2>/dev/null | od -An -tx4'
  run env CAPSA_LOG=debug "$CAPSA_BIN" run --no-tty --insecure "$REG/test/busybox" -- sh -c \
    "cat /sys/block/vda/serial /sys/block/vdb/serial; echo; touch /newfile && echo wrote; echo features \$($feat); echo ra \$(cat /sys/block/vda/queue/read_ahead_kb); echo lbs \$(cat /sys/block/vd[ab]/queue/logical_block_size); sync; echo flushes \$(awk '{print \$16}' /sys/block/vdb/stat)"
  [ "$status" -eq 0 ]
  [[ "$output" == *"capsa-lower"* ]]
  [[ "$output" == *"capsa-upper"* ]]
  [[ "$output" == *"wrote"* ]]
  # the guest's timeline has the overlay root's steps
  [[ "$output" =~ guest\ timeline.*\ lower\ [0-9.]+\ upper\ [0-9.]+\ overlay\ [0-9.]+ ]]
  # an ephemeral run's upper is ext4 without a journal (compat bit 0x4) or metadata
  # checksums (ro_compat 0x400), with inline_data (incompat 0x8000)
  words=$(echo "$output" | sed -n 's/^features //p')
  compat=$((0x$(echo "$words" | awk '{print $1}'))) incompat=$((0x$(echo "$words" | awk '{print $2}')))
  rocompat=$((0x$(echo "$words" | awk '{print $3}')))
  [ $((compat & 0x4)) -eq 0 ]
  [ $((rocompat & 0x400)) -eq 0 ]
  [ $((incompat & 0x8000)) -ne 0 ]
  [ $((incompat & 0x2)) -ne 0 ] # filetype: it is ext4 we read
  [[ "$output" == *"ra 1024"* ]]  # the lower's read-ahead window
  # both disks have 4 KiB logical blocks, like their filesystems: no block-size switch at mount
  [[ "$output" == *"lbs 4096 4096"* ]]
  # ...and its ext4 is mounted nobarrier: even a sync sends the disk no cache flush
  [[ "$output" == *"flushes 0"* ]]
  # the scratch upper dies with the run: QEMU does not pass its flushes to the host's disk
  [[ "$output" =~ upper\.ext4,[^\ ]*cache=unsafe ]]
  [[ "$output" =~ lower\.erofs,[^\ ]*cache=writeback ]]
}

@test "overlayfs does not probe capsa's upper; copy-up, whiteouts and opaque dirs still hold" {
  run crun -q "$REG/test/busybox" -- sh -c \
    'grep " / " /proc/mounts; echo extra >> /etc/hostname; cat /etc/hostname; rm /etc/group
     test -e /etc/group || echo group-gone; rm -rf /opt; mkdir /opt; echo "opq $(ls -A /opt | wc -l)"
     dmesg | grep -i overlayfs; true'
  [ "$status" -eq 0 ]
  # capsa's kernel patch (guest/kernel/patches/): the mount takes the upper's features as known
  [[ "$output" =~ overlay\ /\ overlay\ [^\ ]*upper_probe=off ]]
  [[ "$output" == *$'capsa-test\nextra'* ]] # copied up (through O_TMPFILE)
  [[ "$output" == *"group-gone"* ]]         # a whiteout
  [[ "$output" == *"opq 0"* ]]              # the new /opt is opaque (a trusted.* xattr)
  [[ "$output" != *"does not support"* ]]   # no fallback warnings from overlayfs
}

@test "image Entrypoint + Cmd, Env, WorkingDir and User are applied" {
  run crun -q "$REG/test/app"
  [ "$status" -eq 0 ]
  [[ "$output" == *"cmd: hello from the image in /srv/app as 1000"* ]]
}

@test "a CMD after -- replaces Cmd and keeps the Entrypoint; -e, -w, -u override the image" {
  run crun -q "$REG/test/app" -- 'echo "mine: $GREETING $OVERRIDE $(pwd) $(id -u)"; cat hello.txt'
  [ "$status" -eq 0 ]
  [[ "$output" == *"mine: hello from the image image /srv/app 1000"* ]]
  [[ "$output" == *"from the app layer"* ]]
  run crun -q -e OVERRIDE=cli -w /tmp -u root "$REG/test/app" -- 'echo "$OVERRIDE $GREETING $(pwd) $(id -u)"'
  [ "$status" -eq 0 ]
  [[ "$output" == *"cli hello from the image /tmp 0"* ]]
}

@test "an image with neither Entrypoint nor Cmd and no command fails clearly" {
  run crun -q "$REG/test/nocmd"
  [ "$status" -eq 1 ]
  [[ "$output" == *"neither Entrypoint nor Cmd"* ]]
  run crun -q "$REG/test/nocmd" -- echo given
  [ "$status" -eq 0 ]
  [[ "$output" == *"given"* ]]
}

@test "files written in one ephemeral run do not leak into the next" {
  run crun -q "$REG/test/busybox" -- sh -c 'echo leaked > /etc/leak; rm /bin/ls; echo done'
  [ "$status" -eq 0 ]
  [[ "$output" == *"done"* ]]
  run crun -q "$REG/test/busybox" -- sh -c 'cat /etc/leak 2>&1; ls /bin/ls'
  [ "$status" -eq 0 ]
  [[ "$output" == *"No such file"* ]]
  [[ "$output" == *"/bin/ls"* ]]
  assert_no_run_left
}

@test "whiteouts and opaque dirs of a multi-layer image hold inside the guest" {
  run crun -q "$REG/test/layers"
  [ "$status" -eq 0 ]
  echo "$output" | grep -qx v2 # the image's Cmd: cat /data/keep (rewritten by the top layer)
  run crun -q "$REG/test/layers" -- sh -c 'ls /data; echo ---; ls -A /data/dir; echo ---; ls -A /opq; echo ---; cat /data/hl2'
  [ "$status" -eq 0 ]
  [[ "$output" != *"gone"* ]]      # .wh.gone and .wh.gonedir
  [[ "$output" == *"keep"* ]]
  dir_part=$(echo "$output" | awk '/^---$/{n++; next} n==1')
  [ "$dir_part" = "b" ]             # data/dir/.wh.a in the third layer
  opq_part=$(echo "$output" | awk '/^---$/{n++; next} n==2')
  [ "$opq_part" = "new" ]           # opaque: old1 and sub/ of the base layer are hidden
  [[ "$output" == *"linked content"* ]]
}

@test "--pull never on a missing image fails clearly; --pull always resolves again" {
  run crun --pull never "$REG/test/absent" -- true
  [ "$status" -eq 1 ]
  [[ "$output" == *"not in the local store"* ]]
  [[ "$output" == *"never"* ]]
  run crun --pull never -q "$REG/test/busybox" -- echo cached
  [ "$status" -eq 0 ]
  [[ "$output" == *"cached"* ]]
  run crun --pull always "$REG/test/busybox" -- echo fresh
  [ "$status" -eq 0 ]
  [[ "$output" == *"resolving"* ]]
  [[ "$output" == *"fresh"* ]]
  run crun --pull sometimes "$REG/test/busybox" -- true
  [ "$status" -ne 0 ]
  [[ "$output" == *"always, if-missing or never"* ]]
}

@test "a registry that is down fails the run with the pull error" {
  run crun 127.0.0.1:1/test/busybox -- true
  [ "$status" -eq 1 ]
  [[ "$output" == *"pulling 127.0.0.1:1/test/busybox"* ]]
}

@test "--root-disk tmpfs: no upper disk, a writable root in RAM" {
  run crun -q --root-disk tmpfs:64M "$REG/test/busybox" -- sh -c 'ls /sys/block; echo x > /x && cat /x; dd if=/dev/zero of=/big bs=1M count=80 2>&1 | head -1; grep " / " /proc/mounts
    rm /etc/group; test -e /etc/group || echo group-gone; rm -rf /opt; mkdir /opt; echo "opq $(ls -A /opt | wc -l)"'
  [ "$status" -eq 0 ]
  [[ "$output" =~ overlay\ /\ overlay\ [^\ ]*upper_probe=off ]] # the agent made it: no probes
  [[ "$output" == *"group-gone"* ]] # whiteouts and opaque dirs hold on tmpfs without the probes
  [[ "$output" == *"opq 0"* ]]
  [[ "$output" == *"vda"* ]]
  [[ "$output" != *"vdb"* ]]
  [[ "$output" == *"x"* ]]
  [[ "$output" == *"No space left"* ]] # the 64M bound holds
  run crun --root-disk bogus "$REG/test/busybox" -- true
  [ "$status" -ne 0 ]
  [[ "$output" == *"--root-disk"* ]]
}

@test "--root-disk SIZE: the managed upper has that size" {
  run crun -q --root-disk 200M "$REG/test/busybox" -- cat /sys/block/vdb/size
  [ "$status" -eq 0 ]
  [ "$(echo "$output" | tail -1)" = $((200 * 2048)) ]
}

@test "--root-disk PATH: a user ext4 upper persists between runs and is left clean" {
  up="$BATS_TEST_TMPDIR/upper.raw"
  mkfs.ext4 -q -F "$up" 128M >/dev/null
  run crun -q --root-disk "$up" "$REG/test/busybox" -- sh -c 'echo kept > /etc/kept; rm /bin/ls'
  [ "$status" -eq 0 ]
  run e2fsck -fn "$up"
  [ "$status" -eq 0 ]
  [[ "$(dumpe2fs -h "$up" 2>/dev/null | grep -i features)" != *needs_recovery* ]]
  run crun -q --root-disk "$up" "$REG/test/busybox" -- sh -c 'cat /etc/kept; ls /bin/ls 2>&1; grep " / " /proc/mounts'
  [ "$status" -eq 0 ]
  [[ "$output" == *"overlay / overlay"* ]]
  [[ "$output" != *"upper_probe"* ]] # a user's disk: overlayfs probes it as usual
  [[ "$output" == *"kept"* ]]
  [[ "$output" == *"No such file"* ]] # the whiteout in the upper
  [ -f "$up" ] # never deleted by capsa
}

@test "a disk image root (raw ext4 made with mkfs.ext4 -d) boots and stays clean" {
  tree="$BATS_TEST_TMPDIR/tree"
  "$lib/mkrootfs-busybox" "$tree" >/dev/null
  img="$BATS_TEST_TMPDIR/root.raw"
  mkfs.ext4 -q -F -d "$tree" "$img" 64M >/dev/null
  run crun -q "$img" -- sh -c 'grep " / " /proc/mounts; echo from-disk > /marker'
  [ "$status" -eq 0 ]
  [[ "$output" == *"/dev/vda / ext4 rw"* ]] # the fstype was probed
  run e2fsck -fn "$img"
  [ "$status" -eq 0 ]
  [ "$(debugfs -R 'cat /marker' "$img" 2>/dev/null)" = from-disk ]
  run crun --root-disk tmpfs "$img" -- true # a root disk is an image's upper only
  [ "$status" -eq 1 ]
  [[ "$output" == *"images only"* ]]
  # qcow2 by extension, through QEMU's format driver
  qemu-img convert -O qcow2 "$img" "$BATS_TEST_TMPDIR/root.qcow2"
  run crun -q "$BATS_TEST_TMPDIR/root.qcow2" -- cat /marker
  [ "$status" -eq 0 ]
  [[ "$output" == *"from-disk"* ]]
}

@test "a disk image that holds no filesystem fails the boot clearly" {
  junk="$BATS_TEST_TMPDIR/junk.raw"
  head -c 8M /dev/zero >"$junk"
  run crun -q "$junk" -- true
  [ "$status" -eq 1 ]
  [[ "$output" == *"no filesystem"* ]]
  assert_no_run_left
}
