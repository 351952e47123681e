/**
 * VM service lifecycle on the fake platform (test/fakes/vm-platform/):
 * every acquisition is undone when an operation fails or is cancelled at any
 * step, lifecycle ops on one VM serialise while different VMs overlap, and a
 * name race has exactly one winner. Everything is asserted on the platform's
 * ordered event log and resource ledger, never on time.
 */
import assert from "node:assert/strict";
import { existsSync, readdirSync } from "node:fs";
import { describe, it, type TestContext } from "node:test";
import { vmPaths } from "../../src/core/paths/index.ts";
import { createVmService, type OpOptions, type VmService } from "../../src/daemon/vm/index.ts";
import { ErrorCode } from "../../src/protocol/index.ts";
import {
  createFakeVmPlatform,
  describeEvents,
  type FakeVmPlatform,
  type HeldResource,
  indexOf,
} from "../fakes/vm-platform/index.ts";
import { isBangerError, rejectsWithCode } from "../helpers/assert.ts";

/** Bounds a test that would otherwise hang (e.g. boots that never overlap); not a timing assertion. */
const HANG_GUARD = { timeout: 30_000 };
/** More steps than any operation has; the loops stop at the first success long before. */
const MAX_STEPS = 200;

const options = (signal: AbortSignal = new AbortController().signal): OpOptions => ({
  signal,
  progress: () => {},
});

async function withPlatform<T>(
  body: (platform: FakeVmPlatform, service: VmService) => Promise<T>,
): Promise<T> {
  await using platform = createFakeVmPlatform();
  // Awaited here, so the platform is disposed only after the body is done.
  return await body(platform, createVmService(platform.deps));
}

/** Lets every pending callback and microtask run once (no timers). */
async function flush(turns = 5): Promise<void> {
  for (let i = 0; i < turns; i++) await new Promise((resolve) => setImmediate(resolve));
}

function assertNoErrorsLogged(platform: FakeVmPlatform): void {
  const errors = platform.logLines.filter((line) => line.level === "error");
  assert.deepEqual(errors, [], "no undo step failed");
}

/** Nothing of a failed create is left: no resource, no row, no VM directory. */
function assertCreateLeftNothing(platform: FakeVmPlatform): void {
  assert.deepEqual(platform.held(), [], "every acquisition was undone");
  assert.deepEqual(platform.store.listVms(), [], "the row is gone");
  assert.deepEqual(readdirSync(platform.layout.vmsDir), [], "the VM directory is gone");
  assertNoErrorsLogged(platform);
}

/** The step names of one successful run of `op` on a fresh platform (the forward path). */
async function forwardSteps(op: (platform: FakeVmPlatform, service: VmService) => Promise<void>) {
  return withPlatform(async (platform, service) => {
    await op(platform, service);
    const steps = [...platform.steps];
    assert.equal(platform.injected, null);
    return steps;
  });
}

/** Step names with "#n" added to the n-th (n >= 2) call of the same name, e.g. "files.writeHandles#2". */
function labelSteps(steps: readonly string[]): string[] {
  const seen = new Map<string, number>();
  return steps.map((step) => {
    const n = (seen.get(step) ?? 0) + 1;
    seen.set(step, n);
    return n === 1 ? step : `${step}#${n}`;
  });
}

/**
 * Runs `attempt` with a fault or cancel armed at k = 1, 2, … until the
 * operation succeeds, one subtest per k (a failing subtest fails the
 * suite, and the loop goes on to the next k).
 * Returns how many steps failed before the first success.
 */
async function eachStep(
  t: TestContext,
  steps: readonly string[],
  attempt: (k: number, step: string) => Promise<"failed" | "succeeded">,
): Promise<number> {
  const labels = labelSteps(steps);
  for (let k = 1; k <= MAX_STEPS; k++) {
    const label = labels[k - 1] ?? "(none: the op should succeed)";
    let outcome: "failed" | "succeeded" | undefined;
    await t.test(`step ${k}: ${label}`, async () => {
      outcome = await attempt(k, steps[k - 1] ?? "");
    });
    if (outcome === "succeeded") return k - 1;
  }
  throw new Error(`the operation still failed after ${MAX_STEPS} injected steps`);
}

