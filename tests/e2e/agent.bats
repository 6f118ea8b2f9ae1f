#!/usr/bin/env bats
# agent.bats - capsa-agent as PID 1 in a real QEMU microvm (9p busybox root), driven
# over the capsa.agent port by agent/tests/vm-smoke: boot, exec (pipes, PTY, users,
# exit codes), fs ops, a read-only extra mount, shutdown.
load helpers

@test "agent: boots as PID 1 and serves exec and fs in a microvm" {
  kernel="${CAPSA_KERNEL:-$HOME/.capsa/kernel/current/vmlinux}"
  agent="${CAPSA_AGENT:-$CAPSA_BUILD/agent/capsa-agent}"
  [ -f "$kernel" ] || skip "no guest kernel at $kernel (scripts/build-kernel)"
  [ -x "$agent" ] || skip "no agent at $agent"
  command -v qemu-system-x86_64 >/dev/null || skip "no qemu-system-x86_64"
  [ -x /bin/busybox ] || skip "no /bin/busybox (busybox-static)"
  run timeout 300 "$BATS_TEST_DIRNAME/../../agent/tests/vm-smoke" --agent "$agent" --kernel "$kernel"
  echo "$output"
  [ "$status" -eq 0 ]
}
