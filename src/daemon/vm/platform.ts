/**
 * What the VM service needs from the host, as narrow interfaces. The
 * composition root builds the real ones from src/sys; unit tests pass fakes.
 */

import type { Socket } from "node:net";
import type { Readable } from "node:stream";
import type { AgentEndpoint } from "../../core/agent/index.ts";
import type { DiskFormat, DiskHandles, RootDiskStrategy } from "../../core/disk/index.ts";
import type { VmPaths } from "../../core/paths/index.ts";
import type { HostKey } from "../../core/ssh/index.ts";
import type { VmHandles, VmRecord } from "../../core/vm/index.ts";
import type { VmmDriver } from "../../core/vmm/contract.ts";
import type { ExecSignal, ProgressStep, VmmKind } from "../../protocol/index.ts";
import type { AgentFiles } from "../../sys/agent/index.ts";

export interface GuestExec {
  argv: readonly string[];
  env?: readonly string[] | undefined;
  cwd?: string | undefined;
  user?: string | undefined;
  tty?: { cols: number; rows: number } | undefined;
  stdin?: Readable | undefined;
  onStdout?: (chunk: Buffer) => void | Promise<void>;
  onStderr?: (chunk: Buffer) => void | Promise<void>;
  /** Aborting kills the guest process group and ends the exec with CANCELLED. */
  signal?: AbortSignal | undefined;
  /** Kills the group after this long and answers `{ exitCode: null, signal: "SIGKILL", timedOut: true }`. */
  timeoutMs?: number | undefined;
  /** Returns as soon as the process started, `{ exitCode: null, signal: null }`; it runs on alone. */
  detach?: boolean | undefined;
  /** Registers the receivers of the client's signals and PTY size changes. */
  control?:
    | {
        onSignal(listener: (signal: ExecSignal) => void): void;
        onResize(listener: (size: { cols: number; rows: number }) => void): void;
      }
    | undefined;
}

export interface GuestExecResult {
  exitCode: number | null;
  signal: string | null;
  timedOut?: boolean;
}

/** The guest agent channel of each VM (src/sys/agent), implemented there. */
/** A guest's files (stat, list, read, write, mkdir, link, attributes), without any program in the guest. */
export type { AgentFiles as GuestFiles, GuestAgentsAdapter as GuestAgents } from "../../sys/agent/index.ts";

export interface GuestTarget {
  vmId: string;
  vmName: string;
  ip: string;
  knownHostsFile: string;
  /** Where the guest agent is reached (from the VM's driver and directory). */
  agent: AgentEndpoint;
}

/**
 * The way into a running guest: every guest command the service runs (exec,
 * the stats probe, health) and every TCP connection (proxy) goes through
 * it. The guest agent implements it (agent-channel.ts); SSH (one
 * ControlMaster per VM) still can.
 */
export interface GuestChannel {
  exec(target: GuestTarget, exec: GuestExec): Promise<GuestExecResult>;
  /** A TCP connection to `port` inside the guest. */
  openTcp(target: GuestTarget, port: number, signal?: AbortSignal): Promise<Socket>;
  /** The guest's files through the agent; absent on a channel that has no file requests (SSH). */
  files?(target: GuestTarget): AgentFiles;
  /** Ends the VM's channel (its ControlMaster), if any; idempotent. */
  close(target: GuestTarget): Promise<void>;
}

/** SSH to guests, through the daemon's key and one ControlMaster per VM: the channel plus what boot needs. */
export interface GuestAccess extends GuestChannel {
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
  /** Pins a host key the guest reported another way (a clone's new key, through the guest channel). */
  pinKey(options: { key: HostKey; ip: string; knownHostsFile: string }): Promise<void>;
}

/** A booting guest, as a readiness check sees it. */
export interface ReadyingGuest {
  vm: VmRecord;
  paths: VmPaths;
  target: GuestTarget;
  /** The boot timeout; a check that waits must give up by then. */
  deadlineMs: number;
  /** False once the VMM has exited; a check that waits must stop then. */
  stillAlive(): Promise<boolean>;
}

/**
 * One thing that must hold before a booted guest counts as running (lima's
 * requirements). The boot's awaitGuest step runs the registered checks in
 * order; the first that throws fails the boot, and its `hint` leads the
 * error's hint.
 */
export interface GuestReadiness {
  readonly name: string;
  /** What to try when the check fails. */
  readonly hint: string;
  /** A progress line to show before the check runs. */
  announce?(vmName: string): { step: ProgressStep; message: string };
  wait(guest: ReadyingGuest, signal: AbortSignal): Promise<void>;
}

