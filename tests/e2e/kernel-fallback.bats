#!/usr/bin/env bats
# kernel-fallback.bats - Debian's stock kernel as capsa's fallback guest kernel:
# scripts/fetch-debian-kernel's install (modules in dependency order), then `capsa run`
# booting it (ACPI machine, modules loaded by the agent) on a busybox root directory, and an
# image root on it (a kernel without capsa's patches: the agent's fallbacks).
load helpers

TOP="$BATS_TEST_DIRNAME/../.."

setup_file() {
  registry_setup busybox
  export ROOTFS="$BATS_FILE_TMPDIR/rootfs"
  "$BATS_TEST_DIRNAME/../lib/mkrootfs-busybox" "$ROOTFS"
  export CAPSA_BOOT_TIMEOUT=180
  # Fetch the Debian kernel into the (shared) kernel cache if it is not there yet: a
  # download of ~70 MB from the Debian mirror apt uses, once per host and version.
  if [ ! -f "$CAPSA_HOME/kernel/debian/vmlinux" ]; then
    "$TOP/scripts/fetch-debian-kernel" >"$BATS_FILE_TMPDIR/fetch.log" 2>&1 || {
      cat "$BATS_FILE_TMPDIR/fetch.log" >&2
      return 1
    }
  fi
  export KDIR
  KDIR=$(readlink -f "$CAPSA_HOME/kernel/debian")
}

teardown_file() {
  registry_teardown
}

drun() { CAPSA_KERNEL_FLAVOR=debian timeout 300 "$CAPSA_BIN" run --no-tty "$ROOTFS" -- "$@" </dev/null; }

@test "fetch-debian-kernel: reused, one line of output naming the install" {
  run bash -c '"$1" 2>/dev/null' _ "$TOP/scripts/fetch-debian-kernel"
  [ "$status" -eq 0 ]
  [ "${#lines[@]}" -eq 1 ]
  [ "$(readlink -f "$output")" = "$KDIR" ]
  [[ "$(basename "$KDIR")" == debian-* ]]
  [ -z "$(ls -A "$CAPSA_HOME/kernel/" | grep '^\.fetch-' || true)" ]
}

@test "fetch-debian-kernel: a PVH vmlinux, only the needed modules, in dependency order" {
  [ "$(head -c4 "$KDIR/vmlinux" | od -An -tx1 | tr -d ' ')" = 7f454c46 ]
  grep -qx 'CONFIG_PVH=y' "$KDIR/config"
  release=$(cat "$KDIR/release")
  [[ "$release" == *-amd64 ]]
  mapfile -t order <"$KDIR/modules.order"
  [ "${#order[@]}" -ge 20 ] && [ "${#order[@]}" -le 40 ]
  # exactly the listed files are installed
  [ "$(ls "$KDIR/modules" | sort)" = "$(printf '%s\n' "${order[@]}" | sort)" ]
  pos() { local i; for i in "${!order[@]}"; do [ "${order[$i]}" = "$1" ] && { echo "$i"; return; }; done; echo -1; }
  for m in virtio_mmio virtio_console virtio_blk 9pnet_virtio 9p ext4 erofs overlay; do
    [ "$(pos "$m.ko")" -ge 0 ] || { echo "missing $m" >&2; return 1; }
  done
  # crc32c first; every module after what it depends on (modinfo's depends= field)
  [ "${order[0]}" = crc32c_generic.ko ]
  for i in "${!order[@]}"; do
    deps=$(modinfo -F depends "$KDIR/modules/${order[$i]}")
    for d in ${deps//,/ }; do
      p=$(pos "${d//-/_}.ko")
      [ "$p" -ge 0 ] && [ "$p" -lt "$i" ] || { echo "${order[$i]} needs $d (at $p)" >&2; return 1; }
    done
  done
}

@test "capsa run boots Debian's kernel: uname -r, output, exit code" {
  run drun sh -c 'uname -r; echo ok'
  [ "$status" -eq 0 ]
  [[ "$output" == *"$(cat "$KDIR/release")"* ]]
  [[ "$output" == *ok* ]]
  run drun sh -c 'exit 7'
  [ "$status" -eq 7 ]
}

@test "the guest has the modules' drivers: 9p root, ext4 and erofs known, port found" {
  run drun sh -c 'grep -c . /proc/modules; grep -w -e ext4 -e erofs -e overlay /proc/filesystems | wc -l; mount | grep -c " on / type 9p"'
  [ "$status" -eq 0 ]
  lines=(${output})
  [ "${lines[-3]}" -eq "$(wc -l <"$KDIR/modules.order")" ]
  [ "${lines[-2]}" -eq 3 ]
  [ "${lines[-1]}" -ge 1 ]
}

@test "an image root on Debian's kernel: overlayfs mounted without capsa's upper_probe=off" {
  # the stock kernel refuses the option (EINVAL): the agent mounts the overlay without it,
  # and overlayfs probes the upper as usual
  run env CAPSA_KERNEL_FLAVOR=debian timeout 300 "$CAPSA_BIN" run --no-tty --insecure -q \
    "$REG/test/busybox" -- sh -c 'grep " / " /proc/mounts; echo written > /etc/new; cat /etc/new' </dev/null
  [ "$status" -eq 0 ]
  [[ "$output" == *"overlay / overlay"* ]]
  [[ "$output" != *"upper_probe"* ]]
  [[ "$output" == *"written"* ]]
}

@test "nothing is left behind" {
  run drun true
  [ "$status" -eq 0 ]
  ! pgrep -f "qemu-system.*$CAPSA_HOME" >/dev/null
  [ -z "$(ls -A "$CAPSA_HOME/run" 2>/dev/null | grep -v '^\.' || true)" ]
}

@test "CAPSA_KERNEL_FLAVOR: an unknown value is a clear error" {
  run env CAPSA_KERNEL_FLAVOR=ubuntu timeout 60 "$CAPSA_BIN" run --no-tty "$ROOTFS" -- true
  [ "$status" -ne 0 ]
  [[ "$output" == *"CAPSA_KERNEL_FLAVOR=ubuntu"* ]]
}
