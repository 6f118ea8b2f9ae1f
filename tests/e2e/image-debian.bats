#!/usr/bin/env bats
# image-debian.bats - a real distribution as a capsa image: Debian bookworm minbase (built once
# by tests/lib/mkimage-debian with debootstrap, cached, pushed to Debian's docker-registry on
# 127.0.0.1) boots as a named sandbox; its layer metadata (setuid/setgid bits, group owners,
# hardlinks, device nodes) survives extraction and the erofs lower; dpkg installs and removes
# the image's offline-built .deb, apt's dependency check passes, and the package state persists
# in the managed upper across stop/start; `capsa run` of the image is an ephemeral boot.
load helpers
bats_require_minimum_version 1.5.0

lib=$BATS_TEST_DIRNAME/../lib
IMG=test/debian:bookworm

# debootstrap needs root (device nodes, owners, chroot): without it every case is skipped
setup() {
  [ "$(id -u)" -eq 0 ] || skip "mkimage-debian needs root"
}

setup_file() {
  [ "$(id -u)" -eq 0 ] || return 0
  capsa_home_setup
  export REGDIR="$BATS_FILE_TMPDIR/registry"
  REG=$("$lib/registry" start "$REGDIR")
  export REG
  # the first run on a machine debootstraps (a minute or two); later runs use the cache
  "$lib/mkimage-debian" "$REG"
  export CAPSA_BOOT_TIMEOUT=${CAPSA_BOOT_TIMEOUT:-300}
}

teardown_file() {
  [ "$(id -u)" -eq 0 ] || return 0
  timeout 60 "$CAPSA_BIN" rm -f deb >/dev/null 2>&1 || true
  "$lib/registry" stop "$REGDIR"
}

show_log() { cat "$CAPSA_HOME/sandboxes/$1/supervisor.log" >&2 2>/dev/null || true; }
dexec() { timeout 120 "$CAPSA_BIN" exec deb "$@"; }
restart() {
  run timeout 120 "$CAPSA_BIN" stop deb
  [ "$status" -eq 0 ] || { echo "$output"; show_log deb; false; }
  run timeout 300 "$CAPSA_BIN" start deb
  [ "$status" -eq 0 ] || { echo "$output"; show_log deb; false; }
}

@test "create from the Debian image: two layers pulled, the guest is Debian 12" {
  run timeout 600 "$CAPSA_BIN" create --insecure --name deb -m 512M "$REG/$IMG"
  [ "$status" -eq 0 ] || { echo "$output"; show_log deb; false; }
  run capsa image inspect "$REG/$IMG" --format json
  [ "$status" -eq 0 ]
  [ "$(jq '.layers | length' <<<"$output")" -eq 2 ] || { echo "$output"; false; }
  run dexec -- cat /etc/debian_version
  [ "$status" -eq 0 ]
  [[ "$output" =~ ^12(\.[0-9]+)?$ ]] || { echo "$output"; false; }
  run dexec -- sh -c 'grep " / " /proc/mounts; ls -l /opt/capsa-hello.deb'
  [ "$status" -eq 0 ]
  [[ "$output" == *"overlay / overlay"* ]]
  [[ "$output" == *"-rw-r--r-- 1 root root"*"/opt/capsa-hello.deb"* ]]
}

