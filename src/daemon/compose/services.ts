/**
 * Builds the daemon's services from real adapters: runner, drivers, probes,
 * the image service, the VM service and its stats, and the registry of
 * async creates. Whatever holds a resource past this call (the SSH session
 * map, the registry's running operations) is deferred on the daemon's
 * lifetime stack as it is made.
 */
import { randomBytes } from "node:crypto";
import { readlinkSync } from "node:fs";
import { readFile } from "node:fs/promises";
import { homedir } from "node:os";
import { join } from "node:path";
import { sleep } from "../../core/async/index.ts";
import { KeyedLocks, Mutex, OperationRegistry } from "../../core/concurrency/index.ts";
import type { Config } from "../../core/config/index.ts";
import { copyFileArgv } from "../../core/image/index.ts";
import type { Logger } from "../../core/log/index.ts";
import { parseSubnet } from "../../core/network/index.ts";
import type { Layout } from "../../core/paths/index.ts";
import { isActiveState } from "../../core/vm/index.ts";
import { AUTH_FILES_JSON, parseAuthRecord } from "../../core/workspace/index.ts";
import type { VmInfo } from "../../protocol/index.ts";
import { agentBinaryPath, createGuestAgents } from "../../sys/agent/index.ts";
import { copyOutOfDisk, runUnprivileged } from "../../sys/diskread/index.ts";
import { createFirecrackerDriver } from "../../sys/firecracker/index.ts";
import { createNodeFs, readDiskUsage, writeFileAtomic } from "../../sys/fs/index.ts";
import { createHostProbes, type HostProbes } from "../../sys/host/index.ts";
import { createBuildCacheChecks } from "../../sys/image-cache/index.ts";
import { extractVmlinux } from "../../sys/kernel/index.ts";
import { createHostNetwork } from "../../sys/network/index.ts";
import { BlobCache } from "../../sys/oci/blob-cache.ts";
import { runImageWorker } from "../../sys/oci/worker-client.ts";
import { readProcessUsage } from "../../sys/proc/index.ts";
import { createProcessRunner, type Runner } from "../../sys/runner/index.ts";
import { probeSshBanner } from "../../sys/ssh/index.ts";
import type { Store } from "../../sys/store/index.ts";
import { createVmFiles } from "../../sys/vmfiles/index.ts";
import { createQemuDriver, killAndWait, listVmmProcesses } from "../../sys/vmm/index.ts";
import { doctorChecks, runDoctor, snapshotsCheck } from "../doctor/index.ts";
import { createDockerfileBuilds, type DockerfileBuilds } from "../image/dockerfile.ts";
import { createImageService, type ImageService } from "../image/index.ts";
import { createOciImages, type OciImages, withAutoPull } from "../image/oci.ts";
import { createPromoter, type Promote } from "../image/promote.ts";
import { createPublisher } from "../image/publish.ts";
import { createTapPool, type TapPool, tapPoolCheck } from "../network/index.ts";
import { createSnapshotService, createSnapshotStore, type SnapshotService } from "../snapshot/index.ts";
import {
  agentChannel,
  agentReadiness,
  agentRestoreReadiness,
  createVmService,
  createVmStats,
  type VmService,
  type VmStatsService,
} from "../vm/index.ts";
import {
  createTransferService,
  createWorkspaceService,
  type TransferService,
  type WorkspaceService,
} from "../workspace/index.ts";
import { createVmDisks } from "./adapters/disks.ts";
import { createDrivers } from "./adapters/drivers.ts";
import { createGuestAccess } from "./adapters/guest.ts";
import { createVmNetwork } from "./adapters/network.ts";
import { createWorkspaceRecords } from "./adapters/workspace.ts";
import type { Capabilities, RegisterCapabilities } from "./capabilities.ts";
import { createAccelProbe, createCowStrategyProbe } from "./probes.ts";

export interface ServiceDeps {
  env: Readonly<Record<string, string | undefined>>;
  layout: Layout;
  config: Config;
  logger: Logger;
  store: Store;
  registerCapabilities: RegisterCapabilities;
}

export interface Services {
  runner: Runner;
  images: ImageService;
  oci: OciImages;
  dockerfiles: DockerfileBuilds;
  promote: Promote;
  vms: VmService;
  /** Per-VM locks; background passes skip a VM whose lock is held. */
  vmLocks: KeyedLocks;
  snapshots: SnapshotService;
  stats: VmStatsService;
  createOps: OperationRegistry<VmInfo>;
  workspaces: WorkspaceService;
  transfers: TransferService;
  capabilities: Capabilities;
  /** Warm taps for VM starts; a host feature the composition root ensures last (torn down first). */
  tapPool: TapPool;
  doctor(): ReturnType<typeof runDoctor>;
  now(): Date;
}