/** Held resources other than the given kinds. */
function except(held: HeldResource[], ...kinds: HeldResource["kind"][]): HeldResource[] {
  return held.filter((resource) => !kinds.includes(resource.kind));
}

describe("VM service: faults at every step", () => {
  it("create (with start) undoes every acquisition when any step fails", HANG_GUARD, async (t) => {
    const create = (service: VmService) => service.create({ name: "web" }, options());
    const steps = await forwardSteps(async (_platform, service) => void (await create(service)));
    const failed = await eachStep(t, steps, async (k, step) => {
      await using platform = createFakeVmPlatform();
      const service = createVmService(platform.deps);
      platform.failAt(k, ErrorCode.NETWORK_FAILED);
      const error = await create(service).then(
        () => undefined,
        (caught: unknown) => caught,
      );
      if (platform.injected === null) {
        assert.equal(error, undefined, "no fault fired, so create succeeded");
        assert.equal(platform.store.getVmByName("web")?.state, "running");
        return "succeeded";
      }
      assert.equal(platform.injected.step, step, "the same forward path as the dry run");
      assert.ok(
        isBangerError(error, ErrorCode.NETWORK_FAILED),
        `create failed with the injected code: ${error}`,
      );
      assert.ok(
        error.message.includes(`injected fault at step ${k} (${step})`),
        `the message names the failed step: ${error.message}`,
      );
      assertCreateLeftNothing(platform);
      return "failed";
    });
    assert.equal(failed, steps.length, "every forward step was made to fail once");
    assert.ok(failed > 5, `create has more than 5 steps (it has ${failed})`);
  });

  it("start of a stopped VM undoes every acquisition and marks it error", HANG_GUARD, async (t) => {
    const prepare = async (platform: FakeVmPlatform, service: VmService) => {
      const vm = await service.create({ name: "web", start: false }, options());
      return { vm, before: platform.held() };
    };
    const steps = await forwardSteps(async (platform, service) => {
      await prepare(platform, service);
      platform.resetSteps();
      await service.start("web", options());
    });
    const failed = await eachStep(t, steps, async (k, step) => {
      await using platform = createFakeVmPlatform();
      const service = createVmService(platform.deps);
      const { vm, before } = await prepare(platform, service);
      assert.deepEqual(before.length, 2, `a stopped VM holds its dir and disk: ${before.join(", ")}`);
      platform.failAt(k, ErrorCode.NETWORK_FAILED);
      const error = await service.start("web", options()).then(
        () => undefined,
        (caught: unknown) => caught,
      );
      if (platform.injected === null) {
        assert.equal(error, undefined);
        assert.equal(platform.store.getVmByName("web")?.state, "running");
        return "succeeded";
      }
      assert.equal(platform.injected.step, step);
      assert.ok(
        isBangerError(error, ErrorCode.NETWORK_FAILED),
        `start failed with the injected code: ${error}`,
      );
      assert.match(error.message, /VM 'web' failed to start: injected fault at step/);
      assert.deepEqual(platform.held(), before, "only the stopped VM's dir and disk remain");
      const row = platform.store.getVmByName("web");
      assert.equal(row?.state, "error");
      assert.match(row?.lastError ?? "", /injected fault at step/, "last_error says why");
      assert.equal((await service.show("web")).pid, null, "no cached handles");
      assert.equal(existsSync(vmPaths(platform.layout, vm.id).handles), false, "no handles.json");
      assertNoErrorsLogged(platform);
      // Nothing left behind blocks a retry.
      platform.resetSteps();
      assert.equal((await service.start("web", options())).state, "running");
      return "failed";
    });
    assert.equal(failed, steps.length);
    assert.ok(failed > 5, `start has more than 5 steps (it has ${failed})`);
  });
});

