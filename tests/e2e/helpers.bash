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
