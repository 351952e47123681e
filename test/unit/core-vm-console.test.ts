/** Console classification and the state predicates of core/vm, as tables. */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import {
  bootFailureSummary,
  canReconfigure,
  classifyVmmExit,
  isActiveState,
  isAtRest,
  mayHoldRuntime,
  vmmExitReason,
} from "../../src/core/vm/index.ts";
import { VmState } from "../../src/protocol/index.ts";

describe("classifyVmmExit", () => {
  const table: [string, string, ReturnType<typeof classifyVmmExit>][] = [
    ["poweroff", "[  3.1] reboot: Power down\n", { kind: "poweroff" }],
    ["halt", "System halted\n", { kind: "poweroff" }],
    ["reboot", "[  9.0] reboot: Restarting system\n", { kind: "reboot" }],
    [
      "panic",
      "booting\n[  0.9] Kernel panic - not syncing: VFS: Unable to mount root fs\nmore\n",
      { kind: "panic", line: "[  0.9] Kernel panic - not syncing: VFS: Unable to mount root fs" },
    ],
    ["poweroff wins over an earlier panic line", "Kernel panic\nreboot: Power down\n", { kind: "poweroff" }],
    ["nothing known", "login: \n", { kind: "unknown" }],
    ["empty", "", { kind: "unknown" }],
  ];
  for (const [name, tail, expected] of table) {
    it(name, () => assert.deepEqual(classifyVmmExit(tail), expected));
  }

  it("phrases the reaper's reason with the pid", () => {
    assert.equal(vmmExitReason("reboot: Power down", 42), "the guest powered off; the VMM (pid 42) exited");
    assert.equal(
      vmmExitReason("reboot: Restarting system", 42),
      "the guest rebooted; the VMM (pid 42) exited",
    );
    assert.equal(
      vmmExitReason("Kernel panic - oops", null),
      "the guest kernel panicked (Kernel panic - oops); the VMM (pid ?) exited",
    );
    assert.equal(vmmExitReason("", 7), "the VMM (pid 7) exited unexpectedly (killed or crashed)");
  });
});

describe("bootFailureSummary", () => {
  it("keeps the message alone when the console is empty", () => {
    assert.equal(bootFailureSummary("no banner", "  \n"), "no banner");
  });
  it("appends the last 12 console lines", () => {
    const lines = Array.from({ length: 20 }, (_, i) => `line ${i}`);
    const summary = bootFailureSummary("no banner", `${lines.join("\n")}\n`);
    assert.equal(summary, `no banner\n--- console tail ---\n${lines.slice(8).join("\n")}`);
  });
});

describe("state predicates", () => {
  // state: [isActiveState, isAtRest, mayHoldRuntime, canReconfigure]
  const table: Record<VmState, [boolean, boolean, boolean, boolean]> = {
    created: [false, true, false, true],
    starting: [false, false, true, false],
    running: [true, false, true, false],
    paused: [true, false, true, false],
    suspended: [false, false, false, false],
    stopping: [false, false, true, false],
    stopped: [false, true, false, true],
    error: [false, false, false, true],
  };
  it("covers every state", () => assert.deepEqual(Object.keys(table).sort(), [...VmState.options].sort()));
  for (const [state, expected] of Object.entries(table) as [
    VmState,
    [boolean, boolean, boolean, boolean],
  ][]) {
    it(state, () =>
      assert.deepEqual(
        [isActiveState(state), isAtRest(state), mayHoldRuntime(state), canReconfigure(state)],
        expected,
      ),
    );
  }
});
