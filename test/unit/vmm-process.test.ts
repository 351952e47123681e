/**
 * The VMM process module on real, short-lived processes: a detached spawn
 * whose liveness, signal-and-wait and kill-and-wait are decided through
 * /proc exactly as for QEMU and Firecracker.
 */
import assert from "node:assert/strict";
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import type { VmmHandle } from "../../src/core/vmm/index.ts";
import { ErrorCode, isBangerError } from "../../src/protocol/index.ts";
import {
  isVmmRunning,
  killAndWait,
  signalAndWait,
  spawnDetachedVmm,
  vmmLiveness,
} from "../../src/sys/vmm/process.ts";
import { makeTempDir } from "../helpers/tmp.ts";

async function waitForLog(path: string, text: string): Promise<void> {
  for (let i = 0; i < 500; i++) {
    if ((await readFile(path, "utf8")).includes(text)) return;
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
  assert.fail(`${path} never showed '${text}'`);
}

/** A node process that prints, then idles until signalled; `marker` stands in for the control socket. */
function idler(marker: string, script = "console.log('up'); setInterval(() => {}, 1000)"): string[] {
  return [process.execPath, "-e", script, marker];
}

describe("VMM process", () => {
  let dir: string;
  let cleanup: () => void;
  const spawned: number[] = [];

  before(() => {
    ({ path: dir, cleanup } = makeTempDir("vmm-process-"));
  });
  after(() => {
    for (const pid of spawned) {
      try {
        process.kill(pid, "SIGKILL");
      } catch {}
    }
    cleanup();
  });

  async function start(name: string, script?: string) {
    const marker = join(dir, `${name}.sock`);
    const log = join(dir, `${name}.log`);
    const vmm = await spawnDetachedVmm({ argv: idler(marker, script), stdout: log, stderr: log });
    spawned.push(vmm.pid);
    const handle: VmmHandle = { pid: vmm.pid, pidStartTicks: vmm.startTicks, controlSocket: marker };
    return { vmm, handle, log };
  }

  it("spawns detached, records start ticks and appends output to the log", async () => {
    const { vmm, handle, log } = await start("a");
    assert.ok(vmm.startTicks > 0);
    assert.equal(await vmmLiveness(handle), "alive");
    assert.equal(await isVmmRunning(handle), true);
    assert.equal(vmm.exited.aborted, false);
    assert.equal(vmm.exitDescription(), "is still running");
    await waitForLog(log, "up");
    assert.equal(await signalAndWait(handle, "SIGKILL", 10_000), true);
  });

  it("a handle whose start ticks or marker differ is foreign, never ours", async () => {
    const { handle } = await start("b");
    assert.equal(await vmmLiveness({ ...handle, pidStartTicks: handle.pidStartTicks + 1 }), "foreign");
    assert.equal(await vmmLiveness({ ...handle, controlSocket: join(dir, "other.sock") }), "foreign");
    assert.equal(
      await signalAndWait({ ...handle, controlSocket: join(dir, "other.sock") }, "SIGKILL", 1000),
      true,
      "a foreign process counts as gone",
    );
    assert.equal(await vmmLiveness(handle), "alive", "and is not signalled");
    await killAndWait(handle, 10_000);
  });

  it("signalAndWait sends the signal and reports whether the process went in time", async () => {
    const { vmm, handle, log } = await start(
      "c",
      "process.on('SIGTERM', () => {}); console.log('deaf'); setInterval(() => {}, 1000)",
    );
    await waitForLog(log, "deaf");
    assert.equal(await signalAndWait(handle, "SIGTERM", 300), false, "an ignored SIGTERM leaves it running");
    assert.equal(await isVmmRunning(handle), true);
    assert.equal(await signalAndWait(handle, "SIGINT", 10_000), true);
    assert.equal(await isVmmRunning(handle), false);
    for (let i = 0; i < 100 && !vmm.exited.aborted; i++)
      await new Promise((resolve) => setTimeout(resolve, 20));
    assert.equal(vmm.exited.aborted, true);
    assert.equal(vmm.exitDescription(), "was killed by SIGINT");
  });

  it("killAndWait ends the process and is a no-op once it is gone", async () => {
    const { handle } = await start("d");
    await killAndWait(handle, 10_000);
    assert.equal(await isVmmRunning(handle), false);
    await killAndWait(handle, 10_000);
    assert.equal(await signalAndWait(handle, "SIGTERM", 10), true);
  });

  it("reports a process that exits on its own through `exited`", async () => {
    const { vmm } = await start("e", "process.exit(3)");
    for (let i = 0; i < 250 && !vmm.exited.aborted; i++)
      await new Promise((resolve) => setTimeout(resolve, 20));
    assert.equal(vmm.exited.aborted, true);
    assert.equal(vmm.exitDescription(), "exited with status 3");
  });

  it("a missing binary is TOOL_MISSING and leaves nothing running", async () => {
    const log = join(dir, "missing.log");
    await assert.rejects(
      spawnDetachedVmm({ argv: ["banger-no-such-vmm", "x"], stdout: log, stderr: log }),
      (error: unknown) =>
        isBangerError(error) &&
        error.code === ErrorCode.TOOL_MISSING &&
        /banger-no-such-vmm/.test(error.message),
    );
  });
});
