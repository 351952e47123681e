/**
 * The daemon's background work, started once the VMs are reconciled and the
 * host features are up: the reaper (every second), the idle suspender (with
 * `vm.suspend_after_idle`) and the warm pools (reconciled now, filled in the
 * background). Everything registers its undo on the daemon's stack.
 */
import { access } from "node:fs/promises";
import { join } from "node:path";
import type { Config } from "../../core/config/index.ts";
import type { Logger } from "../../core/log/index.ts";
import { idleSuspendMs } from "../../core/vm/index.ts";
import { readLinkBytes } from "../../sys/network/index.ts";
import type { Store } from "../../sys/store/index.ts";
import { type HostCheck, poolsCheck, suspendedCheck } from "../doctor/index.ts";
import { createIdleSuspender } from "../idle-suspend.ts";
import { createPoolService, type PoolService } from "../pool/index.ts";
import { startSerialInterval } from "./reaper.ts";
import type { Services } from "./services.ts";

const REAP_INTERVAL_MS = 1000;
/** How often idle VMs are looked for: a tenth of the idle time, between 1 s and 30 s. */
const idleCheckMs = (idleMs: number) => Math.min(30_000, Math.max(1000, Math.round(idleMs / 10)));

export async function startBackground(options: {
  services: Services;
  config: Config;
  store: Store;
  logger: Logger;
  signal: AbortSignal;
  life: AsyncDisposableStack;
}): Promise<PoolService> {
  const { services, config, store, logger, signal, life } = options;
  const { vms } = services;
  const quiet = { signal, progress: () => {} };
  life.use(startSerialInterval(() => vms.reap(), REAP_INTERVAL_MS, logger.child({ task: "reaper" })));
  const idleMs = idleSuspendMs(config.vm.suspend_after_idle);
  if (idleMs !== undefined) {
    const pass = createIdleSuspender({
      idleMs,
      listVms: () => vms.list(),
      execActivity: (vmId) => vms.execActivity(vmId),
      tapBytes: (tap) => readLinkBytes(tap),
      isBusy: (vmId) => services.vmLocks.isLocked(vmId),
      suspend: (name) => vms.suspend(name, quiet),
      now: () => Date.now(),
      logger: logger.child({ task: "idle-suspend" }),
    });
    life.use(startSerialInterval(pass, idleCheckMs(idleMs), logger.child({ task: "idle-suspend" })));
  }
  const pool = createPoolService({
    pools: config.pool,
    defaultImage: config.vm.default_image,
    defaultMemoryMib: config.vm.memory_mib,
    store,
    vms: {
      create: (params, o) => vms.create(params, o),
      createFrom: (params, o) => services.snapshots.createFrom(params, o),
      pause: (name) => vms.pause(name),
      claim: (memberId, name, o) => vms.claim(memberId, name, o),
      delete: (name) => vms.delete(name),
      list: () => vms.list(),
    },
    renamed: () => services.capabilities.networking?.dns.invalidate(),
    logger: logger.child({ subsystem: "pool" }),
    signal,
  });
  await pool.reconcile();
  life.defer(() => pool.settle());
  pool.refill();
  return pool;
}

/** Doctor checks of what the VMs and pools hold: suspended VMs' saved state, and each pool's fill. */
export function stateChecks(deps: {
  vms: Pick<Services["vms"], "list">;
  pool: Pick<PoolService, "list">;
  store: Pick<Store, "getSnapshotByName">;
}): HostCheck[] {
  const exists = (path: string) =>
    access(path).then(
      () => true,
      () => false,
    );
  return [
    suspendedCheck({
      suspended: async () =>
        Promise.all(
          (await deps.vms.list())
            .filter((vm) => vm.state === "suspended")
            .map(async (vm) => ({
              name: vm.name,
              complete: await exists(join(vm.dir, "suspended", "manifest.json")),
            })),
        ),
    }),
    poolsCheck({
      pools: () => deps.pool.list(),
      snapshotExists: (name) => deps.store.getSnapshotByName(name) !== undefined,
    }),
  ];
}