@test "layer metadata survives: setuid/setgid, group owners, hardlinks, device nodes" {
  run dexec -- stat -c '%n %a %u:%g %h' /usr/bin/su /usr/bin/chage /etc/shadow /usr/bin/perl \
    /usr/bin/perl5.36.0
  [ "$status" -eq 0 ]
  [[ "$output" == *"/usr/bin/su 4755 0:0 1"* ]] || { echo "$output"; false; }
  [[ "$output" == *"/usr/bin/chage 2755 0:42 1"* ]] || { echo "$output"; false; }
  [[ "$output" == *"/etc/shadow 640 0:42 1"* ]] || { echo "$output"; false; }
  [[ "$output" == *"/usr/bin/perl 755 0:0 2"* ]] || { echo "$output"; false; }
  run dexec -- sh -c '[ "$(stat -c %i /usr/bin/perl)" = "$(stat -c %i /usr/bin/perl5.36.0)" ] && echo same-inode'
  [[ "$output" == *same-inode* ]]
  # the bits work: setuid-root passwd reads /etc/shadow for nobody, who cannot read it himself
  run dexec -u nobody -- sh -c 'passwd -S; cat /etc/shadow 2>&1; true'
  [ "$status" -eq 0 ]
  [[ "$output" == *"nobody L "* ]] || { echo "$output"; false; }
  [[ "$output" == *"Permission denied"* ]]
  # the image's own /dev nodes (hidden by devtmpfs at run time) are in the erofs lower
  run dexec -- sh -c 'for b in /sys/block/vd*; do
      [ "$(cat "$b/serial" 2>/dev/null)" = capsa-lower ] && dev=/dev/${b##*/}; done
    mkdir -p /mnt/lower && mount -t erofs -o ro "$dev" /mnt/lower &&
    stat -c "%n %F %t,%T %a" /mnt/lower/dev/null /mnt/lower/dev/ptmx; umount /mnt/lower'
  [ "$status" -eq 0 ] || { echo "$output"; false; }
  [[ "$output" == *"/mnt/lower/dev/null character special file 1,3 666"* ]]
  [[ "$output" == *"/mnt/lower/dev/ptmx character special file 5,2 666"* ]]
}

@test "dpkg -i installs the image's .deb; the program runs; dpkg -s and apt-get check agree" {
  run dexec -- dpkg -s capsa-hello
  [ "$status" -ne 0 ]
  run dexec -- dpkg -i /opt/capsa-hello.deb
  [ "$status" -eq 0 ] || { echo "$output"; false; }
  [[ "$output" == *"Setting up capsa-hello (1.0)"* ]]
  run dexec -- capsa-hello
  [ "$status" -eq 0 ]
  [ "$output" = "hello from capsa-hello" ]
  run dexec -- dpkg -s capsa-hello
  [ "$status" -eq 0 ]
  [[ "$output" == *"Status: install ok installed"* ]]
  [[ "$output" == *"Version: 1.0"* ]]
  run dexec -- apt-get check
  [ "$status" -eq 0 ] || { echo "$output"; false; }
  run dexec -- dpkg --audit
  [ "$status" -eq 0 ]
  [ -z "$output" ]
}

@test "the installed package persists across stop/start; dpkg -r removes it, and that persists" {
  restart
  run dexec -- sh -c 'capsa-hello && dpkg -s capsa-hello | grep Status'
  [ "$status" -eq 0 ] || { echo "$output"; false; }
  [[ "$output" == *"hello from capsa-hello"*"Status: install ok installed"* ]]
  run dexec -- dpkg -r capsa-hello
  [ "$status" -eq 0 ] || { echo "$output"; false; }
  [[ "$output" == *"Removing capsa-hello (1.0)"* ]]
  run dexec -- sh -c 'command -v capsa-hello || echo gone'
  [ "$output" = gone ]
  restart
  run dexec -- sh -c 'command -v capsa-hello || echo gone; dpkg -s capsa-hello 2>&1; true'
  [[ "$output" == gone* ]] || { echo "$output"; false; }
  [[ "$output" != *"install ok installed"* ]]
  run dexec -- apt-get check
  [ "$status" -eq 0 ]
}

@test "run IMAGE -- cat /etc/os-release: an ephemeral Debian boot" {
  run timeout 300 "$CAPSA_BIN" run --no-tty --insecure -q "$REG/$IMG" -- cat /etc/os-release
  [ "$status" -eq 0 ] || { echo "$output"; false; }
  [[ "$output" == *'ID=debian'* ]]
  [[ "$output" == *'VERSION_CODENAME=bookworm'* ]]
  [[ "$output" == *'VERSION_ID="12"'* ]]
  [ -z "$(ls -A "$CAPSA_HOME/run" 2>/dev/null | grep '^run-' || true)" ]
  # the ephemeral run did not touch the named sandbox's upper
  run dexec -- sh -c 'command -v capsa-hello || echo gone'
  [ "$output" = gone ]
}