describe("VM service: cancel", () => {
  it("a cancel during any create step unwinds everything with CANCELLED", HANG_GUARD, async (t) => {
    const create = (service: VmService, signal?: AbortSignal) =>
      service.create({ name: "web" }, options(signal));
    const steps = await forwardSteps(async (_platform, service) => void (await create(service)));
    const cancelled = await eachStep(t, steps, async (k, step) => {
      await using platform = createFakeVmPlatform();
      const service = createVmService(platform.deps);
      const controller = new AbortController();
      platform.cancelAt(k, controller);
      const error = await create(service, controller.signal).then(
        () => undefined,
        (caught: unknown) => caught,
      );
      if (platform.injected === null) {
        assert.equal(error, undefined);
        return "succeeded";
      }
      assert.equal(platform.injected.step, step);
      assert.ok(isBangerError(error, ErrorCode.CANCELLED), `create ended with CANCELLED: ${error}`);
      assertCreateLeftNothing(platform);
      return "failed";
    });
    assert.equal(cancelled, steps.length);
    assert.ok(cancelled > 5);
  });

  it(
    "a cancel during any boot step of a stopped VM unwinds the boot and leaves it in error",
    HANG_GUARD,
    async (t) => {
      const steps = await forwardSteps(async (platform, service) => {
        await service.create({ name: "web", start: false }, options());
        platform.resetSteps();
        await service.start("web", options());
      });
      const cancelled = await eachStep(t, steps, async (k, step) => {
        await using platform = createFakeVmPlatform();
        const service = createVmService(platform.deps);
        await service.create({ name: "web", start: false }, options());
        const before = platform.held();
        const controller = new AbortController();
        platform.cancelAt(k, controller);
        const error = await service.start("web", options(controller.signal)).then(
          () => undefined,
          (caught: unknown) => caught,
        );
        if (platform.injected === null) {
          assert.equal(error, undefined);
          return "succeeded";
        }
        assert.equal(platform.injected.step, step);
        assert.ok(isBangerError(error, ErrorCode.CANCELLED), `start ended with CANCELLED: ${error}`);
        assert.deepEqual(platform.held(), before, "only the stopped VM's dir and disk remain");
        const row = platform.store.getVmByName("web");
        assert.equal(row?.state, "error");
        assert.equal(row?.lastError, "cancelled");
        assertNoErrorsLogged(platform);
        return "failed";
      });
      assert.equal(cancelled, steps.length);
      assert.ok(cancelled > 5);
    },
  );
});

describe("VM service: concurrency", () => {
  it("10 creates of different names boot in parallel", HANG_GUARD, async () => {
    await withPlatform(async (platform, service) => {
      platform.boots.hold();
      const names = Array.from({ length: 10 }, (_, i) => `vm-${i}`);
      const creates = names.map((name) => service.create({ name }, options()));
      await platform.events.waitFor("boot-start", 10);
      assert.equal(platform.events.count("boot-end"), 0, "no boot ended while all were held");
      platform.boots.releaseAll();
      const infos = await Promise.all(creates);
      const events = platform.events.all;
      const lastStart = events.findLastIndex((event) => event.kind === "boot-start");
      const firstEnd = indexOf(events, "boot-end");
      assert.ok(lastStart < firstEnd, "all 10 boots started before any ended");
      assert.deepEqual(
        infos.map((info) => info.state),
        names.map(() => "running"),
      );
      const rows = platform.store.listVms();
      assert.equal(rows.length, 10);
      assert.ok(rows.every((row) => row.state === "running"));
      assert.equal(new Set(rows.map((row) => row.guestIp)).size, 10, "distinct guest IPs");
    });
  });

  it("10 creates racing for one name: one wins, 9 get NAME_TAKEN, nothing leaks", HANG_GUARD, async () => {
    await withPlatform(async (platform, service) => {
      const results = await Promise.allSettled(
        Array.from({ length: 10 }, () => service.create({ name: "same" }, options())),
      );
      const winners = results.filter((result) => result.status === "fulfilled");
      const losers = results.filter((result) => result.status === "rejected");
      assert.equal(winners.length, 1);
      assert.equal(losers.length, 9);
      for (const loser of losers) {
        assert.ok(isBangerError(loser.reason, ErrorCode.NAME_TAKEN), `loser got NAME_TAKEN: ${loser.reason}`);
      }
      const winner = winners[0]!.value;
      assert.deepEqual(
        platform.store.listVms().map((row) => row.id),
        [winner.id],
      );
      assert.deepEqual(readdirSync(platform.layout.vmsDir), [winner.id]);
      assert.ok(platform.held().length > 0);
      assert.deepEqual(platform.held(), platform.heldBy(winner.id), "everything held is the winner's");
      assert.equal(
        platform.events.of(winner.id).filter((event) => event.kind === "boot-start").length,
        platform.events.count("boot-start"),
        "the one boot was the winner's",
      );
      for (const kind of ["dir-make", "disk-create", "tap-create", "boot-start"] as const) {
        assert.equal(platform.events.count(kind), 1, `one ${kind}: the losers acquired nothing`);
      }
    });
  });

  it("stop then start of one VM run one after the other", HANG_GUARD, async () => {
    await withPlatform(async (platform, service) => {
      const vm = await service.create({ name: "one" }, options());
      const handlesFile = vmPaths(platform.layout, vm.id).handles;
      platform.stops.hold();
      const stopping = service.stop("one", options());
      await platform.events.waitFor({ kind: "stop-begin", vmId: vm.id });
      const mark = platform.events.mark();
      const starting = service.start("one", options());
      await flush();
      assert.deepEqual(platform.events.since(mark), [], "start did nothing while stop held the VM");
      assert.equal(platform.deps.vmLocks.isLocked(vm.id), true);
      platform.stops.releaseAll();
      assert.equal((await stopping).state, "stopped");
      assert.equal((await starting).state, "running");
      const after = platform.events.since(mark);
      const stopDone = indexOf(after, { kind: "handles-remove", path: handlesFile });
      const startBegan = indexOf(after, "bridge-ensure");
      assert.ok(indexOf(after, { kind: "vmm-stop", vmId: vm.id }) >= 0, "stop ended the VMM");
      assert.ok(stopDone >= 0, `stop removed the handles: ${describeEvents(after)}`);
      assert.ok(
        startBegan > stopDone,
        `start's first event came after stop finished: ${describeEvents(after)}`,
      );
    });
  });

  it("starts of two different VMs overlap", HANG_GUARD, async () => {
    await withPlatform(async (platform, service) => {
      const a = await service.create({ name: "a", start: false }, options());
      const b = await service.create({ name: "b", start: false }, options());
      platform.boots.hold();
      const starts = [service.start("a", options()), service.start("b", options())];
      await platform.events.waitFor({ kind: "boot-start", vmId: a.id });
      await platform.events.waitFor({ kind: "boot-start", vmId: b.id });
      assert.equal(platform.events.count("boot-end"), 0, "both boots began before either ended");
      platform.boots.releaseAll();
      const infos = await Promise.all(starts);
      assert.deepEqual(
        infos.map((info) => info.state),
        ["running", "running"],
      );
    });
  });
});

