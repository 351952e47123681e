/**
 * The VMM driver contract (lima style): role methods plus a features object.
 * Callers branch on `features`, never on `kind`.
 *
 * Contracts every driver keeps:
 * - `start` launches the VMM detached from the daemon (it outlives a daemon
 *   restart) and resolves once the VMM is up and its control channel answers;
 *   guest readiness (SSH) is the caller's concern. If `start` throws, nothing
 *   it launched is left running.
 * - `stop` is graceful (ACPI power button or Ctrl-Alt-Del, then quit, then
 *   SIGKILL, each with a timeout) and resolves when the process is gone.
 * - `kill` is immediate and resolves when the process is gone.
 * - `stop`, `kill` and `isRunning` are idempotent and work from a handle
 *   read back from handles.json by a new daemon process.
 */
import type { VmmKind } from "../../protocol/index.ts";

export interface VmmFeatures {
  /** Root-disk formats the VMM can open. */
  diskFormats: readonly ("qcow2" | "raw")[];
  /** Kernel formats it boots directly. */
  kernelFormats: readonly ("bzImage" | "elf")[];
  pauseResume: boolean;
  vsock: boolean;
  /** Whether software emulation (no KVM) is possible. */
  softwareEmulation: boolean;
  /** Whether the driver has the `snapshots` role. */
  snapshots: boolean;
}

export interface BootSpec {
  vmId: string;
  vmName: string;
  cpus: number;
  memoryMib: number;
  kernel: string;
  initrd: string | null;
  /** Full kernel command line, already planned by the caller. */
  kernelCmdline: string;
  disk: { path: string; format: "qcow2" | "raw" };
  /**
   * A raw disk attached read-only after the root disk (the guest's second
   * virtio disk, /dev/vdb): the kernel's own image when an OCI image boots.
   */
  baseDisk?: string | undefined;
  tap: string;
  mac: string;
  /** Serial console output goes here (appended). */
  consoleLog: string;
  /** The VMM's own stdout/stderr. */
  vmmLog: string;
  /**
   * The VM's directory. The driver keeps its private files here (control
   * socket, vsock socket, logs, metrics) under names it owns, and returns
   * the control socket in the handle.
   */
  vmDir: string;
}

/** What a driver needs to find its VMM again, as stored in handles.json. */
export interface VmmHandle {
  pid: number;
  /** /proc/PID/stat start time, so a reused pid is never mistaken for ours. */
  pidStartTicks: number;
  controlSocket: string;
}

export interface VmmDriver {
  readonly kind: VmmKind;
  readonly features: VmmFeatures;
  start(spec: BootSpec, signal: AbortSignal): Promise<VmmHandle>;
  stop(handle: VmmHandle, options: { timeoutMs: number }): Promise<void>;
  kill(handle: VmmHandle): Promise<void>;
  /** True when the handle's process is alive, not a zombie, and ours. */
  isRunning(handle: VmmHandle): Promise<boolean>;
  /**
   * Re-opens the control channel of a VMM a previous daemon started (QMP,
   * or Firecracker's API) and returns the run state it reports. Throws when
   * the channel does not answer.
   */
  reattach(handle: VmmHandle): Promise<VmmRunState>;
  /** Freezes the guest's vCPUs (QMP `stop`, Firecracker `PATCH /vm Paused`); memory and devices stay. */
  pause(handle: VmmHandle): Promise<void>;
  /** Lets a paused guest run again. */
  resume(handle: VmmHandle): Promise<void>;
  /** Optional role, present exactly when `features.snapshots` is true. */
  readonly snapshots?: VmmSnapshots;
}

/** A VMM's run state as its control channel reports it; "other" for anything but running or paused. */
export type VmmRunState = "running" | "paused" | "other";

/** Reads a reported state (QMP's `status`, Firecracker's `state`), case-insensitively. */
export function runStateOf(reported: string): VmmRunState {
  const state = reported.toLowerCase();
  return state === "running" || state === "paused" ? state : "other";
}

/**
 * Optional driver role (lima's SnapshotManager): saving a paused VM's
 * memory and device state to files, and starting a new VMM from them.
 * Callers check `features.snapshots` first. A state loads only into the
 * same machine: `describe` gives what a snapshot records and a restore
 * compares (src/core/snapshot checkRestore).
 */
export interface VmmSnapshots {
  /** The machine a VM of this spec runs on: the device layout's signature, the VMM version, the accelerator. */
  describe(spec: BootSpec): Promise<{ signature: string; vmmVersion: string | null; accel: string | null }>;
  /** Writes the paused VM's state into `dir` (which the caller owns and removes on failure). */
  save(handle: VmmHandle, dir: string, signal: AbortSignal): Promise<void>;
  /**
   * Starts a VMM from a state saved in `dir`, with the same contract as
   * `start`: it resolves with the guest running where it was saved, and
   * leaves nothing running if it throws.
   */
  restore(spec: BootSpec, dir: string, signal: AbortSignal): Promise<VmmHandle>;
}
