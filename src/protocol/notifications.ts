/**
 * Params of the wire's notifications (`$/stream`, `$/cancel`, `$/progress`;
 * see wire.ts), as zod schemas the daemon validates with.
 */
import { z } from "zod";

export const StreamChannel = z.enum(["stdin", "stdout", "stderr", "tcp"]);
export type StreamChannel = z.infer<typeof StreamChannel>;

export const StreamParams = z.object({
  id: z.union([z.number(), z.string()]),
  ch: StreamChannel,
  data: z.string().optional(),
  end: z.boolean().optional(),
});
export type StreamParams = z.infer<typeof StreamParams>;

export const CancelParams = z.object({ id: z.union([z.number(), z.string()]) });

export const ProgressEvent = z.object({
  /** Machine name of the step, e.g. "image.build.rootfs", "vm.boot". */
  step: z.string(),
  /** What the step is doing, for humans. */
  message: z.string(),
  status: z.enum(["start", "running", "done", "failed"]).default("running"),
  current: z.number().optional(),
  total: z.number().optional(),
});
export type ProgressEvent = z.infer<typeof ProgressEvent>;

/** Reports one step of a long operation; `status` defaults to "running". */
export type Progress = (event: Omit<ProgressEvent, "status"> & { status?: ProgressEvent["status"] }) => void;

export const ProgressParams = ProgressEvent.extend({ id: z.union([z.number(), z.string()]) });
export type ProgressParams = z.infer<typeof ProgressParams>;