describe("VM service: capability hooks, reaper, set", () => {
  it("stop runs every hook's stop in reverse order of start", HANG_GUARD, async () => {
    await withPlatform(async (platform, service) => {
      const vm = await service.create({ name: "hooked" }, options());
      assert.deepEqual(platform.events.filter("hook-start"), [
        { kind: "hook-start", hook: "fake-net", vmId: vm.id },
        { kind: "hook-start", hook: "fake-auth", vmId: vm.id },
      ]);
      const mark = platform.events.mark();
      await service.stop("hooked", options());
      const stopped = platform.events.since(mark).filter((event) => event.kind === "hook-stop");
      assert.deepEqual(stopped, [
        { kind: "hook-stop", hook: "fake-auth", vmId: vm.id },
        { kind: "hook-stop", hook: "fake-net", vmId: vm.id },
      ]);
      assert.deepEqual(
        platform.heldBy(vm.id).filter((resource) => resource.kind === "hook"),
        [],
      );
    });
  });

  it(
    "the reaper demotes a VM whose VMM died, with the reason, and releases what it held",
    HANG_GUARD,
    async () => {
      const dead = new Set<number>();
      await using platform = createFakeVmPlatform({ isRunning: async (handle) => !dead.has(handle.pid) });
      const service = createVmService(platform.deps);
      const doomed = await service.create({ name: "doomed" }, options());
      const survivor = await service.create({ name: "survivor" }, options());
      assert.deepEqual(await service.reap(), [], "nothing to reap while both VMMs live");
      dead.add(doomed.pid!);
      assert.deepEqual(await service.reap(), ["doomed"]);
      const shown = await service.show("doomed");
      assert.equal(shown.state, "stopped");
      assert.match(shown.lastError ?? "", /exited unexpectedly/);
      assert.equal(shown.pid, null);
      // The VMM "died" behind the ledger's back (isRunning says so), so its entry stays; the rest must go.
      const leftovers = except(platform.heldBy(doomed.id), "dir", "disk", "vmm");
      assert.deepEqual(leftovers, [], "tap, hooks, ssh and handles released; dir and disk kept");
      assert.equal((await service.show("survivor")).state, "running");
      assert.equal(survivor.state, "running");
      assert.deepEqual(await service.reap(), [], "a reaped VM is not reaped twice");
    },
  );

  it("the reaper leaves a VM alone while a lifecycle op holds its lock", HANG_GUARD, async () => {
    const dead = new Set<number>();
    await using platform = createFakeVmPlatform({ isRunning: async (handle) => !dead.has(handle.pid) });
    const service = createVmService(platform.deps);
    const vm = await service.create({ name: "busy" }, options());
    dead.add(vm.pid!);
    let release!: () => void;
    const held = platform.deps.vmLocks.run(vm.id, () => new Promise<void>((resolve) => (release = resolve)));
    assert.deepEqual(await service.reap(), []);
    release();
    await held;
    assert.deepEqual(await service.reap(), ["busy"]);
  });

  it(
    "vm set changes a stopped VM, grows its disk, and refuses a running VM or a smaller disk",
    HANG_GUARD,
    async () => {
      await withPlatform(async (platform, service) => {
        await service.create({ name: "sized", diskGib: 2 }, options());
        await rejectsWithCode(service.set("sized", { cpus: 2 }), ErrorCode.BAD_STATE);
        await service.stop("sized", options());
        await rejectsWithCode(service.set("sized", { diskGib: 1 }), ErrorCode.INVALID_PARAMS);
        const updated = await service.set("sized", { cpus: 3, memoryMib: 1024, diskGib: 5 });
        assert.deepEqual([updated.cpus, updated.memoryMib, updated.diskGib], [3, 1024, 5]);
        assert.ok(platform.events.has({ kind: "disk-grow", sizeBytes: 5 * 1024 ** 3 }));
        const again = await service.show("sized");
        assert.equal(again.diskGib, 5, "stored in the row");
        const started = await service.start("sized", options());
        assert.equal(started.cpus, 3);
      });
    },
  );
});

