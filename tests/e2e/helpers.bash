# helpers.bash - shared set-up for capsa's end-to-end tests.
# CAPSA_BIN points at the built binary; each test file gets its own CAPSA_HOME.
: "${CAPSA_BIN:=$BATS_TEST_DIRNAME/../../build/src/cli/capsa}"
capsa() { "$CAPSA_BIN" "$@"; }

capsa_home_setup() {
  export CAPSA_HOME="$BATS_FILE_TMPDIR/home"
  mkdir -p "$CAPSA_HOME"
  # Share the host's cached guest kernel so tests never rebuild it.
  local real="${CAPSA_KERNEL_CACHE:-$HOME/.capsa/kernel}"
  if [ -d "$real" ] && [ ! -e "$CAPSA_HOME/kernel" ]; then ln -s "$real" "$CAPSA_HOME/kernel"; fi
}
: "${CAPSA_BUILD:=$BATS_TEST_DIRNAME/../../build}"

# ---- sandbox state, for files that boot named sandboxes ----
# status NAME -> the sandbox's status from `ls --format json`
status_of() { capsa ls --format json | jq -r --arg n "$1" '.[] | select(.name == $n) | .status'; }
# wait_status NAME STATUS SECONDS
wait_status() {
  local i
  for ((i = 0; i < $3 * 5; i++)); do
    [ "$(status_of "$1")" = "$2" ] && return 0
    sleep 0.2
  done
  echo "sandbox $1 is $(status_of "$1"), expected $2" >&2
  return 1
}
sup_pid() { capsa ps --format json | jq -r --arg n "$1" '.[] | select(.name == $n) | .pid'; }
qemu_procs() { pgrep -f "qemu-system.*$CAPSA_HOME" | wc -l; }
# supervisors of this CAPSA_HOME
sup_pids() {
  local p
  for p in $(pgrep -f "capsa __supervisor"); do
    tr '\0' '\n' <"/proc/$p/environ" 2>/dev/null | grep -qx "CAPSA_HOME=$CAPSA_HOME" && echo "$p"
  done
  return 0
}
# teardown_file body: remove every sandbox of this CAPSA_HOME, then kill any supervisor that
# survived (QEMU dies with it), so no VM outlives the test file
sandboxes_teardown() {
  "$CAPSA_BIN" ls -q 2>/dev/null | while read -r n; do
    timeout 60 "$CAPSA_BIN" rm -f "$n" >/dev/null 2>&1 || true
  done
  local p
  for p in $(sup_pids); do kill -9 "$p" 2>/dev/null || true; done
}
# setup_file body for image tests: a private CAPSA_HOME, a local registry at $REG (state in
# $REGDIR) holding the tests/lib/mkimages images named as arguments
registry_setup() {
  capsa_home_setup
  export REGDIR="$BATS_FILE_TMPDIR/registry"
  REG=$("$BATS_TEST_DIRNAME/../lib/registry" start "$REGDIR") || return 1
  export REG
  "$BATS_TEST_DIRNAME/../lib/mkimages" "$REG" "$@"
}
registry_teardown() { "$BATS_TEST_DIRNAME/../lib/registry" stop "$REGDIR"; }
