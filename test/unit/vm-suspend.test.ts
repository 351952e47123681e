/**
 * Suspend to disk through the VM service on the fake platform: a suspend
 * saves the state, ends the VMM and gives back its runtime; a resume (or an
 * exec, or a start) restores it and removes the state; a stop discards it.
 * A fault at any step of a suspend leaves the VM as it was with no saved
 * state; one at any step of a resume leaves it suspended with its state
 * whole, and a retry resumes it.
 */
import assert from "node:assert/strict";
import { existsSync } from "node:fs";
import { join } from "node:path";
import { describe, it, type TestContext } from "node:test";
import { vmPaths } from "../../src/core/paths/index.ts";
import { tapNameForVmId } from "../../src/core/vm/index.ts";
import { createVmService } from "../../src/daemon/vm/index.ts";
import { ErrorCode } from "../../src/protocol/index.ts";
import { createFakeVmPlatform, type FakeVmPlatform } from "../fakes/vm-platform/index.ts";

const HANG_GUARD = { timeout: 60_000 };
const op = () => ({ signal: new AbortController().signal, progress: () => {} });

function world() {
  const platform = createFakeVmPlatform({ overrides: { restoreReadiness: [] } });
  const vms = createVmService(platform.deps);
  return { platform, vms, [Symbol.asyncDispose]: () => platform.close() };
}

const savedState = (platform: FakeVmPlatform, vmId: string) =>
  join(vmPaths(platform.layout, vmId).dir, "suspended");

/** Resources the VM holds on the host (tap, VMM, disk devices, hooks). */
const heldBy = (platform: FakeVmPlatform, vmId: string) =>
  platform
    .held()
    .filter(
      (r) => (r.id.includes(vmId) || r.id === tapNameForVmId(vmId)) && r.kind !== "dir" && r.kind !== "disk",
    );

describe("suspend to disk on the fake platform", () => {
  it("suspends, resumes by resume, exec and start, and a stop discards the state", HANG_GUARD, async () => {
    await using w = world();
    const { platform, vms } = w;
    const vm = await vms.create({ name: "s" }, op());
    assert.equal((await vms.suspend("s", op())).state, "suspended");
    assert.ok(existsSync(join(savedState(platform, vm.id), "manifest.json")), "the state is saved");
    assert.deepEqual(heldBy(platform, vm.id), [], "a suspended VM holds no VMM, tap or hook");
    await assert.rejects(vms.suspend("s", op()), /only a running or paused VM can be suspended/);

    assert.equal((await vms.resume("s", op())).state, "running");
    assert.equal(existsSync(savedState(platform, vm.id)), false, "a resume removes the state");

    await vms.suspend("s", op());
    const result = await vms.exec("s", { argv: ["true"] });
    assert.equal(result.exitCode, 0);
    assert.equal((await vms.show("s")).state, "running", "an exec woke it");

    await vms.suspend("s", op());
    assert.equal((await vms.start("s", op())).state, "running", "a start resumes it");

    await vms.suspend("s", op());
    const stopped = await vms.stop("s", op());
    assert.equal(stopped.state, "stopped");
    assert.equal(existsSync(savedState(platform, vm.id)), false, "a stop discards the state");
  });

  it("reconcile keeps a suspended VM suspended and demotes one whose state is gone", HANG_GUARD, async () => {
    await using w = world();
    const { platform, vms } = w;
    await vms.create({ name: "kept" }, op());
    const lost = await vms.create({ name: "lost" }, op());
    await vms.suspend("kept", op());
    await vms.suspend("lost", op());
    await platform.deps.files.removeDir(savedState(platform, lost.id));
    const fresh = createVmService(platform.deps);
    await fresh.reconcile();
    assert.equal((await fresh.show("kept")).state, "suspended");
    const demoted = await fresh.show("lost");
    assert.equal(demoted.state, "stopped");
    assert.match(demoted.lastError ?? "", /suspended state was missing/);
    assert.equal((await fresh.resume("kept", op())).state, "running");
  });
});

describe("suspend to disk: faults at every step", () => {
  async function eachStep(t: TestContext, run: (k: number) => Promise<"failed" | "succeeded">) {
    for (let k = 1; k <= 200; k++) {
      let outcome: "failed" | "succeeded" | undefined;
      await t.test(`step ${k}`, async () => {
        outcome = await run(k);
      });
      if (outcome === "succeeded") return k - 1;
    }
    throw new Error("still failing after 200 steps");
  }

  it("a failed suspend leaves the VM running with no saved state", HANG_GUARD, async (t) => {
    const failed = await eachStep(t, async (k) => {
      await using w = world();
      const { platform, vms } = w;
      const vm = await vms.create({ name: "s" }, op());
      platform.resetSteps();
      platform.failAt(k, ErrorCode.INTERNAL);
      const outcome = await vms.suspend("s", op()).then(
        () => "succeeded" as const,
        () => "failed" as const,
      );
      if (platform.injected === null) return "succeeded";
      const state = (await vms.show("s")).state;
      if (outcome === "succeeded") {
        // Past the VMM's end the VM is suspended; what it held is released or logged.
        assert.equal(state, "suspended");
        assert.ok(existsSync(join(savedState(platform, vm.id), "manifest.json")));
        return "failed";
      }
      assert.equal(state, "running", `after a fault at ${platform.injected.step}`);
      assert.equal(existsSync(savedState(platform, vm.id)), false, "no saved state");
      assert.equal(existsSync(`${savedState(platform, vm.id)}.partial`), false, "no staging directory");
      return "failed";
    });
    assert.ok(failed >= 4, `a suspend has several steps (${failed})`);
  });

  it(
    "a failed resume leaves the VM suspended with its state, and a retry resumes it",
    HANG_GUARD,
    async (t) => {
      const failed = await eachStep(t, async (k) => {
        await using w = world();
        const { platform, vms } = w;
        const vm = await vms.create({ name: "s" }, op());
        await vms.suspend("s", op());
        platform.resetSteps();
        platform.failAt(k, ErrorCode.BOOT_FAILED);
        const outcome = await vms.resume("s", op()).then(
          () => "succeeded" as const,
          () => "failed" as const,
        );
        if (platform.injected === null) return "succeeded";
        if (outcome === "succeeded") return "failed";
        assert.equal((await vms.show("s")).state, "suspended", `after a fault at ${platform.injected.step}`);
        assert.ok(existsSync(join(savedState(platform, vm.id), "manifest.json")), "the state is whole");
        assert.deepEqual(heldBy(platform, vm.id), [], "everything the resume acquired was undone");
        assert.equal((await vms.resume("s", op())).state, "running", "a retry resumes it");
        return "failed";
      });
      assert.ok(failed > 6, `a resume has many steps (${failed})`);
    },
  );
});
