#!/usr/bin/env bats
# image-erofs.bats - capsa's own EROFS writer (src/image/erofs.c) against extraction + mkfs.erofs:
# the test images (busybox, multi-layer whiteouts/opaque/hardlinks/devices/xattrs, app and, as
# root, Debian minbase) are pulled with both builders (CAPSA_EROFS_BUILDER=capsa|mkfs); both
# disks pass fsck.erofs, and mounted with the kernel's erofs (root) their trees match in names,
# types, modes, owners, sizes, contents, symlink targets, hardlink sharing, devices and xattrs.
load helpers
bats_require_minimum_version 1.5.0

lib=$BATS_TEST_DIRNAME/../lib

setup_file() {
  registry_setup busybox layers app
  if [ "$(id -u)" -eq 0 ]; then "$lib/mkimage-debian" "$REG"; fi
}

teardown_file() {
  registry_teardown
}

teardown() {
  for m in "$BATS_TEST_TMPDIR"/m-*; do
    mountpoint -q "$m" 2>/dev/null && umount "$m"
  done
  return 0
}

# pull IMAGE with BUILDER into a home of its own; prints the disk path
pull_with() {
  local builder=$1 image=$2 home="$BATS_TEST_TMPDIR/home-$1"
  mkdir -p "$home"
  CAPSA_HOME="$home" CAPSA_EROFS_BUILDER=$builder timeout 300 "$CAPSA_BIN" pull --insecure -q \
    "$REG/$image" >&2 || return 1
  ls "$home"/images/disks/*/lower.erofs
}

# A canonical listing of a tree: one line per path with everything but directory sizes/mtimes.
tree_listing() {
  python3 - "$1" <<'PY'
import hashlib, os, stat, sys
root = sys.argv[1]
seen = {}
out = []
for d, dirs, files in os.walk(root):
    dirs.sort()
    for name in sorted(dirs + files):
        p = os.path.join(d, name)
        rel = os.path.relpath(p, root)
        st = os.lstat(p)
        line = [rel, oct(st.st_mode), str(st.st_uid), str(st.st_gid)]
        if stat.S_ISREG(st.st_mode):
            with open(p, "rb") as f:
                line += [str(st.st_size), hashlib.sha256(f.read()).hexdigest()]
            key = st.st_ino
            line.append("link=" + seen.setdefault(key, rel))
            line.append("nlink=%d" % st.st_nlink)
        elif stat.S_ISLNK(st.st_mode):
            line.append("-> " + os.readlink(p))
        elif stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode):
            line.append("dev=%d:%d" % (os.major(st.st_rdev), os.minor(st.st_rdev)))
        elif stat.S_ISDIR(st.st_mode):
            line.append("nlink=%d" % st.st_nlink)
        for x in sorted(os.listxattr(p, follow_symlinks=False)):
            line.append("%s=%s" % (x, os.getxattr(p, x, follow_symlinks=False).hex()))
        out.append(" ".join(line))
print("\n".join(out))
PY
}

compare_builders() {
  local image=$1 own ref
  own=$(pull_with capsa "$image")
  ref=$(pull_with mkfs "$image")
  run fsck.erofs "$own"
  [ "$status" -eq 0 ] || { echo "$output"; false; }
  run fsck.erofs --extract="$BATS_TEST_TMPDIR/x" "$own"
  [ "$status" -eq 0 ] || { echo "$output"; false; }
  if [ "$(id -u)" -ne 0 ]; then return 0; fi
  mkdir -p "$BATS_TEST_TMPDIR/m-own" "$BATS_TEST_TMPDIR/m-ref"
  mount -t erofs -o ro,loop "$own" "$BATS_TEST_TMPDIR/m-own"
  mount -t erofs -o ro,loop "$ref" "$BATS_TEST_TMPDIR/m-ref"
  tree_listing "$BATS_TEST_TMPDIR/m-own" >"$BATS_TEST_TMPDIR/own.txt"
  tree_listing "$BATS_TEST_TMPDIR/m-ref" >"$BATS_TEST_TMPDIR/ref.txt"
  [ -s "$BATS_TEST_TMPDIR/ref.txt" ]
  diff -u "$BATS_TEST_TMPDIR/ref.txt" "$BATS_TEST_TMPDIR/own.txt"
}

@test "busybox: the own writer's disk passes fsck.erofs and matches mkfs.erofs's" {
  compare_builders test/busybox
}

@test "multi-layer (whiteouts, opaque dir, hardlinks, devices, xattrs): matches mkfs.erofs" {
  compare_builders test/layers
}

@test "app image: matches mkfs.erofs" {
  compare_builders test/app
}

@test "Debian minbase: matches mkfs.erofs, setuid bits included" {
  [ "$(id -u)" -eq 0 ] || skip "mkimage-debian needs root"
  compare_builders test/debian:bookworm
  grep -q '^usr/bin/su 0o104755 0 0 ' "$BATS_TEST_TMPDIR/own.txt"
}
