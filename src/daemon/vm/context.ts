/**
 * The VM service's shared context: its dependencies, the row helpers every
 * operation uses (lookup, state changes through the transition table, the
 * wire view), the handle store, the hook runner, and the errors more than
 * one operation raises. Built once per service by `createVmContext`; the
 * operation modules (boot, stop, create, recovery) take it as their first
 * argument and hold no state of their own.
 */

import { join } from "node:path";
import { agentEndpoint } from "../../core/agent/index.ts";
import type { KeyedLocks, Mutex } from "../../core/concurrency/index.ts";
import type { Config } from "../../core/config/index.ts";
import { SNAPSHOT_DISK_FILES } from "../../core/disk/index.ts";
import type { Logger } from "../../core/log/index.ts";
import { type Layout, type VmPaths, vmPaths } from "../../core/paths/index.ts";
import { assertTransition, type VmRecord } from "../../core/vm/index.ts";
import { BangerError, ErrorCode, type Progress, type VmInfo, type VmState } from "../../protocol/index.ts";
import type { ImageRecord, Store } from "../../sys/store/index.ts";
import type { ImageService } from "../image/index.ts";
import { HandleStore } from "./handles.ts";
import { createHookRunner, type HookRunner } from "./hooks.ts";
import type {
  GuestAccess,
  GuestAgents,
  GuestChannel,
  GuestReadiness,
  GuestTarget,
  StoredDisk,
  VmDisks,
  VmFiles,
  VmHook,
  VmmDrivers,
  VmNetwork,
} from "./platform.ts";
import { sshReadiness } from "./readiness/index.ts";
import type { VmmCensus } from "./strays.ts";

export interface OpOptions {
  signal: AbortSignal;
  progress: Progress;
}

export interface VmServiceDeps {
  store: Store;
  layout: Layout;
  config: Config;
  logger: Logger;
  images: Pick<ImageService, "resolve" | "vmlinux">;
  network: VmNetwork;
  drivers: VmmDrivers;
  disks: VmDisks;
  files: VmFiles;
  /** SSH to guests: the key, the banner wait and host key pinning, and the default channel. */
  guest: GuestAccess;
  /** How the service reaches into guests; `guest` (SSH) unless another channel is given. */
  channel?: GuestChannel | undefined;
  /** What a boot waits for before the VM counts as running; SSH's three checks unless given. */
  readiness?: readonly GuestReadiness[] | undefined;
  /**
   * What a clone restored from a snapshot waits for before its identity is
   * applied; the checks must reach the guest without its network (which
   * still has the source's address). Without them snapshots cannot be
   * restored (SSH cannot reach such a guest).
   */
  restoreReadiness?: readonly GuestReadiness[] | undefined;
  /** The guest agent: each boot's initrd carries it, and resume sets the guest clock through it. */
  agents?: GuestAgents | undefined;
  /** Capability hooks run at every start and stop, in this order (stopped in reverse). */
  hooks?: readonly VmHook[] | undefined;
  /** Finds VMMs from /proc, so none survives a lost or torn handles.json (./strays.ts). */
  census?: VmmCensus | undefined;
  vmLocks: KeyedLocks;
  reservation: Mutex;
  now(): Date;
  newId(): string;
  tscKhz(): Promise<number>;
}

export interface VmContext {
  readonly deps: VmServiceDeps;
  readonly handles: HandleStore;
  readonly hooks: HookRunner;
  readonly channel: GuestChannel;
  readonly readiness: readonly GuestReadiness[];
  readonly restoreReadiness: readonly GuestReadiness[] | undefined;
  paths(vm: VmRecord): VmPaths;
  /** The row of the VM named `name`; VM_NOT_FOUND otherwise. */
  byName(name: string): VmRecord;
  /** Writes a state change, asserting the transition table; returns the updated row. */
  setState(vm: VmRecord, state: VmState, lastError?: string | null): VmRecord;
  toInfo(vm: VmRecord): VmInfo;
  /** The one liveness decision: the recorded VMM process is alive and ours. */
  isAlive(vm: VmRecord): Promise<boolean>;
  /** How the guest channel addresses this VM. */
  target(vm: VmRecord): GuestTarget;
  /** The VM's stored root disk; BAD_STATE with a hint when it is missing. */
  storedDisk(vm: VmRecord): Promise<StoredDisk>;
  /** The read-only base under the VM's disk: its snapshot's frozen disk for a clone, else the image's rootfs. */
  diskBase(vm: VmRecord, image: ImageRecord, stored: StoredDisk): string;
  /** BAD_STATE for an op that needs a running VM, with the hint that fits its state. */
  notRunning(vm: VmRecord): BangerError;
}

