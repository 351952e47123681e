/**
 * Real implementations of the VM service's platform interfaces, built from
 * src/sys. Only the composition root uses this file.
 */
import { mkdir } from "node:fs/promises";
import { join } from "node:path";
import { errorMessage } from "../../core/async/index.ts";
import type { Config } from "../../core/config/index.ts";
import type { RootDiskStrategy } from "../../core/disk/index.ts";
import { capabilitiesFor, parseFirecrackerVersion } from "../../core/firecracker/index.ts";
import type { Logger } from "../../core/log/index.ts";
import { allocateGuestIp, parseSubnet } from "../../core/network/index.ts";
import type { Layout } from "../../core/paths/index.ts";
import { vmPaths } from "../../core/paths/index.ts";
import type { VmmDriver } from "../../core/vmm/contract.ts";
import { BangerError, type DoctorCheck, ErrorCode, type VmmKind } from "../../protocol/index.ts";
import {
  attachRootDisk,
  type CowStrategyProbe,
  createRootDisk,
  detachRootDisk,
  growRootDisk,
  removeRootDisk,
} from "../../sys/disk/index.ts";
import type { FirecrackerDriver } from "../../sys/firecracker/index.ts";
import { createHostNetwork } from "../../sys/network/index.ts";
import type { Runner } from "../../sys/runner/index.ts";
import {
  createSshSession,
  ensureClientKey,
  openTcp,
  pinHostKey,
  type SshSession,
  waitForSshBanner,
} from "../../sys/ssh/index.ts";
import type { GuestAccess, VmDisks, VmmDrivers, VmNetwork } from "../vm/index.ts";

export function createVmNetwork(options: { runner: Runner; logger: Logger; config: Config }): VmNetwork {
  const subnet = parseSubnet(options.config.network.subnet);
  const host = createHostNetwork({
    runner: options.runner,
    logger: options.logger,
    bridge: options.config.network.bridge,
    subnet,
  });
  return {
    gateway: subnet.gateway,
    prefixLength: subnet.prefixLength,
    allocateIp: (used) => allocateGuestIp(subnet, used),
    ensureBridge: (signal) => host.ensureBridge(signal),
    createTap: (tap, signal) => host.createTap(tap, signal),
    deleteTap: (tap) => host.deleteTap(tap),
    removeLeftoverTaps: (owned) => host.removeLeftoverTaps(owned),
  };
}

/**
 * Root disks: a qcow2 overlay for QEMU; for raw-only VMMs the strategy the
 * state directory's filesystem supports (probed once, see probeCowStrategy).
 * The stored file's name says which strategy made it.
 */
export function createVmDisks(options: {
  runner: Runner;
  rawStrategy: () => Promise<CowStrategyProbe>;
  exists(path: string): Promise<boolean>;
}): VmDisks {
  const { runner } = options;
  const fileFor = (vmDir: string, strategy: RootDiskStrategy) =>
    strategy === "qcow2-overlay"
      ? join(vmDir, "root.qcow2")
      : strategy === "dm-snapshot"
        ? join(vmDir, "root.cow")
        : join(vmDir, "root.raw");
  const candidates = [
    { name: "root.qcow2", strategy: "qcow2-overlay", format: "qcow2" },
    { name: "root.cow", strategy: "dm-snapshot", format: "raw" },
    { name: "root.raw", strategy: "sparse-copy", format: "raw" },
  ] as const;
  return {
    async create(o) {
      const strategy = o.vmm === "qemu" ? "qcow2-overlay" : (await options.rawStrategy()).strategy;
      const disk = await createRootDisk({
        strategy,
        base: o.base,
        target: fileFor(o.vmDir, strategy),
        sizeBytes: o.sizeBytes,
        runner,
        signal: o.signal,
      });
      return { strategy, file: disk.handles.target ?? fileFor(o.vmDir, strategy), format: disk.format };
    },
    async locate(vmDir) {
      for (const candidate of candidates) {
        const file = join(vmDir, candidate.name);
        if (await options.exists(file))
          return { strategy: candidate.strategy, file, format: candidate.format };
      }
      return undefined;
    },
    async attach(o) {
      const attached = await attachRootDisk({
        strategy: o.disk.strategy,
        base: o.base,
        target: o.disk.file,
        sizeBytes: o.sizeBytes,
        runner,
        signal: o.signal,
      });
      return { path: attached.path, handles: attached.handles };
    },
    detach: (handles) => detachRootDisk({ handles, runner }),
    remove: (disk) => removeRootDisk({ handles: { target: disk.file }, runner }),
    grow: (disk, sizeBytes) => growRootDisk({ strategy: disk.strategy, path: disk.file, sizeBytes, runner }),
  };
}

