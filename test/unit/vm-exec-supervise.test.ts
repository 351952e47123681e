import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { superviseExec } from "../../src/daemon/vm/exec.ts";
import { BangerError, ErrorCode, type ExecSignal } from "../../src/protocol/index.ts";
import type { AgentProcess, ExecResult } from "../../src/sys/agent/index.ts";

/** An agent process whose end the test decides; it records what was sent to it. */
function fakeProcess() {
  const sent: string[] = [];
  let finish!: (result: ExecResult) => void;
  let fail!: (error: Error) => void;
  const done = new Promise<ExecResult>((resolve, reject) => {
    finish = resolve;
    fail = reject;
  });
  const proc: AgentProcess = {
    done,
    kill: (signal) => {
      sent.push(`kill ${signal}`);
      if (signal === "SIGKILL") finish({ exitCode: null, signal: "SIGKILL" });
    },
    resize: (cols, rows) => sent.push(`resize ${cols}x${rows}`),
    close: () => {
      sent.push("close");
      fail(new BangerError(ErrorCode.CANCELLED, "the command was killed"));
    },
  };
  return { proc, sent, finish };
}

describe("superviseExec", () => {
  it("passes the client's signals and sizes to the process and returns its end", async () => {
    const { proc, sent, finish } = fakeProcess();
    let onSignal!: (signal: ExecSignal) => void;
    let onResize!: (size: { cols: number; rows: number }) => void;
    const result = superviseExec(proc, {
      argv: ["top"],
      control: { onSignal: (l) => (onSignal = l), onResize: (l) => (onResize = l) },
    });
    onSignal("SIGINT");
    onResize({ cols: 120, rows: 40 });
    finish({ exitCode: 130, signal: null });
    assert.deepEqual(await result, { exitCode: 130, signal: null });
    assert.deepEqual(sent, ["kill SIGINT", "resize 120x40"]);
  });

  it("kills the group at the timeout and says so", async () => {
    const { proc, sent } = fakeProcess();
    const result = await superviseExec(proc, { argv: ["sleep", "100"], timeoutMs: 20 });
    assert.deepEqual(result, { exitCode: null, signal: "SIGKILL", timedOut: true });
    assert.deepEqual(sent, ["kill SIGKILL"]);
  });

  it("closes the channel (killing the group) on cancel, also when cancelled before it ran", async () => {
    const { proc, sent } = fakeProcess();
    const controller = new AbortController();
    const result = superviseExec(proc, { argv: ["sleep", "100"], signal: controller.signal });
    controller.abort();
    await assert.rejects(result, (e: unknown) => e instanceof BangerError && e.code === ErrorCode.CANCELLED);
    assert.deepEqual(sent, ["close"]);

    const early = fakeProcess();
    await assert.rejects(
      superviseExec(early.proc, { argv: ["true"], signal: AbortSignal.abort() }),
      (e: unknown) => e instanceof BangerError && e.code === ErrorCode.CANCELLED,
    );
  });

  it("answers a detached exec at once without waiting for the process", async () => {
    const { proc, sent } = fakeProcess();
    assert.deepEqual(await superviseExec(proc, { argv: ["daemon"], detach: true }), {
      exitCode: null,
      signal: null,
    });
    assert.deepEqual(sent, []);
  });
});
