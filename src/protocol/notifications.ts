/**
 * Params of the wire's notifications (`$/stream`, `$/cancel`, `$/progress`, `$/signal`, `$/resize`;
 * see wire.ts), as zod schemas the daemon validates with.
 */
import { z } from "zod";
import { STREAM_CHANNELS } from "./wire.ts";

export const StreamChannel = z.enum(STREAM_CHANNELS);
export type StreamChannel = z.infer<typeof StreamChannel>;

export const StreamParams = z.object({
  id: z.union([z.number(), z.string()]),
  ch: StreamChannel,
  data: z.string().optional(),
  end: z.boolean().optional(),
});
export type StreamParams = z.infer<typeof StreamParams>;

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
  "vm.agent",
  /** The last step of a start: the VM is running; its message says so. */
  "vm.ready",
  "vm.stop",
  /** A start from a snapshot: memory loaded, then the clone's own identity. */
  "vm.restore",
  "vm.identity",
  "vm.suspend",
  "snapshot.save",
  "snapshot.publish",
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
  "image.dockerfile.build",
  "image.dockerfile.export",
]);
export type ProgressStep = z.infer<typeof ProgressStep>;

export const CancelParams = z.object({ id: z.union([z.number(), z.string()]) });

/** Signals a client may send to a running `vm.exec` (delivered to the guest process group). */
export const ExecSignal = z.enum([
  "SIGINT",
  "SIGTERM",
  "SIGHUP",
  "SIGKILL",
  "SIGQUIT",
  "SIGUSR1",
  "SIGUSR2",
  "SIGWINCH",
]);
export type ExecSignal = z.infer<typeof ExecSignal>;

/** `$/signal` (client -> server): a signal for request `id`'s guest process group. */
export const SignalParams = z.object({ id: z.union([z.number(), z.string()]), signal: ExecSignal });

/** `$/resize` (client -> server): the new size of request `id`'s PTY. */
export const ResizeParams = z.object({
  id: z.union([z.number(), z.string()]),
  cols: z.number().int().min(0).max(65535),
  rows: z.number().int().min(0).max(65535),
});

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