export function createGuestAccess(options: { layout: Layout; runner: Runner }): GuestAccess {
  const sessions = new Map<string, SshSession>();
  let key: Promise<Awaited<ReturnType<typeof ensureClientKey>>> | undefined;
  const clientKey = () => {
    key ??= ensureClientKey(options.layout.sshDir, options.runner).catch((error: unknown) => {
      key = undefined;
      throw error;
    });
    return key;
  };
  const session = async (target: { vmId: string; ip: string; knownHostsFile: string }) => {
    let existing = sessions.get(target.vmId);
    if (!existing) {
      await mkdir(options.layout.sshControlDir, { recursive: true, mode: 0o700 });
      existing = createSshSession({
        identityFile: (await clientKey()).privateKey,
        knownHostsFile: target.knownHostsFile,
        controlPath: vmPaths(options.layout, target.vmId).sshControl,
        user: "root",
        host: target.ip,
        runner: options.runner,
      });
      sessions.set(target.vmId, existing);
    }
    return existing;
  };
  return {
    user: "root",
    identityFile: async () => (await clientKey()).privateKey,
    publicKey: async () => (await clientKey()).publicKey,
    waitForBanner: (o) =>
      waitForSshBanner({
        host: o.ip,
        port: 22,
        deadlineMs: o.deadlineMs,
        signal: o.signal,
        stillAlive: o.stillAlive,
      }),
    pinHostKey: async (o) => void (await pinHostKey(o)),
    exec: async (target, exec) => (await session(target)).exec(exec),
    close: async (target) => {
      const existing = sessions.get(target.vmId);
      sessions.delete(target.vmId);
      if (existing) await existing.close();
    },
    openTcp: (ip, port, signal) => openTcp(ip, port, signal),
  };
}

/**
 * Driver choice: an explicit `firecracker` needs a working binary (its
 * `--version` probe); `auto` also needs KVM, else it falls back to QEMU,
 * which runs everywhere. `get` always answers, so VMs made earlier can be
 * stopped and killed even when the binary has gone since.
 */
export function createDrivers(options: {
  config: Config;
  qemu: VmmDriver;
  firecracker: FirecrackerDriver;
  kvmUsable(): Promise<boolean>;
}): VmmDrivers {
  const binary = options.config.vmm.firecracker_binary;
  const firecrackerProblem = async (): Promise<BangerError | undefined> => {
    try {
      await options.firecracker.probe();
      return undefined;
    } catch (error) {
      if (error instanceof BangerError && error.code !== ErrorCode.TOOL_MISSING) return error;
      return new BangerError(ErrorCode.TOOL_MISSING, `firecracker ('${binary}') is not available`, {
        hint: "install a firecracker release binary (>= 1.8) on PATH or set vmm.firecracker_binary; it needs KVM. Or use --vmm qemu",
        cause: error,
      });
    }
  };
  return {
    get: (kind: VmmKind) => (kind === "qemu" ? options.qemu : options.firecracker),
    async choose(requested) {
      if (requested === "qemu") return "qemu";
      const problem = await firecrackerProblem();
      if (requested === "firecracker") {
        if (problem) throw problem;
        return "firecracker";
      }
      return !problem && (await options.kvmUsable()) ? "firecracker" : "qemu";
    },
  };
}

/** `banger doctor`: is the firecracker binary there, which version, what it can do. */
export async function firecrackerDoctorCheck(options: {
  config: Config;
  runner: Runner;
}): Promise<DoctorCheck> {
  const binary = options.config.vmm.firecracker_binary;
  try {
    const version = await options.runner.run([binary, "--version"], { timeoutMs: 10_000 });
    const parsed = parseFirecrackerVersion(version.stdout);
    const caps = capabilitiesFor(parsed);
    const has = Object.entries(caps)
      .filter(([, on]) => on)
      .map(([name]) => name);
    return {
      name: "firecracker",
      status: "ok",
      detail: `${binary} is Firecracker v${parsed.text} (${has.join(", ") || "no optional features"}); it needs KVM`,
    };
  } catch (error) {
    const missing = error instanceof BangerError && error.code === ErrorCode.TOOL_MISSING;
    return {
      name: "firecracker",
      status: "warn",
      detail: missing
        ? `${binary} is not installed: VMs use the QEMU driver`
        : `${binary} is not usable: ${errorMessage(error)}`,
      hint: "optional: install a Firecracker release (>= 1.8) on a KVM host for --vmm firecracker",
    };
  }
}

/** `banger doctor`: which raw copy-on-write strategy Firecracker disks get here, and why. */
export function cowDoctorCheck(probe: CowStrategyProbe): DoctorCheck {
  return {
    name: "cow-strategy",
    status: probe.strategy === "sparse-copy" ? "warn" : "ok",
    detail: `raw root disks use ${probe.strategy}: ${probe.reason}`,
    ...(probe.strategy === "sparse-copy"
      ? {
          hint: "each Firecracker VM copies the whole base image; put the state directory on XFS or btrfs for instant reflink copies",
        }
      : {}),
  };
}
