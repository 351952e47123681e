/**
 * Real implementations of the VM service's platform interfaces, built from
 * src/sys. Only the composition root uses this file.
 */
import { mkdir, rm } from "node:fs/promises";
import type { Config } from "../../core/config/index.ts";
import type { Logger } from "../../core/log/index.ts";
import { allocateGuestIp, parseSubnet } from "../../core/network/index.ts";
import type { Layout } from "../../core/paths/index.ts";
import { vmPaths } from "../../core/paths/index.ts";
import type { VmmDriver } from "../../core/vmm/contract.ts";
import { BangerError, ErrorCode, type VmmKind } from "../../protocol/index.ts";
import { createRootDisk, growRootDisk, removeRootDisk } from "../../sys/disk/index.ts";
import type { HostProbes } from "../../sys/host/index.ts";
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

export function createVmDisks(runner: Runner): VmDisks {
  return {
    async create(options) {
      const strategy = options.vmm === "qemu" ? "qcow2-overlay" : "sparse-copy";
      const disk = await createRootDisk({
        strategy,
        base: options.base,
        target: options.target,
        sizeBytes: options.sizeBytes,
        runner,
        signal: options.signal,
      });
      return { path: disk.path, format: disk.format, handles: { ...disk.handles, strategy } };
    },
    async remove(disk) {
      const strategy = disk.handles.strategy;
      if (strategy === "dm-snapshot") {
        await removeRootDisk({ strategy, handles: disk.handles, runner });
      } else {
        await rm(disk.path, { force: true });
      }
    },
    grow: (disk, sizeBytes) => growRootDisk({ path: disk.path, format: disk.format, sizeBytes, runner }),
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

export function createDrivers(options: {
  config: Config;
  probes: HostProbes;
  qemu: VmmDriver;
  firecracker?: (() => Promise<VmmDriver | undefined>) | undefined;
}): VmmDrivers {
  return {
    get(kind: VmmKind) {
      if (kind === "qemu") return options.qemu;
      throw new BangerError(ErrorCode.TOOL_MISSING, "the Firecracker driver is not available on this host", {
        hint: `install firecracker (>= 1.8) as '${options.config.vmm.firecracker_binary}' on PATH on a KVM host, or use --vmm qemu`,
      });
    },
    async choose(requested) {
      if (requested === "qemu") return "qemu";
      if (requested === "firecracker") {
        const driver = await options.firecracker?.();
        if (!driver) {
          throw new BangerError(
            ErrorCode.TOOL_MISSING,
            `firecracker ('${options.config.vmm.firecracker_binary}') is not available`,
            {
              hint: "install a firecracker release binary on PATH (needs KVM), or use --vmm qemu",
            },
          );
        }
        return "firecracker";
      }
      return (await options.firecracker?.()) ? "firecracker" : "qemu";
    },
  };
}
