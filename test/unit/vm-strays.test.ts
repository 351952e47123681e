/**
 * No VMM outlives what the store knows: a VMM whose pid never reached
 * handles.json (a daemon killed between spawn and record), a torn or missing
 * handles.json, a VM directory or row removed under a running VM. The fake
 * platform's census lists every live fake VMM, as /proc would.
 */
import assert from "node:assert/strict";
import { existsSync, rmSync, writeFileSync } from "node:fs";
import { describe, it } from "node:test";
import { KeyedLocks } from "../../src/core/concurrency/index.ts";
import { vmPaths } from "../../src/core/paths/index.ts";
import type { BootSpec } from "../../src/core/vmm/index.ts";
import { createVmService, type OpOptions } from "../../src/daemon/vm/index.ts";
import { createFakeVmPlatform, type HeldResource } from "../fakes/vm-platform/index.ts";

const HANG_GUARD = { timeout: 30_000 };
const options = (): OpOptions => ({ signal: new AbortController().signal, progress: () => {} });
const vmms = (held: HeldResource[]) => held.filter((resource) => resource.kind === "vmm");

/** What a start hands the driver; the fake VMM reads only the id and the control socket. */
function bootSpec(dir: string, vmId: string, vmName: string): BootSpec {
  return {
    vmId,
    vmName,
    cpus: 1,
    memoryMib: 256,
    kernel: "/k",
    initrd: null,
    kernelCmdline: "",
    disk: { path: `${dir}/root.qcow2`, format: "qcow2" },
    tap: "bgr-x",
    mac: "52:54:00:00:00:01",
    consoleLog: `${dir}/console.log`,
    vmmLog: `${dir}/vmm.log`,
    vmDir: dir,
  };
}

describe("VM service: stray VMMs", () => {
  it(
    "kills a VMM spawned by a daemon that died before recording it; the VM starts again",
    HANG_GUARD,
    async () => {
      await using platform = createFakeVmPlatform();
      const first = createVmService(platform.deps);
      const vm = await first.create({ name: "web", start: false }, options());
      // The daemon dies right after spawning the VMM: the row says starting, handles.json has no pid.
      const dir = vmPaths(platform.layout, vm.id).dir;
      await platform.deps.drivers
        .get("qemu")
        .start(bootSpec(dir, vm.id, "web"), new AbortController().signal);
      platform.store.setVmState(vm.id, "starting", null, new Date().toISOString());
      assert.equal(vmms(platform.held()).length, 1);

      const second = createVmService(platform.deps);
      const result = await second.reconcile();
      assert.deepEqual(result.demoted, ["web"]);
      assert.deepEqual(vmms(platform.held()), [], "the unrecorded VMM was killed");
      assert.equal((await second.show("web")).state, "stopped");
      const started = await second.start("web", options());
      assert.equal(started.state, "running");
      assert.equal(vmms(platform.held()).length, 1, "exactly the new VMM runs");
    },
  );

  for (const damage of ["missing", "corrupt"] as const) {
    it(`kills a live VMM whose handles.json is ${damage}, and the VM starts again`, HANG_GUARD, async () => {
      await using platform = createFakeVmPlatform();
      const first = createVmService(platform.deps);
      const vm = await first.create({ name: "web" }, options());
      const handles = vmPaths(platform.layout, vm.id).handles;
      if (damage === "missing") rmSync(handles);
      else writeFileSync(handles, '{"pid": 12');
      const second = createVmService(platform.deps);
      const result = await second.reconcile();
      assert.deepEqual(result.kept, []);
      assert.deepEqual(vmms(platform.held()), [], "no VMM left");
      assert.equal((await second.show("web")).state, "stopped");
      assert.equal((await second.start("web", options())).state, "running");
    });
  }

  it("kills the VMM of a VM whose row and directory were removed under it", HANG_GUARD, async () => {
    await using platform = createFakeVmPlatform();
    const first = createVmService(platform.deps);
    const vm = await first.create({ name: "web" }, options());
    const keep = await first.create({ name: "keep" }, options());
    rmSync(vmPaths(platform.layout, vm.id).dir, { recursive: true, force: true });
    platform.store.deleteVm(vm.id);
    const second = createVmService(platform.deps);
    const result = await second.reconcile();
    assert.deepEqual(result.kept, ["keep"]);
    assert.deepEqual(
      vmms(platform.held()).map((resource) => resource.id.split(" ")[0]),
      [keep.id],
      "only the kept VM's VMM runs",
    );
  });

  it("vm delete leaves no process, even when handles.json lost the pid", HANG_GUARD, async () => {
    await using platform = createFakeVmPlatform();
    const service = createVmService(platform.deps);
    const vm = await service.create({ name: "web" }, options());
    rmSync(vmPaths(platform.layout, vm.id).handles);
    // A fresh daemon has no cached handles either.
    await createVmService(platform.deps).delete("web");
    assert.deepEqual(vmms(platform.held()), []);
  });

  it(
    "starting a VM whose directory was removed names the missing disk, with a hint",
    HANG_GUARD,
    async () => {
      await using platform = createFakeVmPlatform();
      const service = createVmService(platform.deps);
      const vm = await service.create({ name: "web", start: false }, options());
      rmSync(vmPaths(platform.layout, vm.id).dir, { recursive: true, force: true });
      await assert.rejects(service.start("web", options()), (error: unknown) => {
        const message = (error as Error).message;
        assert.match(message, /the root disk of VM 'web' is missing/);
        assert.doesNotMatch(message, /ENOENT/);
        assert.match((error as { hint?: string }).hint ?? "", /banger vm delete web/);
        return true;
      });
    },
  );
});

