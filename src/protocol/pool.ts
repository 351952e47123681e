/** Methods of warm pools (config `[[pool]]`): `pool.list`. */
import { z } from "zod";

export const PoolInfo = z.object({
  name: z.string(),
  /** `snapshot NAME` or `image NAME`. */
  source: z.string(),
  /** The configured count. */
  count: z.number(),
  /** What the pool keeps: the count, cut to its memory budget. */
  target: z.number(),
  /** Members paused and ready to take. */
  ready: z.number(),
  members: z.array(z.object({ name: z.string(), state: z.string(), guestIp: z.string() })),
});
export type PoolInfo = z.infer<typeof PoolInfo>;

export const poolMethods = {
  "pool.list": {
    params: z.object({}).strict().optional(),
    result: z.object({ pools: z.array(PoolInfo) }),
  },
} as const;