export async function buildServices(deps: ServiceDeps, life: AsyncDisposableStack): Promise<Services> {
  const { layout, config, logger, store } = deps;
  const runner = createProcessRunner({
    onRun: (argv, result) =>
      logger.debug("ran", { argv: argv.join(" "), code: result.code, ms: Math.round(result.durationMs) }),
  });
  const probes: HostProbes = createHostProbes(deps.env);
  const now = () => new Date();
  const hostNetwork = createHostNetwork({
    runner,
    logger,
    bridge: config.network.bridge,
    subnet: parseSubnet(config.network.subnet),
  });
  // Its lock is a leaf (ARCHITECTURE.md "Lock order"); ensured after the host features, torn down before nat removes the bridge.
  const tapPool = createTapPool({
    size: config.network.tap_pool_size,
    host: hostNetwork,
    anyVm: () => store.listVms().length > 0,
    anyVmRunning: () => store.listVms().some((vm) => isActiveState(vm.state)),
    logger,
  });
  const capabilities = deps.registerCapabilities({ config, layout, runner, logger, store, hostNetwork });
  const copyFile = async (from: string, to: string): Promise<void> =>
    void (await runner.run(copyFileArgv(from, to)));
  // The narrow global mutex for image publication, shared by every way of making an image (ARCHITECTURE.md "Lock order").
  const publishMutex = new Mutex();

  const guestFilesDir = join(import.meta.dirname, "..", "..", "..", "guest");
  const images = createImageService({
    store,
    runner,
    layout,
    logger: logger.child({ svc: "image" }),
    publishMutex,
    now,
    newId,
    guestFilesDir,
    fs: createNodeFs(),
    buildCacheDir: deps.env.BANGER_IMAGE_CACHE || undefined,
    buildCacheChecks: deps.env.BANGER_IMAGE_CACHE
      ? createBuildCacheChecks({ cacheDir: deps.env.BANGER_IMAGE_CACHE, uid: process.getuid?.() ?? 0 })
      : undefined,
    downloadLauncher: hostNetnsLauncher(deps.env),
    sources: capabilities.imageSources,
    defaultImage: config.vm.default_image,
    extractVmlinux: async (bzImage, out, signal) => {
      await extractVmlinux(runner, bzImage, out, signal ? { signal } : {});
    },
  });
  await images.cleanupStaging();
  const blobs = new BlobCache(layout.blobsDir);
  await blobs.clearDebris();
  const oci = createOciImages({
    store,
    layout,
    logger: logger.child({ svc: "image-oci" }),
    publishMutex,
    now,
    newId,
    fs: createNodeFs(),
    runWorker: runImageWorker,
    copyFile,
    blobs,
    launcher: hostNetnsLauncher(deps.env),
    dockerConfigFile: join(deps.env.DOCKER_CONFIG || join(homedir(), ".docker"), "config.json"),
    insecureRegistries: config.image.insecure_registries,
  });

  const publish = createPublisher({ store, layout, fs: createNodeFs(), newId, publishMutex });
  const dockerfiles = createDockerfileBuilds({
    layout,
    runner,
    fs: createNodeFs(),
    logger: logger.child({ svc: "image-dockerfile" }),
    newId,
    oci,
    launcher: hostNetnsLauncher(deps.env),
  });
  const promote = createPromoter({
    store,
    layout,
    runner,
    fs: createNodeFs(),
    logger: logger.child({ svc: "image-promote" }),
    newId,
    now,
    copyFile,
    readFile: (path) => readFile(path, "utf8"),
    publish,
  });

  const accel = createAccelProbe({ config, layout, runner, store });
  const cowStrategy = createCowStrategyProbe(layout, runner);
  const drivers = createDrivers({
    config,
    qemu: createQemuDriver({
      binary: config.vmm.qemu_binary,
      console: { maxBytes: config.daemon.log_max_bytes, files: config.daemon.log_files },
      accel: async () => (await accel.get()).accel,
      logger: logger.child({ svc: "qemu" }),
    }),
    firecracker: createFirecrackerDriver({
      binary: config.vmm.firecracker_binary,
      console: { maxBytes: config.daemon.log_max_bytes, files: config.daemon.log_files },
      logger: logger.child({ svc: "firecracker" }),
      runner,
    }),
    // Only a probe boot proves KVM works (a present /dev/kvm can still hang guests).
    kvmUsable: async () => (await accel.get()).accel === "kvm",
  });
  const guest = life.use(createGuestAccess({ layout, runner }));
  const vmLocks = new KeyedLocks();
  const tscKhz = await probes.tscKhz();
  const files = createVmFiles();
  const agents = createGuestAgents({
    agentBinary: agentBinaryPath(),
    guestFilesDir,
    logger: logger.child({ svc: "agent" }),
  });
  const vms = createVmService({
    store,
    layout,
    config,
    logger: logger.child({ svc: "vm" }),
    images: withAutoPull(images, oci, store),
    network: createVmNetwork(hostNetwork, tapPool),
    drivers,
    disks: createVmDisks({ runner, cowStrategy, exists: files.exists }),
    files,
    guest,
    census: {
      // The control sockets each driver puts in the VM directory (QEMU's QMP, Firecracker's API).
      list: () => listVmmProcesses({ vmsDir: layout.vmsDir, controlFiles: ["qmp.sock", "api.sock"] }),
      kill: (handle) => killAndWait(handle, 10_000, "a stray VMM"),
    },
    agents,
    channel: agentChannel(agents, guest),
    readiness: agentReadiness(agents, guest, files),
    restoreReadiness: agentRestoreReadiness(agents),
    hooks: capabilities.vmHooks,
    // Per-VM locks come first, then the narrow reservation mutex (ARCHITECTURE.md "Lock order").
    vmLocks,
    reservation: new Mutex(),
    now,
    newId,
    tscKhz: async () => tscKhz ?? 2_000_000,
  });
  // Snapshots are published under the image publication mutex (ARCHITECTURE.md "Lock order").
  const snapshotStore = createSnapshotStore({
    store,
    fs: createNodeFs(),
    dir: layout.snapshotsDir,
    publishMutex,
    logger: logger.child({ svc: "snapshot" }),
    newId,
  });
  await snapshotStore.cleanup();
  const snapshots = createSnapshotService({
    snapshots: snapshotStore,
    store,
    fs: createNodeFs(),
    diskUsage: readDiskUsage,
    vms: {
      save: (name, dir, options) => vms.saveSnapshot(name, dir, options),
      create: (params, options, from) => vms.create(params, options, from),
      delete: (name) => vms.delete(name),
    },
    logger: logger.child({ svc: "snapshot" }),
    now,
  });
  const createOps = new OperationRegistry<VmInfo>({ now, newId, retainMs: 10 * 60_000 });
  life.defer(() => createOps.cancelAll());
  const stats = createVmStats({
    vms,
    processUsage: readProcessUsage,
    diskUsage: readDiskUsage,
    probeBanner: probeSshBanner,
    now,
    monotonicMs: () => performance.now(),
    sleep,
  });
  // The workspace lock is taken only after the VM lock is released (ARCHITECTURE.md "Lock order").
  const workspaces = createWorkspaceService({
    vms,
    vmLocks,
    workspaceLocks: new KeyedLocks(),
    disk: { copyOut: (o) => copyOutOfDisk({ ...o, runner }), run: runUnprivileged },
    records: createWorkspaceRecords(layout),
    now,
  });
  const authRecordFile = async (name: string) => join((await vms.show(name)).dir, AUTH_FILES_JSON);
  const transfers = createTransferService({
    vms,
    authRecords: {
      read: async (name) =>
        parseAuthRecord(await readFile(await authRecordFile(name), "utf8").catch(() => "")),
      write: async (name, record) =>
        writeFileAtomic(await authRecordFile(name), `${JSON.stringify(record)}\n`, { mode: 0o600 }),
    },
    newSalt: () => randomBytes(16).toString("hex"),
  });
  const { networking } = capabilities;
  const doctor = () =>
    runDoctor([
      ...doctorChecks({ probes, runner, layout, config, cowStrategy, accel, blobs }),
      snapshotsCheck(snapshotStore),
      ...(networking ? [{ name: "network", run: () => networking.doctor() }] : []),
      { name: "tap-pool", run: async () => tapPoolCheck(tapPool.status()) },
    ]);
  return {
    runner,
    vmLocks,
    images,
    oci,
    dockerfiles,
    promote,
    vms,
    snapshots,
    stats,
    createOps,
    workspaces,
    transfers,
    capabilities,
    tapPool,
    doctor,
    now,
  };
}

/** Short random ids for VMs, images and operations. */
function newId(): string {
  return randomBytes(6).toString("hex");
}

/**
 * When the CLI started this daemon inside a network namespace it passes a
 * handle on the host's namespace as an inherited fd; package downloads run
 * there through nsenter.
 */
function hostNetnsLauncher(env: Readonly<Record<string, string | undefined>>): string[] | undefined {
  const fd = env.BANGER_HOST_NETNS_FD;
  if (!fd || !/^\d+$/.test(fd)) return undefined;
  try {
    if (!readlinkSync(`/proc/self/fd/${fd}`).startsWith("net:[")) return undefined;
  } catch {
    return undefined;
  }
  return ["nsenter", `--net=/proc/${process.pid}/fd/${fd}`, "--"];
}
