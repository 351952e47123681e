/**
 * The fake adapters behind the VM service's ports. Each call is one
 * numbered step (faults.ts); each acquisition and undo lands in the event
 * log and the ledger (ledger.ts). Root disks are named from the real table
 * (ROOT_DISK_FILES), so the fake cannot drift from the real layout.
 */
import { existsSync } from "node:fs";
import { copyFile, rm, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { sleep } from "../../../src/core/async/index.ts";
import type { Config } from "../../../src/core/config/index.ts";
import {
  ROOT_DISK_FILES,
  rootDiskStrategyFor,
  SNAPSHOT_DISK_FILES,
  STORED_DISK_LOOKUP,
} from "../../../src/core/disk/index.ts";
import { allocateGuestIp, parseSubnet } from "../../../src/core/network/index.ts";
import { type Layout, vmPaths } from "../../../src/core/paths/index.ts";
import type { VmmDriver, VmmHandle } from "../../../src/core/vmm/contract.ts";
import { qemuControlSocket } from "../../../src/core/vmm/qemu-plan.ts";
import type {
  GuestAccess,
  VmDisks,
  VmFiles,
  VmHook,
  VmmDrivers,
  VmNetwork,
  VmServiceDeps,
} from "../../../src/daemon/vm/index.ts";
import type { VmmCensus } from "../../../src/daemon/vm/strays.ts";
import { BangerError, ErrorCode } from "../../../src/protocol/index.ts";
import type { ImageRecord } from "../../../src/sys/store/index.ts";
import { createVmFiles } from "../../../src/sys/vmfiles/index.ts";
import { checkSignal, type Faults } from "./faults.ts";
import type { PassableGate } from "./gates.ts";
import type { EventLog, Ledger } from "./ledger.ts";

/** What every fake adapter shares. */
export interface FakeHost {
  log: EventLog;
  ledger: Ledger;
  faults: Faults;
  config: Config;
  layout: Layout;
}

const FIRST_PID = 100_000;

export function fakeNetwork({ faults, ledger, log, config }: FakeHost): VmNetwork {
  const subnet = parseSubnet(config.network.subnet);
  return {
    gateway: subnet.gateway,
    prefixLength: subnet.prefixLength,
    allocateIp(used) {
      faults.step("network.allocateIp");
      return allocateGuestIp(subnet, used);
    },
    async ensureBridge(signal) {
      faults.step("network.ensureBridge");
      checkSignal("network.ensureBridge", signal);
      log.record({ kind: "bridge-ensure", bridge: config.network.bridge });
    },
    async createTap(tap, signal) {
      faults.step("network.createTap");
      checkSignal("network.createTap", signal);
      ledger.acquire({ kind: "tap", id: tap }, { kind: "tap-create", tap });
    },
    async forgetNeighbor() {
      faults.step("network.forgetNeighbor");
    },
    async deleteTap(tap) {
      faults.step("network.deleteTap");
      ledger.release({ kind: "tap", id: tap }, { kind: "tap-delete", tap });
    },
    async removeLeftoverTaps(owned) {
      faults.step("network.removeLeftoverTaps");
      const removed: string[] = [];
      for (const resource of ledger.held()) {
        if (resource.kind !== "tap" || owned.has(resource.id)) continue;
        ledger.release(resource, { kind: "tap-delete", tap: resource.id });
        removed.push(resource.id);
      }
      return removed;
    },
  };
}

/** Root disks: an empty real file (so `locate` finds it like the real adapter); attaching acquires, like dm-snapshot. */
export function fakeDisks({ faults, ledger, log }: FakeHost): VmDisks {
  return {
    async create(disk) {
      faults.step("disks.create");
      checkSignal("disks.create", disk.signal);
      const strategy = await rootDiskStrategyFor(disk.formats, async () => "sparse-copy");
      const { file: name, format } = ROOT_DISK_FILES[strategy];
      const file = join(disk.vmDir, name);
      await writeFile(file, "");
      ledger.acquire({ kind: "disk", id: file }, { kind: "disk-create", file });
      return { strategy, file, format };
    },
    async locate(vmDir) {
      faults.step("disks.locate");
      for (const strategy of STORED_DISK_LOOKUP) {
        const { file: name, format } = ROOT_DISK_FILES[strategy];
        const file = join(vmDir, name);
        if (existsSync(file)) return { strategy, file, format };
      }
      return undefined;
    },
    async attach(attach) {
      faults.step("disks.attach");
      checkSignal("disks.attach", attach.signal);
      const file = attach.disk.file;
      ledger.acquire({ kind: "attach", id: file }, { kind: "disk-attach", file });
      return { path: file, handles: { strategy: "file", path: file } };
    },
    async detach(handles) {
      faults.step("disks.detach");
      if (handles.strategy === "file") {
        ledger.release({ kind: "attach", id: handles.path }, { kind: "disk-detach", file: handles.path });
      }
    },
    async remove(disk) {
      faults.step("disks.remove");
      await rm(disk.file, { force: true });
      ledger.release({ kind: "disk", id: disk.file }, { kind: "disk-remove", file: disk.file });
    },
    async grow(disk, sizeBytes) {
      faults.step("disks.grow");
      log.record({ kind: "disk-grow", file: disk.file, sizeBytes });
    },
    async copyForSnapshot(disk, dir, signal) {
      faults.step("disks.copyForSnapshot");
      checkSignal("disks.copyForSnapshot", signal);
      const file = join(dir, SNAPSHOT_DISK_FILES[disk.format]);
      await copyFile(disk.file, file);
      log.record({ kind: "disk-snapshot", file: disk.file, to: file });
      return { file, format: disk.format };
    },
  };
}

/** A capability hook whose start acquires a per-VM resource and whose stop releases it. */
export function fakeHook({ faults, ledger }: FakeHost, name: string, phase: VmHook["phase"]): VmHook {
  return {
    name,
    phase,
    async start(context) {
      faults.step(`hook.${name}.start`);
      checkSignal(`hook.${name}.start`, context.signal);
      ledger.acquire(
        { kind: "hook", id: `${name} ${context.vmId}` },
        { kind: "hook-start", hook: name, vmId: context.vmId },
      );
    },
    async stop(context) {
      faults.step(`hook.${name}.stop`);
      const resource = { kind: "hook", id: `${name} ${context.vmId}` } as const;
      if (ledger.holds(resource))
        ledger.release(resource, { kind: "hook-stop", hook: name, vmId: context.vmId });
    },
  };
}

/** The real per-VM files over the temp dir, with directories and handles.json in the ledger. */
export function fakeFiles({ faults, ledger, log }: FakeHost): VmFiles {
  const real = createVmFiles();
  /** A call of the real adapter that counts as one step. */
  const through =
    <A extends unknown[], R>(step: string, call: (...args: A) => Promise<R>) =>
    (...args: A): Promise<R> => {
      faults.step(step);
      return call(...args);
    };
  return {
    async makeDir(dir) {
      faults.step("files.makeDir");
      await real.makeDir(dir);
      ledger.acquire({ kind: "dir", id: dir }, { kind: "dir-make", path: dir });
    },
    async removeDir(dir) {
      faults.step("files.removeDir");
      await real.removeDir(dir);
      // Files inside go with the directory; a disk needs its own undo (it may hold more than a file).
      for (const resource of ledger.held()) {
        if (resource.kind === "handles" && resource.id.startsWith(`${dir}/`)) {
          ledger.release(resource, { kind: "handles-remove", path: resource.id });
        }
      }
      ledger.release({ kind: "dir", id: dir }, { kind: "dir-remove", path: dir });
    },
    readHandles: through("files.readHandles", real.readHandles),
    rename: through("files.rename", real.rename),
    writeJson: through("files.writeJson", real.writeJson),
    async writeHandles(path, handles) {
      faults.step("files.writeHandles");
      await real.writeHandles(path, handles);
      ledger.acquire({ kind: "handles", id: path }, { kind: "handles-write", path });
    },
    async removeFile(path) {
      faults.step("files.removeFile");
      await real.removeFile(path);
      const resource = { kind: "handles", id: path } as const;
      if (ledger.holds(resource)) ledger.release(resource, { kind: "handles-remove", path });
      else log.record({ kind: "file-remove", path });
    },
    rotate: through("files.rotate", real.rotate),
    tail: through("files.tail", real.tail),
    exists: through("files.exists", real.exists),
    size: through("files.size", real.size),
    stream: through("files.stream", real.stream),
  };
}

/**
 * One fake QEMU-like driver: boots and stops pass their gates; liveness is
 * the live-pid table unless replaced. The census sees that same table, as
 * /proc would: every live fake VMM, whatever handles.json says.
 */
export function fakeVmms(
  { faults, ledger, log, layout }: FakeHost,
  options: {
    boots: PassableGate;
    stops: PassableGate;
    bootDelayMs?: number | undefined;
    isRunning?: ((handle: VmmHandle) => Promise<boolean>) | undefined;
  },
): { drivers: VmmDrivers; census: VmmCensus } {
  let nextPid = FIRST_PID;
  /** Live fake VMM processes: pid -> VM id. */
  const live = new Map<number, string>();
  const ending = (handle: VmmHandle, how: "vmm-stop" | "vmm-kill" | "stray-kill") => {
    const vmId = live.get(handle.pid);
    if (vmId === undefined) return;
    live.delete(handle.pid);
    ledger.release({ kind: "vmm", id: `${vmId} pid=${handle.pid}` }, { kind: how, vmId, pid: handle.pid });
  };
  const vmOf = (handle: VmmHandle) => live.get(handle.pid) ?? "?";
  const driver: VmmDriver = {
    kind: "qemu",
    features: {
      diskFormats: ["qcow2", "raw"],
      kernelFormats: ["bzImage"],
      pauseResume: true,
      vsock: false,
      softwareEmulation: true,
      snapshots: true,
    },
    snapshots: {
      async describe(spec) {
        faults.step("driver.describe");
        return {
          signature: `${spec.cpus.toString(16)}f${spec.memoryMib.toString(16)}`.padEnd(64, "0"),
          vmmVersion: null,
          accel: "tcg",
        };
      },
      async save(handle, dir, signal) {
        faults.step("driver.save");
        checkSignal("driver.save", signal);
        await writeFile(join(dir, "state"), "saved guest memory");
        log.record({ kind: "snapshot-save", vmId: vmOf(handle), dir });
      },
      async restore(spec, dir, signal) {
        faults.step("driver.restore");
        checkSignal("driver.restore", signal);
        const pid = nextPid++;
        live.set(pid, spec.vmId);
        ledger.acquire(
          { kind: "vmm", id: `${spec.vmId} pid=${pid}` },
          { kind: "vmm-start", vmId: spec.vmId, pid },
        );
        log.record({ kind: "restore-start", vmId: spec.vmId, dir });
        return { pid, pidStartTicks: pid * 10, controlSocket: qemuControlSocket(spec.vmDir) };
      },
    },
    async start(spec, signal) {
      faults.step("driver.start");
      log.record({ kind: "boot-start", vmId: spec.vmId });
      try {
        if (options.bootDelayMs) await sleep(options.bootDelayMs, signal).catch(() => undefined);
        await options.boots.pass(spec.vmId, "driver.start", signal);
        checkSignal("driver.start", signal);
      } catch (error) {
        log.record({ kind: "boot-abort", vmId: spec.vmId });
        throw error;
      }
      const pid = nextPid++;
      live.set(pid, spec.vmId);
      ledger.acquire(
        { kind: "vmm", id: `${spec.vmId} pid=${pid}` },
        { kind: "vmm-start", vmId: spec.vmId, pid },
      );
      log.record({ kind: "boot-end", vmId: spec.vmId });
      return { pid, pidStartTicks: pid * 10, controlSocket: qemuControlSocket(spec.vmDir) };
    },
    async stop(handle) {
      faults.step("driver.stop");
      const vmId = vmOf(handle);
      log.record({ kind: "stop-begin", vmId });
      await options.stops.pass(vmId, "driver.stop");
      ending(handle, "vmm-stop");
    },
    async kill(handle) {
      faults.step("driver.kill");
      ending(handle, "vmm-kill");
    },
    async isRunning(handle) {
      faults.step("driver.isRunning");
      if (options.isRunning) return options.isRunning(handle);
      return live.has(handle.pid) && handle.pidStartTicks === handle.pid * 10;
    },
    async pause(handle) {
      faults.step("driver.pause");
      log.record({ kind: "pause", vmId: vmOf(handle) });
    },
    async resume(handle) {
      faults.step("driver.resume");
      log.record({ kind: "resume", vmId: vmOf(handle) });
    },
    async reattach(handle) {
      faults.step("driver.reattach");
      log.record({ kind: "reattach", vmId: vmOf(handle) });
      return "running";
    },
  };
  const drivers: VmmDrivers = {
    // A lookup, not a platform call: it is not a numbered step.
    get(kind) {
      if (kind !== "qemu") throw new BangerError(ErrorCode.TOOL_MISSING, `no fake ${kind} driver`);
      return driver;
    },
    async choose(requested) {
      faults.step("drivers.choose");
      if (requested === "firecracker") {
        throw new BangerError(ErrorCode.TOOL_MISSING, "firecracker is not available (fake platform)");
      }
      return "qemu";
    },
  };
  const census: VmmCensus = {
    async list() {
      return [...live].map(([pid, vmId]) => ({
        vmId,
        handle: { pid, pidStartTicks: pid * 10, controlSocket: qemuControlSocket(vmPaths(layout, vmId).dir) },
      }));
    },
    async kill(handle) {
      ending(handle, "stray-kill");
    },
  };
  return { drivers, census };
}

/** SSH to guests: exec opens a per-VM session (acquired) that close ends. */
export function fakeGuest({ faults, ledger, log, layout }: FakeHost): GuestAccess {
  const sessions = new Set<string>();
  return {
    user: "root",
    async identityFile() {
      faults.step("guest.identityFile");
      return join(layout.sshDir, "id_ed25519");
    },
    async publicKey() {
      faults.step("guest.publicKey");
      return "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFakeFakeFakeFakeFakeFakeFakeFakeFakeFakeFake banger";
    },
    async waitForBanner(banner) {
      faults.step("guest.waitForBanner");
      checkSignal("guest.waitForBanner", banner.signal);
      if (!(await banner.stillAlive())) {
        throw new BangerError(ErrorCode.BOOT_FAILED, `the VMM serving ${banner.ip} exited during boot`);
      }
      log.record({ kind: "banner", ip: banner.ip });
    },
    async pinHostKey(pin) {
      faults.step("guest.pinHostKey");
      await writeFile(pin.knownHostsFile, `${pin.ip} ssh-ed25519 AAAAfake\n`, { mode: 0o600 });
      log.record({ kind: "hostkey-pin", ip: pin.ip });
    },
    async pinKey(pin) {
      faults.step("guest.pinKey");
      await writeFile(pin.knownHostsFile, `${pin.ip} ${pin.key.type} ${pin.key.base64}\n`, { mode: 0o600 });
      log.record({ kind: "hostkey-pin", ip: pin.ip });
    },
    async exec(target, exec) {
      const cancelledHere = faults.step("guest.exec");
      // Aborted before the call: the real adapter spawns nothing.
      if (!cancelledHere) checkSignal("guest.exec", exec.signal);
      // Like the real adapter, the ControlMaster comes up before the command runs;
      // a cancel that arrives during the command leaves it up.
      if (!sessions.has(target.vmId)) {
        sessions.add(target.vmId);
        ledger.acquire({ kind: "ssh", id: target.vmId }, { kind: "ssh-open", vmId: target.vmId });
      }
      checkSignal("guest.exec", exec.signal);
      log.record({ kind: "exec", vmId: target.vmId, argv: exec.argv });
      // A clone's identity program prints the host key it was given, as the guest's program does.
      if (exec.argv[3] === "banger-identity")
        await exec.onStdout?.(Buffer.from(`banger-init: hostkey ${exec.argv.at(-1)}\n`));
      return { exitCode: 0, signal: null };
    },
    async close(target) {
      faults.step("guest.close");
      if (sessions.delete(target.vmId)) {
        ledger.release({ kind: "ssh", id: target.vmId }, { kind: "ssh-close", vmId: target.vmId });
      }
    },
    async openTcp() {
      faults.step("guest.openTcp");
      throw new BangerError(ErrorCode.GUEST_UNREACHABLE, "the fake platform has no guest network");
    },
  };
}

/** Image resolution that knows the one image in the store. */
export function fakeImages({ faults }: FakeHost, image: ImageRecord): VmServiceDeps["images"] {
  return {
    async resolve(ref, resolveOptions) {
      faults.step("images.resolve");
      checkSignal("images.resolve", resolveOptions?.signal);
      if (ref !== image.name && ref !== image.id) {
        throw new BangerError(ErrorCode.IMAGE_NOT_FOUND, `no image '${ref}' (fake platform)`);
      }
      return image;
    },
    async vmlinux(vmImage, vmlinuxOptions) {
      faults.step("images.vmlinux");
      checkSignal("images.vmlinux", vmlinuxOptions?.signal);
      return `${vmImage.kernel}.vmlinux`;
    },
  };
}
