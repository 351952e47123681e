import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { cancelled } from "../../src/core/async/index.ts";
import { KeyedLocks, Mutex, OperationRegistry } from "../../src/core/concurrency/index.ts";
import { BangerError, ErrorCode, isCancelled } from "../../src/protocol/index.ts";

const tick = () => new Promise((resolve) => setImmediate(resolve));

describe("Mutex", () => {
  it("serialises callers in FIFO order across awaits", async () => {
    const mutex = new Mutex();
    const events: string[] = [];
    const task = (name: string) =>
      mutex.run(async () => {
        events.push(`${name}:in`);
        await tick();
        await tick();
        events.push(`${name}:out`);
      });
    await Promise.all([task("a"), task("b"), task("c")]);
    assert.deepEqual(events, ["a:in", "a:out", "b:in", "b:out", "c:in", "c:out"]);
    assert.equal(mutex.locked, false);
  });

  it("releases when the callback throws", async () => {
    const mutex = new Mutex();
    await assert.rejects(
      mutex.run(() => Promise.reject(new Error("boom"))),
      /boom/,
    );
    assert.equal(mutex.locked, false);
    assert.equal(await mutex.run(() => 7), 7);
  });
});

describe("KeyedLocks", () => {
  it("serialises one key while different keys overlap", async () => {
    const locks = new KeyedLocks();
    const events: string[] = [];
    let releaseA!: () => void;
    const gateA = new Promise<void>((resolve) => {
      releaseA = resolve;
    });
    const first = locks.run("a", async () => {
      events.push("a1:in");
      await gateA;
      events.push("a1:out");
    });
    const second = locks.run("a", async () => {
      events.push("a2:in");
    });
    const other = locks.run("b", async () => {
      events.push("b:in");
    });
    await other;
    assert.deepEqual(events, ["a1:in", "b:in"], "b ran while a1 held key a; a2 waits");
    assert.equal(locks.isLocked("a"), true);
    releaseA();
    await Promise.all([first, second]);
    assert.deepEqual(events, ["a1:in", "b:in", "a1:out", "a2:in"]);
    assert.equal(locks.size, 0, "idle entries are dropped");
  });
});

describe("OperationRegistry", () => {
  function registry(now = () => new Date("2026-01-01T00:00:00Z")) {
    let next = 0;
    return new OperationRegistry<string>({ now, newId: () => `op${++next}`, retainMs: 1000 });
  }

  it("runs in the background and reports step and result", async () => {
    const ops = registry();
    let release!: () => void;
    const gate = new Promise<void>((resolve) => {
      release = resolve;
    });
    const begun = ops.begin("vm.create", "web", async (ctx) => {
      ctx.report("vm.boot", "booting");
      await gate;
      return "done";
    });
    assert.equal(begun.state, "running");
    await tick();
    assert.equal(ops.get(begun.id)?.step, "vm.boot");
    release();
    const finished = await ops.wait(begun.id, 1000);
    assert.equal(finished?.state, "succeeded");
    assert.equal(finished?.result, "done");
  });

  it("cancel aborts the signal and waits for unwinding", async () => {
    const ops = registry();
    const unwound: string[] = [];
    const begun = ops.begin("vm.create", "web", async (ctx) => {
      await new Promise((_, reject) => ctx.signal.addEventListener("abort", () => reject(ctx.signal.reason)));
      return "never";
    });
    const begun2 = ops.begin("vm.create", "x", async (ctx) => {
      try {
        await new Promise((_, reject) =>
          ctx.signal.addEventListener("abort", () => reject(ctx.signal.reason)),
        );
        return "never";
      } finally {
        unwound.push("x");
      }
    });
    const cancelled = await ops.cancel(begun.id);
    assert.equal(cancelled?.state, "cancelled");
    await ops.cancelAll();
    assert.deepEqual(unwound, ["x"]);
    assert.equal(ops.get(begun2.id)?.state, "cancelled");
    assert.equal(ops.running, 0);
  });

  it("cancel aborts with the CANCELLED error, which the snapshot keeps", async () => {
    const ops = registry();
    const begun = ops.begin("vm.create", "web", async (ctx) => {
      await new Promise((_, reject) => ctx.signal.addEventListener("abort", () => reject(ctx.signal.reason)));
      return "never";
    });
    const snapshot = await ops.cancel(begun.id);
    assert.equal(snapshot?.state, "cancelled");
    assert.ok(isCancelled(snapshot?.error), `expected CANCELLED, got ${String(snapshot?.error)}`);
    assert.match(String(snapshot?.error), new RegExp(`operation ${begun.id} cancelled`));
  });

  it("counts work that rejects with CANCELLED on its own as cancelled, and other errors as failed", async () => {
    const ops = registry();
    const own = ops.begin("k", null, async () => {
      throw cancelled(undefined, "an inner step");
    });
    assert.equal((await ops.wait(own.id, 1000))?.state, "cancelled");
    const other = ops.begin("k", null, async () => {
      throw new BangerError(ErrorCode.BOOT_FAILED, "boom");
    });
    assert.equal((await ops.wait(other.id, 1000))?.state, "failed");
  });

  it("prunes finished operations past the retention window", async () => {
    let now = new Date("2026-01-01T00:00:00Z");
    const ops = registry(() => now);
    const begun = ops.begin("k", null, async () => "x");
    await ops.wait(begun.id, 100);
    now = new Date(now.getTime() + 5000);
    assert.equal(ops.prune(), 1);
    assert.equal(ops.get(begun.id), undefined);
  });

  it("marks a failed operation failed with its error", async () => {
    const ops = registry();
    const begun = ops.begin("k", null, async () => {
      throw new Error("nope");
    });
    const finished = await ops.wait(begun.id, 100);
    assert.equal(finished?.state, "failed");
    assert.match(String(finished?.error), /nope/);
  });
});