export interface VmNetwork {
  readonly gateway: string;
  readonly prefixLength: number;
  allocateIp(used: Iterable<string>): string;
  ensureBridge(signal?: AbortSignal): Promise<void>;
  createTap(tap: string, signal?: AbortSignal): Promise<void>;
  deleteTap(tap: string): Promise<void>;
  /** Forgets the host's neighbour entry for a guest address, so a new MAC there is learnt at once. */
  forgetNeighbor(ip: string): Promise<void>;
  removeLeftoverTaps(owned: ReadonlySet<string>): Promise<string[]>;
}

/** A VM's stored root disk: which COW strategy made it and the file that holds it. */
export interface StoredDisk {
  strategy: RootDiskStrategy;
  /** The per-VM file (overlay, raw copy, or dm COW store). */
  file: string;
  format: DiskFormat;
}

export interface VmDisks {
  /**
   * Creates the VM's COW root disk in `vmDir` over the image's base; the
   * base is never written. `formats` are what the VM's driver opens
   * (`features.diskFormats`); they decide the strategy.
   */
  create(options: {
    formats: readonly DiskFormat[];
    base: string;
    /** raw (an image's rootfs) unless given; a qcow2 base (a snapshot's disk) needs the qcow2 overlay. */
    baseFormat?: DiskFormat | undefined;
    vmDir: string;
    sizeBytes: number;
    signal: AbortSignal;
  }): Promise<StoredDisk>;
  /** The disk stored in `vmDir`, if any. */
  locate(vmDir: string): Promise<StoredDisk | undefined>;
  /** Makes the disk openable for one boot; `handles` go to handles.json for `detach`. */
  attach(options: {
    disk: StoredDisk;
    base: string;
    sizeBytes: number;
    signal: AbortSignal;
  }): Promise<{ path: string; handles: DiskHandles }>;
  /** Undoes `attach` from its handles (as read back from handles.json); idempotent. */
  detach(handles: DiskHandles): Promise<void>;
  remove(disk: StoredDisk): Promise<void>;
  grow(disk: StoredDisk, sizeBytes: number): Promise<void>;
  /** Copies the disk (its VMM paused, its writes flushed) into a snapshot directory; refused for dm-snapshot. */
  copyForSnapshot(
    disk: StoredDisk,
    dir: string,
    signal: AbortSignal,
  ): Promise<{ file: string; format: DiskFormat }>;
}

/** Per-VM files: the directory, handles.json (written atomically), console logs (implemented by src/sys/vmfiles). */
export interface VmFiles {
  makeDir(dir: string): Promise<void>;
  removeDir(dir: string): Promise<void>;
  /** undefined when the file is absent, torn or not a handles file. */
  readHandles(path: string): Promise<VmHandles | undefined>;
  writeHandles(path: string, handles: VmHandles): Promise<void>;
  removeFile(path: string): Promise<void>;
  /** rename(2): atomic within the VM's directory. */
  rename(from: string, to: string): Promise<void>;
  /** Writes `value` as JSON, atomically, mode 0600. */
  writeJson(path: string, value: unknown): Promise<void>;
  /** Moves the file to `<path>.1`, if it exists. */
  rotate(path: string): Promise<void>;
  /** The last `bytes` bytes as text. */
  tail(path: string, bytes: number): Promise<string>;
  exists(path: string): Promise<boolean>;
  /** Bytes in the file; 0 when it is absent. */
  size(path: string): Promise<number>;
  /** Sends the file from `offset`, then (with `follow`) what is appended, until `signal` aborts. */
  stream(
    path: string,
    options: { offset: number; follow: boolean; signal: AbortSignal; onData(chunk: Buffer): Promise<void> },
  ): Promise<void>;
}

export interface VmmDrivers {
  get(kind: VmmKind): VmmDriver;
  /** Resolves `auto` (config or request) to a concrete driver kind. */
  choose(requested: VmmKind | "auto"): Promise<VmmKind>;
}

export interface VmHookContext {
  vmId: string;
  vmName: string;
  guestIp: string;
  tap: string;
}

/**
 * A capability hook (networking, DNS, auth, workspace features): `start`
 * runs at every VM start in its phase, `stop` undoes it. A hook whose
 * `start` throws fails the start, and the hooks started before it are
 * stopped in reverse order. `stop` must be idempotent: it also runs for a
 * VM whose start was interrupted, whose VMM died, or that a new daemon
 * found dead at reconcile.
 */
export interface VmHook {
  readonly name: string;
  /** `before-boot`: host side, the tap exists. `guest-ready`: the guest answers SSH. */
  readonly phase: "before-boot" | "guest-ready";
  start(context: VmHookContext & { signal: AbortSignal }): Promise<void>;
  stop(context: VmHookContext): Promise<void>;
}
