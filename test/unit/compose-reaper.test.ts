/**
 * startSerialInterval: the daemon's periodic passes (the reaper) never
 * overlap, survive a failing pass, and stop when disposed. Time is the mock
 * clock's; passes are held open with promises the test resolves.
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { startSerialInterval } from "../../src/daemon/compose/reaper.ts";
import { createMemoryLogger } from "../helpers/memory-logger.ts";

/** A task whose passes stay open until the test ends them. */
function heldTask() {
  const ends: Array<(error?: Error) => void> = [];
  return {
    ends,
    get passes() {
      return ends.length;
    },
    run: () =>
      new Promise<void>((resolve, reject) => {
        ends.push((error) => (error ? reject(error) : resolve()));
      }),
  };
}

const settle = () => new Promise<void>((resolve) => setImmediate(resolve));

describe("startSerialInterval", () => {
  it("runs a pass each interval and skips ticks while the previous pass runs", async (t) => {
    t.mock.timers.enable({ apis: ["setInterval"] });
    const task = heldTask();
    using _interval = startSerialInterval(task.run, 1000, createMemoryLogger());
    t.mock.timers.tick(999);
    assert.equal(task.passes, 0);
    t.mock.timers.tick(1);
    assert.equal(task.passes, 1);
    t.mock.timers.tick(3000);
    assert.equal(task.passes, 1, "ticks during a running pass are skipped");
    task.ends[0]?.();
    await settle();
    t.mock.timers.tick(1000);
    assert.equal(task.passes, 2);
    task.ends[1]?.();
  });

  it("logs a failing pass and runs the next one", async (t) => {
    t.mock.timers.enable({ apis: ["setInterval"] });
    const task = heldTask();
    const logger = createMemoryLogger();
    using _interval = startSerialInterval(task.run, 1000, logger.child({ task: "reaper" }));
    t.mock.timers.tick(1000);
    task.ends[0]?.(new Error("store is busy"));
    await settle();
    const warning = logger.lines.find((line) => line.level === "warn");
    assert.ok(warning, "the failure is logged");
    assert.match(String(warning.fields.err), /store is busy/);
    assert.equal(warning.fields.task, "reaper");
    t.mock.timers.tick(1000);
    assert.equal(task.passes, 2);
    task.ends[1]?.();
  });

  it("stops ticking once disposed", (t) => {
    t.mock.timers.enable({ apis: ["setInterval"] });
    const task = heldTask();
    const interval = startSerialInterval(task.run, 1000, createMemoryLogger());
    interval[Symbol.dispose]();
    t.mock.timers.tick(5000);
    assert.equal(task.passes, 0);
  });

  it("disposed asynchronously, waits for the pass in flight and starts no other", async (t) => {
    t.mock.timers.enable({ apis: ["setInterval"] });
    const task = heldTask();
    const interval = startSerialInterval(task.run, 1000, createMemoryLogger());
    t.mock.timers.tick(1000);
    let disposed = false;
    const disposing = interval[Symbol.asyncDispose]().then(() => {
      disposed = true;
    });
    await settle();
    assert.equal(disposed, false, "the running pass is awaited");
    task.ends[0]?.();
    await disposing;
    assert.equal(disposed, true);
    t.mock.timers.tick(5000);
    assert.equal(task.passes, 1);
  });
});