export function createVmContext(deps: VmServiceDeps): VmContext {
  const { store, layout } = deps;
  const paths = (vm: VmRecord) => vmPaths(layout, vm.id);
  const handles = new HandleStore({ files: deps.files, layout });
  const channel = deps.channel ?? deps.guest;
  const context: VmContext = {
    deps,
    handles,
    hooks: createHookRunner({ hooks: deps.hooks ?? [], logger: deps.logger }),
    channel,
    readiness: deps.readiness ?? sshReadiness(deps.guest, channel),
    restoreReadiness: deps.restoreReadiness,
    paths,
    byName(name) {
      const vm = store.getVmByName(name);
      if (!vm) throw new BangerError(ErrorCode.VM_NOT_FOUND, `no VM named '${name}'`);
      return vm;
    },
    setState(vm, state, lastError = vm.lastError) {
      if (vm.state !== state) assertTransition(vm.name, vm.state, state);
      const updated = { ...vm, state, lastError, updatedAt: deps.now().toISOString() };
      store.setVmState(vm.id, state, lastError, updated.updatedAt);
      return updated;
    },
    toInfo: (vm) => ({
      id: vm.id,
      name: vm.name,
      state: vm.state,
      image: vm.imageName,
      vmm: vm.vmm,
      cpus: vm.cpus,
      memoryMib: vm.memoryMib,
      diskGib: vm.diskGib,
      guestIp: vm.guestIp,
      mac: vm.mac,
      createdAt: vm.createdAt,
      updatedAt: vm.updatedAt,
      lastError: vm.lastError,
      dir: paths(vm).dir,
      pid: handles.cached(vm.id)?.pid ?? null,
    }),
    async isAlive(vm) {
      const handle = handles.vmmHandle(await handles.load(vm));
      return handle !== undefined && (await deps.drivers.get(vm.vmm).isRunning(handle));
    },
    target: (vm) => ({
      vmId: vm.id,
      vmName: vm.name,
      ip: vm.guestIp,
      knownHostsFile: paths(vm).knownHosts,
      agent: agentEndpoint(vm.vmm, paths(vm).dir),
    }),
    async storedDisk(vm) {
      const disk = await deps.disks.locate(paths(vm).dir);
      if (!disk) {
        throw new BangerError(ErrorCode.BAD_STATE, `the root disk of VM '${vm.name}' is missing`, {
          hint: `delete the VM with \`banger vm delete ${vm.name}\` and create it again`,
        });
      }
      return disk;
    },
    diskBase(vm, image, stored) {
      const snapshotId = store.snapshotOfVm(vm.id);
      const snapshot = snapshotId === undefined ? undefined : store.getSnapshotById(snapshotId);
      return snapshot ? join(snapshot.dir, SNAPSHOT_DISK_FILES[stored.format]) : image.rootfs;
    },
    notRunning: (vm) =>
      vm.state === "paused"
        ? new BangerError(ErrorCode.BAD_STATE, `VM '${vm.name}' is paused`, {
            hint: `resume it with \`banger vm resume ${vm.name}\``,
          })
        : new BangerError(ErrorCode.BAD_STATE, `VM '${vm.name}' is not running (it is ${vm.state})`, {
            hint: `start it with \`banger vm start ${vm.name}\``,
          }),
  };
  return context;
}
