/** Warm pools: VMs made ahead and kept paused for matching creates (see service.ts). */
export { createPoolService, type PoolService, type PoolServiceDeps, type PoolVms } from "./service.ts";
