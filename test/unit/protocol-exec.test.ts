/**
 * The exec contract's client notifications, as the daemon validates them:
 * `$/signal` carries only the signals the contract names, `$/resize` a
 * PTY size in range; progress steps come from the one list.
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { ProgressEvent, ResizeParams, SignalParams } from "../../src/protocol/index.ts";

describe("exec notifications", () => {
  it("$/signal accepts the contract's signals and refuses others", () => {
    for (const signal of [
      "SIGINT",
      "SIGTERM",
      "SIGHUP",
      "SIGKILL",
      "SIGQUIT",
      "SIGUSR1",
      "SIGUSR2",
      "SIGWINCH",
    ])
      assert.ok(SignalParams.safeParse({ id: 1, signal }).success, signal);
    assert.equal(SignalParams.safeParse({ id: 1, signal: "SIGSTOP" }).success, false);
    assert.equal(SignalParams.safeParse({ id: 1, signal: "kill -9" }).success, false);
  });

  it("$/resize takes whole cols and rows in range", () => {
    assert.ok(ResizeParams.safeParse({ id: "a", cols: 132, rows: 43 }).success);
    assert.equal(ResizeParams.safeParse({ id: 1, cols: -1, rows: 2 }).success, false);
    assert.equal(ResizeParams.safeParse({ id: 1, cols: 1.5, rows: 2 }).success, false);
    assert.equal(ResizeParams.safeParse({ id: 1, cols: 70000, rows: 2 }).success, false);
  });

  it("a progress event names a known step", () => {
    assert.ok(ProgressEvent.safeParse({ step: "vm.boot", message: "booting" }).success);
    assert.equal(ProgressEvent.safeParse({ step: "vm.made-up", message: "?" }).success, false);
  });
});
