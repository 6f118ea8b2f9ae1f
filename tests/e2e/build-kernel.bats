#!/usr/bin/env bats
# build-kernel.bats - scripts/build-kernel's checks that need no compile: a patch directory
# that is missing, and a patch that does not apply (the build stops naming it and leaves
# nothing behind). That capsa's own patches apply and work is shown by every VM test: the
# shared kernel is built with them (image-run.bats checks the overlayfs one in use).

TOP="$BATS_TEST_DIRNAME/../.."

@test "build-kernel --patches: a missing directory is named" {
  run env CAPSA_HOME="$BATS_TEST_TMPDIR/home" "$TOP/scripts/build-kernel" --patches /no/such/dir
  [ "$status" -eq 1 ]
  [[ "$output" == *"kernel patches /no/such/dir: not a directory"* ]]
  [ ! -e "$BATS_TEST_TMPDIR/home/kernel/current" ]
}

@test "build-kernel: a patch that does not apply stops the build and leaves nothing" {
  [ -r /usr/src/linux-source-6.1.tar.xz ] || skip "no linux-source-6.1"
  mkdir "$BATS_TEST_TMPDIR/p"
  cat >"$BATS_TEST_TMPDIR/p/0001-bad.patch" <<'P'
--- a/Makefile
+++ b/Makefile
@@ -1,3 +1,3 @@
-no such line in the kernel's Makefile
+a replacement
 nor this one
 nor this
P
  run env CAPSA_HOME="$BATS_TEST_TMPDIR/home" "$TOP/scripts/build-kernel" --patches "$BATS_TEST_TMPDIR/p"
  [ "$status" -eq 1 ]
  [[ "$output" == *"applying 0001-bad.patch"* ]]
  [[ "$output" == *"0001-bad.patch does not apply"* ]]
  # no half-built kernel, no work tree, no current link
  [ -z "$(ls -A "$BATS_TEST_TMPDIR/home/kernel" | grep -v '^\.lock$')" ]
}
