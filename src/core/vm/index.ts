/**
 * The VM domain: names, the state machine, and what a VM row holds.
 * A row says what a VM IS; transient kernel handles (pid, tap, sockets) live
 * in its handles.json, never here.
 */

import { BangerError, ErrorCode, type VmmKind, VmNameSchema, type VmState } from "../../protocol/index.ts";
import type { DiskHandles } from "../disk/index.ts";
import { parseDurationMs } from "../units.ts";

export interface VmRecord {
  id: string;
  name: string;
  imageId: string;
  imageName: string;
  vmm: VmmKind;
  cpus: number;
  memoryMib: number;
  diskGib: number;
  guestIp: string;
  mac: string;
  state: VmState;
  lastError: string | null;
  createdAt: string;
  updatedAt: string;
}

/** Transient handles of a running VM: what the kernel knows, not what the VM is. */
export interface VmHandles {
  pid: number | null;
  /** Start time of the VMM in clock ticks since boot (/proc/PID/stat field 22), to tell pid reuse apart. */
  pidStartTicks: number | null;
  tap: string | null;
  controlSocket: string | null;
  /** What the root disk's attach made for this boot (dm devices), for detach. */
  disk: DiskHandles | null;
}

export function emptyHandles(): VmHandles {
  return { pid: null, pidStartTicks: null, tap: null, controlSocket: null, disk: null };
}

export function validateVmName(name: string): string {
  const result = VmNameSchema.safeParse(name);
  if (!result.success) {
    throw new BangerError(
      ErrorCode.INVALID_PARAMS,
      `invalid VM name '${name}': ${result.error.issues[0]!.message}`,
      {
        hint: "use a name like 'web' or 'test-1'",
      },
    );
  }
  return name;
}

/** Allowed transitions of the durable state machine. */
const transitions: Record<VmState, readonly VmState[]> = {
  created: ["starting", "stopped", "error"],
  // A resume from disk that fails leaves the VM suspended, its state kept for a retry.
  starting: ["running", "suspended", "stopped", "error"],
  running: ["paused", "suspended", "stopping", "stopped", "error"],
  paused: ["running", "suspended", "stopping", "stopped", "error"],
  suspended: ["starting", "stopped", "error"],
  stopping: ["stopped", "error"],
  stopped: ["starting", "error"],
  error: ["starting", "stopped"],
};

/** States in which a VM's VMM process should be alive. */
export function isActiveState(state: VmState): boolean {
  return state === "running" || state === "paused";
}

/** States of a VM that holds nothing but its row, directory and stored disk: a stop has nothing to do. */
export function isAtRest(state: VmState): boolean {
  return state === "stopped" || state === "created";
}

/**
 * States in which a VM may still hold host resources (tap, devices, a VMM):
 * the active ones, and the transient ones a dead daemon or VMM can leave behind.
 */
export function mayHoldRuntime(state: VmState): boolean {
  return isActiveState(state) || state === "starting" || state === "stopping";
}

/** States in which `vm set` may change sizing: nothing is running from the stored disk. */
export function canReconfigure(state: VmState): boolean {
  return isAtRest(state) || state === "error";
}

export function canTransition(from: VmState, to: VmState): boolean {
  return transitions[from].includes(to);
}

export function assertTransition(vmName: string, from: VmState, to: VmState): void {
  if (!canTransition(from, to)) {
    throw new BangerError(ErrorCode.BAD_STATE, `VM '${vmName}' is ${from}; it cannot become ${to}`, {
      data: { from, to },
    });
  }
}

/** A locally administered unicast MAC derived from the VM id, stable for its life. */
export function macForVmId(vmId: string): string {
  const hex = vmId
    .replace(/[^0-9a-f]/gi, "")
    .padEnd(8, "0")
    .slice(0, 8)
    .toLowerCase();
  const bytes = hex.match(/../g)!;
  return ["52", "54", ...bytes].join(":");
}

/** Tap device name: at most 15 bytes (IFNAMSIZ). */
export function tapNameForVmId(vmId: string): string {
  return `bgr-${vmId.slice(0, 10)}`;
}

export const TAP_PREFIX = "bgr-";

export { bootFailureSummary, classifyVmmExit, type VmmExit, vmmExitReason } from "./console.ts";

/**
 * What a VM was last seen doing: `signature` sums up its activity (exec
 * events and tap byte counters) and `since` is when that last changed.
 */
export interface IdleMark {
  signature: string;
  since: number;
}

/** The mark after seeing `signature` at `now`: unchanged activity keeps the old `since`. */
export function observeActivity(previous: IdleMark | undefined, signature: string, now: number): IdleMark {
  return previous?.signature === signature ? previous : { signature, since: now };
}

/** `suspend_after_idle` in ms; undefined when it is `off`. */
export function idleSuspendMs(setting: string): number | undefined {
  return setting === "off" ? undefined : parseDurationMs(setting);
}