describe("VM service: a create the daemon died in", () => {
  it("is removed at reconcile with everything it made, VMM included", HANG_GUARD, async () => {
    await using platform = createFakeVmPlatform();
    platform.boots.hold();
    const first = createVmService(platform.deps);
    const creating = first.create({ name: "web" }, options());
    await platform.events.waitFor("boot-start");
    // The daemon dies here (its client saw the connection drop: the create failed for the user).
    // A new daemon: its own locks, the same store and files.
    const vm = platform.store.getVmByName("web")!;
    const second = createVmService({ ...platform.deps, vmLocks: new KeyedLocks() });
    const result = await second.reconcile();
    assert.deepEqual(result.removed, ["web"]);
    assert.equal(platform.store.getVmByName("web"), undefined);
    assert.equal(existsSync(vmPaths(platform.layout, vm.id).dir), false);
    assert.deepEqual(platform.heldBy(vm.id), [], "tap, disk and hooks released");
    platform.boots.releaseAll();
    await creating.catch(() => undefined);
  });
});

describe("VM service: a VM that goes away under a command", () => {
  it("vm logs -f ends with VM_NOT_FOUND once its VM is deleted", HANG_GUARD, async () => {
    await using platform = createFakeVmPlatform();
    const service = createVmService(platform.deps);
    await service.create({ name: "web" }, options());
    const following = service.logs("web", {
      follow: true,
      tailBytes: 1024,
      signal: new AbortController().signal,
      onData: async () => {},
    });
    await service.delete("web");
    await assert.rejects(following, (error: unknown) => {
      assert.match((error as Error).message, /VM 'web' was deleted/);
      return (error as { code?: string }).code === "VM_NOT_FOUND";
    });
  });

  it("an exec whose VM stopped under it says so instead of exiting 255 silently", HANG_GUARD, async () => {
    await using platform = createFakeVmPlatform();
    let stopUnderIt: () => void = () => {};
    const service = createVmService({
      ...platform.deps,
      guest: {
        ...platform.deps.guest,
        async exec(target, exec) {
          if (exec.argv[0] !== "long-running") return platform.deps.guest.exec(target, exec);
          stopUnderIt();
          return { exitCode: 255, signal: null };
        },
      },
    });
    const vm = await service.create({ name: "web" }, options());
    stopUnderIt = () =>
      platform.store.setVmState(vm.id, "stopped", "the guest powered off", new Date().toISOString());
    await assert.rejects(service.exec("web", { argv: ["long-running"] }), (error: unknown) => {
      assert.match((error as Error).message, /VM 'web' stopped \(it is stopped\) while the command ran/);
      return (error as { code?: string }).code === "BAD_STATE";
    });
  });
});
