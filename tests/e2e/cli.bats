#!/usr/bin/env bats
# cli.bats - global CLI behaviour: help, version, unknown verbs and options.
load helpers

setup_file() { capsa_home_setup; }

@test "capsa --help lists the commands" {
  run capsa --help
  [ "$status" -eq 0 ]
  [[ "$output" == *"run"* ]]
  [[ "$output" == *"spec"* ]]
}

@test "capsa --version prints the version" {
  run capsa --version
  [ "$status" -eq 0 ]
  [[ "$output" == "capsa "[0-9]* ]]
}

@test "unknown command is a clear error" {
  run capsa frobnicate
  [ "$status" -eq 1 ]
  [[ "$output" == *"unknown command 'frobnicate'"* ]]
}

@test "bad --log-level names the expected values" {
  run capsa --log-level loud version
  [ "$status" -eq 1 ]
  [[ "$output" == *"error|warn|info|debug|trace"* ]]
}

@test "multi-sandbox verbs: --help has options and exit status; --touch only for ping" {
  run capsa ping --help
  [ "$status" -eq 0 ]
  [[ "$output" == *"--touch"* && "$output" == *"Exit status"* ]]
  run capsa stop --help
  [[ "$output" == *"--timeout SECS"* && "$output" != *"--touch"* ]]
  run capsa stop --touch somebox
  [ "$status" -eq 1 ]
  [[ "$output" == *"--touch is a ping option"* ]]
}
