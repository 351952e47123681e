/**
 * Warm pools, pure: which pool a create request may be served from, how many
 * members a pool keeps, and its members' names. A request matches only when
 * a member made ahead is exactly what it would have made: the same snapshot,
 * or the same image with the configured defaults (no sizing, VMM, published
 * ports or egress policy of its own, since a member already booted with
 * the defaults).
 */

import type { CreateVmParams } from "../../protocol/index.ts";
import type { PoolConfig } from "../config/index.ts";

/** The name prefix of every pool member. */
const POOL_MEMBER_PREFIX = "pool-";

export function matchPool(
  pools: readonly PoolConfig[],
  params: CreateVmParams,
  defaultImage: string,
): PoolConfig | undefined {
  if (params.start === false) return undefined;
  const own = [params.cpus, params.memoryMib, params.diskGib, params.vmm, params.publish, params.egress];
  if (own.some((value) => value !== undefined)) return undefined;
  if (params.from !== undefined) return pools.find((pool) => pool.snapshot === params.from);
  if (params.name?.startsWith(POOL_MEMBER_PREFIX)) return undefined;
  const image = params.image ?? defaultImage;
  return pools.find((pool) => pool.snapshot === undefined && (pool.image ?? defaultImage) === image);
}

/** How many members the pool keeps: its count, cut to what its memory budget holds. */
export function poolTarget(pool: PoolConfig, memberMemoryMib: number): number {
  if (pool.memory_budget_mib === undefined) return pool.count;
  return Math.min(pool.count, Math.floor(pool.memory_budget_mib / memberMemoryMib));
}

/** `pool-NAME-SUFFIX`, a valid VM name for a pool name of at most 16 characters and a short suffix. */
export function poolMemberName(pool: string, suffix: string): string {
  return `${POOL_MEMBER_PREFIX}${pool}-${suffix}`;
}
