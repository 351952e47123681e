import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { cancelled, errorMessage, pollUntil, sleep, throwIfAborted } from "../../src/core/async/index.ts";
import { BangerError, ErrorCode, exitStatusFor, isCancelled } from "../../src/protocol/index.ts";

describe("cancelled", () => {
  it("is the CANCELLED BangerError naming what was cancelled, caused by the abort reason", () => {
    const controller = new AbortController();
    const reason = new Error("client went away");
    controller.abort(reason);
    const error = cancelled(controller.signal, "start of web");
    assert.ok(error instanceof BangerError);
    assert.equal(error.code, ErrorCode.CANCELLED);
    assert.equal(error.message, "start of web cancelled");
    assert.equal(error.cause, reason);
    assert.equal(exitStatusFor[error.code], 130);
    assert.ok(error.hint, "carries the default hint");
  });

  it("says just 'cancelled' without a subject, and takes an explicit cause over the signal's", () => {
    assert.equal(cancelled().message, "cancelled");
    assert.equal(cancelled().cause, undefined);
    const controller = new AbortController();
    controller.abort(new Error("signal reason"));
    const own = new Error("the step's own failure");
    assert.equal(cancelled(controller.signal, "step", { cause: own }).cause, own);
  });

  it("isCancelled tells CANCELLED apart from every other error", () => {
    assert.equal(isCancelled(cancelled()), true);
    assert.equal(isCancelled(new BangerError(ErrorCode.BOOT_FAILED, "boom")), false);
    assert.equal(isCancelled(new Error("cancelled")), false);
    assert.equal(isCancelled(undefined), false);
  });
});

describe("throwIfAborted", () => {
  it("does nothing for a live or missing signal and throws CANCELLED for an aborted one", () => {
    throwIfAborted(undefined);
    throwIfAborted(new AbortController().signal, "x");
    const controller = new AbortController();
    controller.abort("because");
    assert.throws(
      () => throwIfAborted(controller.signal, "image build"),
      (error: unknown) =>
        isCancelled(error) && error.message === "image build cancelled" && error.cause === "because",
    );
  });
});

describe("sleep", () => {
  it("resolves after the time when nothing aborts", async () => {
    assert.equal(await sleep(5, new AbortController().signal), undefined);
    assert.equal(await sleep(1), undefined);
  });

  it("rejects with CANCELLED as soon as the signal aborts, long before the time", async () => {
    const controller = new AbortController();
    const slept = sleep(60_000, controller.signal);
    controller.abort(new Error("stop"));
    await assert.rejects(
      slept,
      (error: unknown) => isCancelled(error) && (error.cause as Error).message === "stop",
    );
  });

  it("rejects at once for a signal that has already aborted", async () => {
    const controller = new AbortController();
    controller.abort();
    await assert.rejects(sleep(60_000, controller.signal), (error: unknown) => isCancelled(error));
  });
});

describe("pollUntil", () => {
  it("resolves true on the attempt where the check first holds", async () => {
    let calls = 0;
    const held = await pollUntil(
      () => {
        calls += 1;
        return calls === 3;
      },
      { timeoutMs: 60_000, intervalMs: 1 },
    );
    assert.equal(held, true);
    assert.equal(calls, 3);
  });

  it("accepts an async check", async () => {
    assert.equal(await pollUntil(async () => true, { timeoutMs: 0, intervalMs: 1 }), true);
  });

  it("resolves false once the time is up, having checked at least once", async () => {
    let calls = 0;
    const held = await pollUntil(
      () => {
        calls += 1;
        return false;
      },
      { timeoutMs: 20, intervalMs: 2 },
    );
    assert.equal(held, false);
    assert.ok(calls >= 2, `checked ${calls} times`);
  });

  it("rejects with CANCELLED when the signal aborts between attempts, and checks no more", async () => {
    const controller = new AbortController();
    let calls = 0;
    const polling = pollUntil(
      () => {
        calls += 1;
        if (calls === 2) controller.abort(new Error("user pressed ^C"));
        return false;
      },
      { timeoutMs: 60_000, intervalMs: 1, signal: controller.signal },
    );
    await assert.rejects(polling, (error: unknown) => isCancelled(error));
    assert.equal(calls, 2);
  });
});

describe("errorMessage", () => {
  it("is an Error's message and the string form of anything else", () => {
    assert.equal(errorMessage(new Error("disk full")), "disk full");
    assert.equal(
      errorMessage(new BangerError(ErrorCode.BAD_STATE, "VM 'web' is running")),
      "VM 'web' is running",
    );
    assert.equal(errorMessage("plain"), "plain");
    assert.equal(errorMessage(42), "42");
    assert.equal(errorMessage(undefined), "undefined");
  });
});
