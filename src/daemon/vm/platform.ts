/**
 * What the VM service needs from the host, as narrow interfaces. The
 * composition root builds the real ones from src/sys; unit tests pass fakes.
 */

import type { Socket } from "node:net";
import type { Readable } from "node:stream";
import type { VmmDriver } from "../../core/vmm/contract.ts";
import type { VmmKind } from "../../protocol/index.ts";

export interface GuestExec {
  argv: readonly string[];
  stdin?: Readable | undefined;
  onStdout?: (chunk: Buffer) => void | Promise<void>;
  onStderr?: (chunk: Buffer) => void | Promise<void>;
  signal?: AbortSignal | undefined;
}

export interface GuestTarget {
  vmId: string;
  ip: string;
  knownHostsFile: string;
}

/** SSH to guests, through the daemon's key and one ControlMaster per VM. */
export interface GuestAccess {
  readonly user: string;
  identityFile(): Promise<string>;
  publicKey(): Promise<string>;
  waitForBanner(options: {
    ip: string;
    deadlineMs: number;
    signal: AbortSignal;
    stillAlive(): Promise<boolean>;
  }): Promise<void>;
  /** Reads the guest's host key from its console and pins it; throws if absent. */
  pinHostKey(options: { consoleLog: string; ip: string; knownHostsFile: string }): Promise<void>;
  exec(target: GuestTarget, exec: GuestExec): Promise<{ exitCode: number | null; signal: string | null }>;
  /** Ends the VM's ControlMaster, if any. */
  close(target: GuestTarget): Promise<void>;
  openTcp(ip: string, port: number, signal?: AbortSignal): Promise<Socket>;
}

export interface VmNetwork {
  readonly gateway: string;
  readonly prefixLength: number;
  allocateIp(used: Iterable<string>): string;
  ensureBridge(signal?: AbortSignal): Promise<void>;
  createTap(tap: string, signal?: AbortSignal): Promise<void>;
  deleteTap(tap: string): Promise<void>;
  removeLeftoverTaps(owned: ReadonlySet<string>): Promise<string[]>;
}

export interface RootDiskHandle {
  path: string;
  format: "qcow2" | "raw";
  handles: Record<string, string>;
}

export interface VmDisks {
  /** Creates the VM's COW root disk over the image's base; `undo` removes it. */
  create(options: {
    vmm: VmmKind;
    base: string;
    target: string;
    sizeBytes: number;
    signal: AbortSignal;
  }): Promise<RootDiskHandle>;
  remove(disk: RootDiskHandle): Promise<void>;
  grow(disk: RootDiskHandle, sizeBytes: number): Promise<void>;
}

/** Per-VM files: directories, handles.json, console logs (implemented in src/sys/vmfiles). */
export type { VmFilesAdapter as VmFiles } from "../../sys/vmfiles/index.ts";

export interface VmmDrivers {
  get(kind: VmmKind): VmmDriver;
  /** Resolves `auto` (config or request) to a concrete driver kind. */
  choose(requested: VmmKind | "auto"): Promise<VmmKind>;
}
