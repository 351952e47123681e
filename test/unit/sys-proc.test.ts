import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { describe, it } from "node:test";
import { parseProcStat, processLiveness, readProcStat } from "../../src/sys/proc/index.ts";

describe("proc", () => {
  it("parses /proc/PID/stat with spaces and parentheses in the name", () => {
    const stat = parseProcStat(
      "123 (qemu (x) y) S 1 123 123 0 -1 4194560 0 0 0 0 7 8 0 0 20 0 1 0 4242 1000 55 0",
    );
    assert.equal(stat?.pid, 123);
    assert.equal(stat?.state, "S");
    assert.equal(stat?.ppid, 1);
    assert.equal(stat?.utimeTicks, 7);
    assert.equal(stat?.startTicks, 4242);
    assert.equal(stat?.rssPages, 55);
  });

  it("decides liveness by pid, start time and a command-line marker", async () => {
    const child = spawn(process.execPath, ["-e", "setTimeout(() => {}, 30000)", "marker-arg"]);
    try {
      const stat = await readProcStat(child.pid!);
      assert.ok(stat);
      assert.equal(
        await processLiveness({ pid: child.pid!, startTicks: stat.startTicks, marker: "marker-arg" }),
        "alive",
      );
      assert.equal(
        await processLiveness({ pid: child.pid!, startTicks: stat.startTicks + 1, marker: "marker-arg" }),
        "foreign",
      );
      assert.equal(await processLiveness({ pid: child.pid!, startTicks: 0, marker: "other" }), "foreign");
      child.kill("SIGKILL");
      await new Promise((resolve) => setTimeout(resolve, 100));
      // Not yet reaped by us: a zombie counts as not alive.
      const state = await processLiveness({
        pid: child.pid!,
        startTicks: stat.startTicks,
        marker: "marker-arg",
      });
      assert.ok(state === "zombie" || state === "dead", state);
    } finally {
      child.kill("SIGKILL");
    }
  });
});