describe("VM service: reconcile after a daemon restart", () => {
  it("keeps a live VM, re-opens its control channel, and demotes a dead one", HANG_GUARD, async () => {
    const dead = new Set<number>();
    await using platform = createFakeVmPlatform({ isRunning: async (handle) => !dead.has(handle.pid) });
    const first = createVmService(platform.deps);
    const alive = await first.create({ name: "alive" }, options());
    const gone = await first.create({ name: "gone" }, options());
    dead.add(gone.pid!);
    const mark = platform.events.mark();
    // A new daemon: a fresh service over the same store and files.
    const second = createVmService(platform.deps);
    const result = await second.reconcile();
    assert.deepEqual(result.kept, ["alive"]);
    assert.deepEqual(result.demoted, ["gone"]);
    assert.ok(
      indexOf(platform.events.since(mark), { kind: "reattach", vmId: alive.id }) >= 0,
      "the control channel was re-opened",
    );
    assert.equal((await second.show("alive")).pid, alive.pid, "handles are cached again");
    assert.equal((await second.show("alive")).lastError, null);
    const demoted = await second.show("gone");
    assert.equal(demoted.state, "stopped");
    assert.match(demoted.lastError ?? "", /gone when the daemon started/);
  });

  it("keeps a VM whose control channel does not answer, saying so in last_error", HANG_GUARD, async () => {
    await using platform = createFakeVmPlatform();
    const first = createVmService(platform.deps);
    await first.create({ name: "mute" }, options());
    const driver = platform.deps.drivers.get("qemu");
    const second = createVmService({
      ...platform.deps,
      drivers: {
        ...platform.deps.drivers,
        get: () => ({
          ...driver,
          reattach: async () => {
            throw new Error("QMP did not answer");
          },
        }),
      },
    });
    const result = await second.reconcile();
    assert.deepEqual(result.kept, ["mute"]);
    const shown = await second.show("mute");
    assert.equal(shown.state, "running");
    assert.match(
      shown.lastError ?? "",
      /control channel did not answer after a daemon restart: QMP did not answer/,
    );
  });
});

