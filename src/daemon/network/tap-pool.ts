/**
 * The TAP pool: up to `network.tap_pool_size` taps made ahead, attached to
 * the bridge and down (core/network tap-pool.ts), so a VM start claims one
 * with a single rename instead of creating and attaching a tap.
 *
 * - `createTap` (a VM start, through the VM service's network adapter)
 *   takes the lowest-numbered ready tap and claims it under the VM's tap
 *   name; with none ready, or when the claim fails, it creates the tap as
 *   the pool did not exist. Either way the pool refills in the background
 *   `refillDelayMs` later (default 1 s), so the refill's `ip` spawns do not
 *   compete with the rest of the start; a start never waits for a refill.
 * - `ensure` (daemon start) reconciles: pool taps a previous daemon left
 *   attached and down are adopted, any others removed; the pool fills only
 *   when the store holds a VM (a daemon that never runs one makes nothing).
 * - `teardown` (daemon stop) deletes every pool tap when no VM runs; with
 *   VMs running they stay with the bridge, for the next daemon to adopt.
 *
 * Lock: `maintenance` serialises the steps that change which pool taps
 * exist (one refill creation, reconcile, teardown). It is a leaf: nothing
 * else is locked while it is held, and `createTap` never takes it (the
 * ready list is only read and changed in synchronous sections).
 */
import { Mutex } from "../../core/concurrency/index.ts";
import type { Logger } from "../../core/log/index.ts";
import { nextPoolTapName, planPoolReconcile } from "../../core/network/index.ts";
import type { DoctorCheck } from "../../protocol/index.ts";
import type { HostNetwork } from "../../sys/network/index.ts";
import type { HostFeature } from "./feature.ts";

export interface TapPoolDeps {
  size: number;
  host: Pick<
    HostNetwork,
    "bridge" | "ensureBridge" | "createTap" | "deleteTap" | "createPoolTap" | "claimPoolTap" | "listPoolTaps"
  >;
  /** True when the store holds a VM: only then does the daemon start fill the pool. */
  anyVm(): boolean;
  /** True while a VM runs: teardown then leaves the pool to the next daemon. */
  anyVmRunning(): boolean;
  logger: Logger;
  /** How long after a start the refill begins; 1000 unless given. */
  refillDelayMs?: number;
}

export interface TapPoolStatus {
  size: number;
  /** The warm taps, in the order they are handed out. */
  ready: string[];
  filling: boolean;
  /** Why the last refill or reconcile failed, until one succeeds. */
  error: string | undefined;
}

export interface TapPool extends HostFeature {
  /** Gives a starting VM its tap `tap`, attached to the bridge and up. */
  createTap(tap: string, signal?: AbortSignal): Promise<void>;
  status(): TapPoolStatus;
  /** Starts a scheduled refill now and resolves once no refill runs (tests, the bench). */
  idle(): Promise<void>;
}

