/**
 * Warm pools (config `[[pool]]`): each keeps `count` VMs made ahead, from a
 * snapshot (restored clones) or an image (booted), and paused, so that a
 * matching `vm run` or `vm create` takes one (`take`: resumed and renamed in
 * about the time of an exec) instead of starting a VM. Members are VM rows
 * linked in `pool_members`; `vm ls` leaves them out and `pool ls` shows
 * them. Filling runs in the background, one pool pass at a time, after the
 * daemon starts and after every take; a member that fails to become ready
 * is deleted and the pass ends (the next take or daemon start tries again).
 * At daemon start (`reconcile`), after the VMs' own reconcile, members that
 * are not paused with a live VMM are deleted. Exactly one taker wins a
 * member: its `pool_members` row is removed before it is claimed.
 */
import { randomBytes } from "node:crypto";
import { errorMessage } from "../../core/async/index.ts";
import { Mutex } from "../../core/concurrency/index.ts";
import type { PoolConfig } from "../../core/config/index.ts";
import type { Logger } from "../../core/log/index.ts";
import { matchPool, poolMemberName, poolTarget } from "../../core/pool/index.ts";
import type { CreateVmParams, PoolInfo, VmInfo } from "../../protocol/index.ts";
import type { Store } from "../../sys/store/index.ts";
import type { OpOptions } from "../vm/index.ts";

export interface PoolVms {
  create(params: CreateVmParams, options: OpOptions): Promise<VmInfo>;
  createFrom(params: CreateVmParams & { from: string }, options: OpOptions): Promise<VmInfo>;
  pause(name: string): Promise<VmInfo>;
  claim(memberId: string, name: string | undefined, options: OpOptions): Promise<VmInfo>;
  delete(name: string): Promise<void>;
  list(): Promise<VmInfo[]>;
}

export interface PoolServiceDeps {
  pools: readonly PoolConfig[];
  defaultImage: string;
  defaultMemoryMib: number;
  store: Pick<
    Store,
    "addPoolMember" | "removePoolMember" | "poolMembers" | "getVmById" | "getSnapshotByName"
  >;
  vms: PoolVms;
  /** After a member takes a new name (the DNS zone must learn it). */
  renamed(): void;
  logger: Logger;
  /** Ends filling passes at daemon stop. */
  signal: AbortSignal;
}

export interface PoolService {
  /** A ready member of a pool matching `params`, claimed under `params.name`; undefined when none. */
  take(params: CreateVmParams, options: OpOptions): Promise<VmInfo | undefined>;
  /** Deletes members that are not paused with a live VMM (daemon start, after the VMs' reconcile). */
  reconcile(): Promise<string[]>;
  /** Starts filling every pool in the background (one pass per pool at a time). */
  refill(): void;
  /** Waits for the filling passes in flight (daemon stop). */
  settle(): Promise<void>;
  list(): Promise<PoolInfo[]>;
  /** A member, or a VM the pool is making to become one. */
  isMember(vm: { id: string; name: string }): boolean;
}

export function createPoolService(deps: PoolServiceDeps): PoolService {
  const { store, vms, logger } = deps;
  const fillLocks = new Map(deps.pools.map((pool) => [pool.name, new Mutex()]));
  const inFlight = new Set<Promise<void>>();
  /** Names of members being made (not yet linked in pool_members). */
  const making = new Set<string>();
  const op: OpOptions = { signal: deps.signal, progress: () => {} };

  const membersOf = (pool: string) =>
    store
      .poolMembers()
      .filter((member) => member.pool === pool)
      .map((member) => store.getVmById(member.vmId))
      .filter((vm) => vm !== undefined);

  const memberMemory = (pool: PoolConfig) => {
    if (pool.snapshot === undefined) return deps.defaultMemoryMib;
    return store.getSnapshotByName(pool.snapshot)?.memoryMib ?? deps.defaultMemoryMib;
  };

  /** Makes one member and pauses it; a member that fails is deleted. */
  const makeMember = async (pool: PoolConfig): Promise<void> => {
    const name = poolMemberName(pool.name, randomBytes(3).toString("hex"));
    let made: VmInfo | undefined;
    making.add(name);
    try {
      made =
        pool.snapshot !== undefined
          ? await vms.createFrom({ name, from: pool.snapshot }, op)
          : await vms.create({ name, image: pool.image ?? deps.defaultImage }, op);
      store.addPoolMember(made.id, pool.name);
      await vms.pause(name);
      logger.info("pool member ready", { pool: pool.name, vm: name });
    } catch (error) {
      if (made) await vms.delete(name).catch(() => undefined);
      throw error;
    } finally {
      making.delete(name);
    }
  };

  const fill = (pool: PoolConfig) =>
    fillLocks.get(pool.name)!.run(async () => {
      const target = poolTarget(pool, memberMemory(pool));
      while (!deps.signal.aborted && membersOf(pool.name).length < target) await makeMember(pool);
    });

  const refill = () => {
    for (const pool of deps.pools) {
      const pass = fill(pool)
        .catch((error: unknown) => {
          if (!deps.signal.aborted)
            logger.warn("filling a pool failed", { pool: pool.name, err: errorMessage(error) });
        })
        .finally(() => inFlight.delete(pass));
      inFlight.add(pass);
    }
  };

  return {
    async take(params, options) {
      const pool = matchPool(deps.pools, params, deps.defaultImage);
      if (!pool) return undefined;
      for (const member of membersOf(pool.name)) {
        if (member.state !== "paused" || !store.removePoolMember(member.id)) continue;
        try {
          const vm = await vms.claim(member.id, params.name, options);
          deps.renamed();
          logger.info("served a create from the pool", { pool: pool.name, vm: vm.name });
          return vm;
        } catch (error) {
          logger.warn("a pool member could not be taken; it is deleted", {
            pool: pool.name,
            vm: member.name,
            err: errorMessage(error),
          });
          const current = store.getVmById(member.id);
          if (current) await vms.delete(current.name).catch(() => undefined);
          if ((error as { code?: string }).code === "NAME_TAKEN") throw error;
        } finally {
          refill();
        }
      }
      return undefined;
    },

    async reconcile() {
      const removed: string[] = [];
      const live = new Map((await vms.list()).map((vm) => [vm.id, vm]));
      for (const member of store.poolMembers()) {
        const vm = live.get(member.vmId);
        const known = deps.pools.some((pool) => pool.name === member.pool);
        if (vm && vm.state === "paused" && known) continue;
        if (vm) await vms.delete(vm.name).catch(() => undefined);
        store.removePoolMember(member.vmId);
        removed.push(vm?.name ?? member.vmId);
      }
      if (removed.length > 0) logger.info("removed pool members that were not ready", { removed });
      return removed;
    },

    refill,

    async settle() {
      await Promise.all(inFlight);
    },

    async list() {
      return deps.pools.map((pool) => {
        const members = membersOf(pool.name);
        return {
          name: pool.name,
          source:
            pool.snapshot !== undefined
              ? `snapshot ${pool.snapshot}`
              : `image ${pool.image ?? deps.defaultImage}`,
          count: pool.count,
          target: poolTarget(pool, memberMemory(pool)),
          ready: members.filter((vm) => vm.state === "paused").length,
          members: members.map((vm) => ({ name: vm.name, state: vm.state, guestIp: vm.guestIp })),
        };
      });
    },

    isMember: (vm) => making.has(vm.name) || store.poolMembers().some((member) => member.vmId === vm.id),
  };
}
