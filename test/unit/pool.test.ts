/**
 * Warm pools: which requests a pool may serve (core/pool), and the pool
 * service over the real VM service on the fake platform: it fills to its
 * target with paused members, a matching create takes one (renamed, running,
 * hostname set through the guest channel) and the pool refills; two takers
 * never get one member; reconcile deletes members that are not ready.
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import type { PoolConfig } from "../../src/core/config/index.ts";
import { matchPool, poolTarget } from "../../src/core/pool/index.ts";
import { createPoolService } from "../../src/daemon/pool/index.ts";
import { createVmService } from "../../src/daemon/vm/index.ts";
import { createFakeVmPlatform } from "../fakes/vm-platform/index.ts";

const op = () => ({ signal: new AbortController().signal, progress: () => {} });
const pool = (overrides: Partial<PoolConfig> = {}): PoolConfig => ({
  name: "default",
  count: 2,
  ...overrides,
});

describe("matchPool and poolTarget", () => {
  const pools = [
    pool(),
    pool({ name: "warm", snapshot: "warm" }),
    pool({ name: "py", image: "python:3.12" }),
  ];
  it("serves only requests a member made ahead would have been", () => {
    assert.equal(matchPool(pools, {}, "debian-bookworm")?.name, "default");
    assert.equal(
      matchPool(pools, { name: "x", image: "debian-bookworm" }, "debian-bookworm")?.name,
      "default",
    );
    assert.equal(matchPool(pools, { from: "warm" }, "debian-bookworm")?.name, "warm");
    assert.equal(matchPool(pools, { image: "python:3.12" }, "debian-bookworm")?.name, "py");
    for (const own of [
      { cpus: 2 },
      { memoryMib: 1024 },
      { diskGib: 8 },
      { vmm: "qemu" as const },
      { publish: ["80:80"] },
      { egress: "deny" },
      { start: false },
    ]) {
      assert.equal(matchPool(pools, own, "debian-bookworm"), undefined, JSON.stringify(own));
    }
    assert.equal(matchPool(pools, { from: "cold" }, "debian-bookworm"), undefined);
    assert.equal(matchPool(pools, { image: "alpine" }, "debian-bookworm"), undefined);
  });
  it("keeps the count, cut to what the memory budget holds", () => {
    assert.equal(poolTarget(pool({ count: 4 }), 512), 4);
    assert.equal(poolTarget(pool({ count: 4, memory_budget_mib: 1200 }), 512), 2);
  });
});

describe("the pool service on the fake platform", () => {
  function world() {
    const platform = createFakeVmPlatform();
    const vms = createVmService(platform.deps);
    let renames = 0;
    const controller = new AbortController();
    const service = createPoolService({
      pools: [pool()],
      defaultImage: platform.deps.config.vm.default_image,
      defaultMemoryMib: 512,
      store: platform.store,
      vms: {
        create: (params, o) => vms.create(params, o),
        createFrom: () => Promise.reject(new Error("no snapshots here")),
        pause: (name) => vms.pause(name),
        claim: (id, name, o) => vms.claim(id, name, o),
        delete: (name) => vms.delete(name),
        list: () => vms.list(),
      },
      renamed: () => {
        renames++;
      },
      logger: platform.deps.logger,
      signal: controller.signal,
    });
    return {
      platform,
      vms,
      service,
      renames: () => renames,
      async [Symbol.asyncDispose]() {
        controller.abort();
        await service.settle();
        await platform.close();
      },
    };
  }

  it("fills, serves a matching create with a renamed running member, and refills", async () => {
    await using w = world();
    w.service.refill();
    await w.service.settle();
    const [full] = await w.service.list();
    assert.equal(full?.ready, 2);
    assert.ok(
      full?.members.every((member) => member.state === "paused" && member.name.startsWith("pool-default-")),
    );

    assert.equal(await w.service.take({ cpus: 2 }, op()), undefined, "its own sizing is not served");
    const taken = await w.service.take({ name: "web" }, op());
    assert.equal(taken?.name, "web");
    assert.equal(taken?.state, "running");
    assert.ok(full?.members.some((member) => member.guestIp === taken?.guestIp));
    assert.equal(w.renames(), 1);
    assert.equal(w.service.isMember(taken!), false);
    const hostname = w.platform.events.all.find(
      (event) =>
        event.kind === "exec" &&
        event.vmId === taken?.id &&
        event.argv.includes("banger-hostname") &&
        event.argv.includes("web"),
    );
    assert.ok(hostname, "the hostname step ran with the new name");
    await w.service.settle();
    assert.equal((await w.service.list())[0]?.ready, 2, "refilled");
  });

  it("never gives one member to two takers, and reconcile deletes members that are not ready", async () => {
    await using w = world();
    w.service.refill();
    await w.service.settle();
    const results = await Promise.all(["a", "b", "c"].map((name) => w.service.take({ name }, op())));
    const served = results.filter((vm) => vm !== undefined);
    assert.equal(served.length, 2, "two members, two takers served; the third creates as usual");
    assert.equal(new Set(served.map((vm) => vm.id)).size, 2);
    await w.service.settle();
    const [member] = (await w.service.list())[0]!.members;
    await w.vms.resume(member!.name, op());
    const removed = await w.service.reconcile();
    assert.deepEqual(removed, [member!.name]);
    assert.equal(w.platform.store.getVmByName(member!.name), undefined);
  });
});
