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

/**
 * Every step a long operation reports, by machine name. A new step is added
 * here first, so clients can rely on the list (the CLI renders the daemon's
 * message for each and never writes one of its own).
 */
export const ProgressStep = z.enum([
  /** An async operation accepted, not yet begun. */
  "queued",
  "vm.disk",
  "vm.network",
  "vm.boot",
  "vm.ssh",
  /** The last step of a start: the VM is running; its message says so. */
  "vm.ready",
  "image.rootfs",
  "image.customize",
  "image.kernel",
  "image.initrd",
  "image.mkfs",
  "image.cleanup",
  "image.cache-copy",
  "image.cache-store",
  "image.publish",
  "image.pull.resolve",
  "image.pull.layers",
  "image.pull.apply",
  "image.pull.rootfs",
  "image.import.read",
]);
export type ProgressStep = z.infer<typeof ProgressStep>;

export const ProgressEvent = z.object({
  /** Machine name of the step. */
  step: ProgressStep,
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