describe("VM service: pause and resume", () => {
  it(
    "pauses and resumes under the VM lock; a paused VM refuses exec and start, and stops cleanly",
    HANG_GUARD,
    async () => {
      await withPlatform(async (platform, service) => {
        const vm = await service.create({ name: "nap" }, options());
        assert.equal((await service.pause("nap")).state, "paused");
        assert.ok(platform.events.has({ kind: "pause", vmId: vm.id }));
        assert.equal((await service.pause("nap")).state, "paused", "pausing a paused VM is a no-op");
        const refused = await rejectsWithCode(
          service.exec("nap", { argv: ["true"] }),
          ErrorCode.BAD_STATE,
          /is paused/,
        );
        assert.match(refused.hint ?? "", /banger vm resume nap/);
        await assert.rejects(service.start("nap", options()), /is paused/);
        assert.equal((await service.resume("nap", options())).state, "running");
        assert.ok(platform.events.has({ kind: "resume", vmId: vm.id }));
        await service.pause("nap");
        const mark = platform.events.mark();
        assert.equal((await service.stop("nap", options())).state, "stopped");
        const after = platform.events.since(mark);
        const resumed = indexOf(after, { kind: "resume", vmId: vm.id });
        assert.ok(
          resumed >= 0 && resumed < indexOf(after, { kind: "stop-begin", vmId: vm.id }),
          `a paused guest is resumed before its graceful stop: ${describeEvents(after)}`,
        );
        await rejectsWithCode(service.pause("nap"), ErrorCode.BAD_STATE);
        await assert.rejects(
          service.resume("nap", options()),
          /only a paused or suspended VM can be resumed/,
        );
      });
    },
  );

  it("the reaper and reconcile treat a paused VM like a running one", HANG_GUARD, async () => {
    const dead = new Set<number>();
    await using platform = createFakeVmPlatform({ isRunning: async (handle) => !dead.has(handle.pid) });
    const service = createVmService(platform.deps);
    const held = await service.create({ name: "held" }, options());
    const lost = await service.create({ name: "lost" }, options());
    await service.pause("held");
    await service.pause("lost");
    assert.deepEqual(await service.reap(), []);
    dead.add(lost.pid!);
    assert.deepEqual(await service.reap(), ["lost"]);
    const restarted = createVmService(platform.deps);
    const result = await restarted.reconcile();
    assert.deepEqual(result.kept, ["held"]);
    // The fake VMM reports "running" on reattach: the row follows what the VMM says.
    assert.equal((await restarted.show("held")).state, "running");
    assert.equal((await restarted.show("held")).pid, held.pid);
  });
});

describe("VM service: stop honours its options", () => {
  it(
    "reports progress, and a cancel during the graceful wait kills the VMM and releases everything",
    HANG_GUARD,
    async () => {
      await withPlatform(async (platform, service) => {
        const vm = await service.create({ name: "slow" }, options());
        const steps: string[] = [];
        const controller = new AbortController();
        platform.stops.hold();
        const stopping = service.stop("slow", {
          signal: controller.signal,
          progress: (event) => steps.push(event.step),
        });
        await platform.events.waitFor({ kind: "stop-begin", vmId: vm.id });
        assert.deepEqual(steps, ["vm.stop"], "the stop said what it is doing");
        controller.abort();
        await rejectsWithCode(stopping, ErrorCode.CANCELLED);
        assert.ok(platform.events.has({ kind: "vmm-kill", vmId: vm.id }), "the VMM was killed");
        const shown = await service.show("slow");
        assert.equal(shown.state, "stopped");
        assert.match(shown.lastError ?? "", /stop was cancelled/);
        assert.deepEqual(
          except(platform.heldBy(vm.id), "dir", "disk"),
          [],
          "only the stopped VM's dir and disk remain",
        );
        assert.equal(
          (await service.start("slow", options())).state,
          "running",
          "nothing blocks the next start",
        );
      });
    },
  );

  it("a stop already cancelled kills at once", HANG_GUARD, async () => {
    await withPlatform(async (platform, service) => {
      const vm = await service.create({ name: "gone" }, options());
      await rejectsWithCode(
        service.stop("gone", options(AbortSignal.abort())),
        ErrorCode.CANCELLED,
        /cancelled/,
      );
      assert.ok(platform.events.has({ kind: "vmm-kill", vmId: vm.id }));
      assert.equal((await service.show("gone")).state, "stopped");
    });
  });
});