export function createTapPool(deps: TapPoolDeps): TapPool {
  const { host } = deps;
  const size = Math.max(0, deps.size);
  const logger = deps.logger.child({ component: "tap-pool" });
  const maintenance = new Mutex();
  const ready: string[] = [];
  let refilling: Promise<void> | undefined;
  let scheduled: NodeJS.Timeout | undefined;
  let closed = false;
  let error: string | undefined;

  /** Makes one pool tap; false when the pool is full or closed. */
  const makeOne = () =>
    maintenance.run(async () => {
      if (closed || ready.length >= size) return false;
      const name = nextPoolTapName(new Set(ready));
      await host.createPoolTap(name);
      ready.push(name);
      ready.sort((a, b) => a.length - b.length || a.localeCompare(b));
      return true;
    });

  const refill = () => {
    if (closed || size === 0 || ready.length >= size) return;
    refilling ??= (async () => {
      try {
        await host.ensureBridge();
        while (await makeOne()) {
          // one tap per turn of the lock, so teardown and reconcile never wait for a whole batch
        }
        error = undefined;
      } catch (failure) {
        error = failure instanceof Error ? failure.message : String(failure);
        logger.warn("the TAP pool could not refill; starts create their taps", { err: error });
      } finally {
        refilling = undefined;
      }
    })();
  };

  const reconcile = () =>
    maintenance.run(async () => {
      const plan = planPoolReconcile({ found: await host.listPoolTaps(), bridge: host.bridge, size });
      for (const tap of plan.remove) await host.deleteTap(tap);
      ready.splice(0, ready.length, ...plan.adopt);
      if (plan.adopt.length + plan.remove.length > 0) {
        logger.info("pool taps reconciled", { adopted: plan.adopt, removed: plan.remove });
      }
    });

  const scheduleRefill = () => {
    if (scheduled !== undefined || closed) return;
    scheduled = setTimeout(() => {
      scheduled = undefined;
      refill();
    }, deps.refillDelayMs ?? 1000);
    scheduled.unref();
  };

  const cancelScheduled = () => {
    clearTimeout(scheduled);
    scheduled = undefined;
  };

  const idle = async () => {
    if (scheduled !== undefined) {
      cancelScheduled();
      refill();
    }
    while (refilling !== undefined) await refilling;
  };

  const claim = async (tap: string, signal?: AbortSignal): Promise<boolean> => {
    const poolTap = ready.shift();
    if (poolTap === undefined) return false;
    try {
      await host.claimPoolTap(poolTap, tap, signal);
      return true;
    } catch (failure) {
      logger.warn("could not claim a pool tap; creating the tap", { poolTap, tap, err: String(failure) });
      // Whichever name the device has now, it is not a usable pool tap.
      await host.deleteTap(poolTap).catch(() => undefined);
      await host.deleteTap(tap).catch(() => undefined);
      signal?.throwIfAborted();
      return false;
    }
  };

  return {
    name: "tap-pool",

    async createTap(tap, signal) {
      try {
        if (!(await claim(tap, signal))) await host.createTap(tap, signal);
      } finally {
        scheduleRefill();
      }
    },

    status: () => ({
      size,
      ready: [...ready],
      filling: refilling !== undefined || scheduled !== undefined,
      error,
    }),

    idle,

    async ensure() {
      closed = false;
      try {
        await reconcile();
      } catch (failure) {
        error = failure instanceof Error ? failure.message : String(failure);
        logger.warn("could not reconcile the TAP pool; starts create their taps", { err: error });
        return;
      }
      if (deps.anyVm()) refill();
    },

    async teardown() {
      cancelScheduled();
      await maintenance.run(async () => {
        closed = true;
        if (deps.anyVmRunning()) {
          if (ready.length > 0) logger.info("VMs still run: pool taps stay for the next daemon", { ready });
          return;
        }
        const known = new Set(ready);
        const found = await host.listPoolTaps().catch(() => []);
        for (const entry of found) known.add(entry.ifname);
        for (const tap of known) await host.deleteTap(tap);
        ready.length = 0;
        if (known.size > 0) logger.info("pool taps removed", { taps: [...known] });
      });
      await idle();
    },
  };
}

/** The pool in `banger doctor`: how many taps are warm, or why none are. */
export function tapPoolCheck(status: TapPoolStatus): DoctorCheck {
  if (status.size === 0) {
    return {
      name: "tap-pool",
      status: "ok",
      detail: "off (network.tap_pool_size = 0): each start creates its tap",
    };
  }
  if (status.error !== undefined) {
    return {
      name: "tap-pool",
      status: "warn",
      detail: `${status.ready.length} of ${status.size} taps warm; the last refill failed: ${status.error}`,
      hint: "starts still work (each creates its tap); check `ip tuntap` works as the daemon's user",
    };
  }
  const warm = status.ready.length > 0 ? ` (${status.ready.join(", ")})` : "";
  const filling = status.filling ? ", refilling" : "";
  return {
    name: "tap-pool",
    status: "ok",
    detail: `${status.ready.length} of ${status.size} taps warm${warm}${filling}`,
  };
}
