/**
 * The composition root: the only place that builds real adapters (runner,
 * store, logger, host probes, drivers) and hands them to the services. Every
 * subsystem's state and locks live on the object that owns them; see
 * ARCHITECTURE.md for the lock order.
 */
import { randomBytes } from "node:crypto";
import { readlinkSync } from "node:fs";
import { mkdir, readFile, rm, writeFile } from "node:fs/promises";
import { homedir } from "node:os";
import { join } from "node:path";
import { sleep } from "../../core/async/index.ts";
import { KeyedLocks, Mutex, OperationRegistry } from "../../core/concurrency/index.ts";
import type { Config } from "../../core/config/index.ts";
import type { Logger } from "../../core/log/index.ts";
import { type Layout, resolveLayout } from "../../core/paths/index.ts";
import {
  BangerError,
  BUILD_VERSION,
  ErrorCode,
  PROTOCOL_VERSION,
  type VmInfo,
} from "../../protocol/index.ts";
import { loadConfigFile } from "../../sys/config/index.ts";
import { type CowStrategyProbe, probeCowStrategy } from "../../sys/disk/index.ts";
import { createFirecrackerDriver } from "../../sys/firecracker/index.ts";
import { createNodeFs, readDiskUsage } from "../../sys/fs/index.ts";
import { createHostProbes, groupIdByName } from "../../sys/host/index.ts";
import { extractVmlinux } from "../../sys/kernel/index.ts";
import { createFileLogger } from "../../sys/log/index.ts";
import { BlobCache } from "../../sys/oci/blob-cache.ts";
import { runImageWorker } from "../../sys/oci/worker-client.ts";
import { isPidAlive, readCmdline, readProcessUsage } from "../../sys/proc/index.ts";
import { createProcessRunner } from "../../sys/runner/index.ts";
import { probeSshBanner } from "../../sys/ssh/index.ts";
import { openStore, type Store } from "../../sys/store/index.ts";
import { createVmFiles } from "../../sys/vmfiles/index.ts";
import { chooseAccel, createQemuDriver, describeAccel, describeAccelFailure } from "../../sys/vmm/index.ts";
import { runDoctor } from "../doctor/index.ts";
import { buildHandlers, type DaemonInfo } from "../handlers.ts";
import { createImageService } from "../image/index.ts";
import { createOciImages, withAutoPull } from "../image/oci.ts";
import { buildImageHandlers } from "../image-handlers.ts";
import { createRpcServer, type RpcServer } from "../rpc/server.ts";
import { createVmService, createVmStats } from "../vm/index.ts";
import { buildVmHandlers } from "../vm-handlers.ts";
import {
  cowDoctorCheck,
  createDrivers,
  createGuestAccess,
  createVmDisks,
  createVmNetwork,
  firecrackerDoctorCheck,
} from "./adapters.ts";

export interface DaemonOptions {
  env: Readonly<Record<string, string | undefined>>;
  logToStderr: boolean;
}

export interface Daemon {
  readonly layout: Layout;
  /** Resolves when the daemon has fully stopped. */
  readonly stopped: Promise<void>;
  stop(reason: string): Promise<void>;
}

/** Opens state, listens on the socket and returns the running daemon. */
export async function startDaemon(options: DaemonOptions): Promise<Daemon> {
  const layout = resolveLayout({ env: options.env, uid: process.getuid?.() ?? 0, homeDir: homedir() });
  await mkdir(layout.stateDir, { recursive: true, mode: 0o700 });
  await mkdir(layout.runtimeDir, { recursive: true, mode: 0o700 });
  const config: Config = await loadConfigFile(layout.configFile);
  const { logger, flush } = createFileLogger({
    file: layout.daemonLog,
    level: config.daemon.log_level,
    alsoStderr: options.logToStderr,
  });
  await refuseSecondInstance(layout);

  const store = openStore(layout.dbFile);
  const runner = createProcessRunner({
    onRun: (argv, result) =>
      logger.debug("ran", { argv: argv.join(" "), code: result.code, ms: Math.round(result.durationMs) }),
  });
  const probes = createHostProbes(options.env);
  const startedAt = new Date();
  const now = () => new Date();
  // The two narrow global mutexes (ARCHITECTURE.md "Lock order"); per-VM locks come first.
  const imagePublication = new Mutex();
  const vmReservation = new Mutex();
  const vmLocks = new KeyedLocks();

  const images = createImageService({
    store,
    runner,
    layout,
    logger: logger.child({ svc: "image" }),
    publishMutex: imagePublication,
    now,
    newId,
    guestFilesDir: join(import.meta.dirname, "..", "..", "..", "guest"),
    fs: createNodeFs(),
    buildCacheDir: options.env.BANGER_IMAGE_CACHE || undefined,
    downloadLauncher: hostNetnsLauncher(options.env),
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
    publishMutex: imagePublication,
    now,
    newId,
    fs: createNodeFs(),
    runWorker: runImageWorker,
    blobs,
    launcher: hostNetnsLauncher(options.env),
    dockerConfigFile: join(options.env.DOCKER_CONFIG || join(homedir(), ".docker"), "config.json"),
  });

  const accel = () => {
    const kernel = store.listImages()[0]?.kernel;
    if (!kernel)
      return Promise.resolve({
        accel: "tcg" as const,
        configured: config.vmm.accel,
        reason: "no image yet",
        cached: false,
      });
    return chooseAccel({
      configured: config.vmm.accel,
      kernel,
      binary: config.vmm.qemu_binary,
      cacheFile: join(layout.cacheDir, "accel.json"),
      runner,
    });
  };
  const qemu = createQemuDriver({
    binary: config.vmm.qemu_binary,
    accel: async () => (await accel()).accel,
    logger: logger.child({ svc: "qemu" }),
  });
  const firecracker = createFirecrackerDriver({
    binary: config.vmm.firecracker_binary,
    logger: logger.child({ svc: "firecracker" }),
    runner,
  });
  const drivers = createDrivers({
    config,
    qemu,
    firecracker,
    // Only a probe boot proves KVM works (a present /dev/kvm can still hang guests).
    kvmUsable: async () => (await accel()).accel === "kvm",
  });
  let cowProbe: Promise<CowStrategyProbe> | undefined;
  const rawStrategy = () => {
    cowProbe ??= mkdir(layout.vmsDir, { recursive: true }).then(() =>
      probeCowStrategy(layout.vmsDir, { runner }),
    );
    return cowProbe;
  };
  const tscKhz = await probes.tscKhz();
  const files = createVmFiles();
  const vms = createVmService({
    store,
    layout,
    config,
    logger: logger.child({ svc: "vm" }),
    images: withAutoPull(images, oci, store),
    network: createVmNetwork({ runner, logger, config }),
    drivers,
    disks: createVmDisks({ runner, rawStrategy, exists: files.exists }),
    files,
    guest: createGuestAccess({ layout, runner }),
    vmLocks,
    reservation: vmReservation,
    now,
    newId,
    tscKhz: async () => tscKhz ?? 2_000_000,
  });
  await vms.reconcile();
  // The reaper: VMMs that die on their own (guest poweroff, crash, OOM kill) are noticed within a second or two.
  let reaping = false;
  const reaper = setInterval(() => {
    if (reaping) return;
    reaping = true;
    vms
      .reap()
      .catch((error: unknown) => logger.warn("reaper failed", { err: String(error) }))
      .finally(() => {
        reaping = false;
      });
  }, REAP_INTERVAL_MS);
  const createOps = new OperationRegistry<VmInfo>({ now, newId, retainMs: 10 * 60_000 });
  const stats = createVmStats({
    vms,
    processUsage: readProcessUsage,
    diskUsage: readDiskUsage,
    probeBanner: probeSshBanner,
    now,
    monotonicMs: () => performance.now(),
    sleep,
  });

  let stopRequested: ((reason: string, stopVms: boolean) => Promise<string[]>) | undefined;
  const info: DaemonInfo = {
    pid: process.pid,
    startedAt,
    socket: layout.socketFile,
    stateDir: layout.stateDir,
    netns: options.env.BANGER_NETNS ?? null,
    requestStop: (reason, stopVms) => stopRequested?.(reason, stopVms) ?? Promise.resolve([]),
    operations: () => createOps.running,
  };
  const handlers = {
    ...buildHandlers({
      info,
      store,
      doctor: () =>
        runDoctor({
          probes,
          runner,
          layout,
          config,
          extraChecks: [
            async () => [await firecrackerDoctorCheck({ config, runner })],
            async () => {
              try {
                return [cowDoctorCheck(await rawStrategy())];
              } catch (error) {
                return [{ name: "cow-strategy", status: "fail", detail: `cannot probe: ${String(error)}` }];
              }
            },
            async () => {
              try {
                return [describeAccel(await accel())];
              } catch (error) {
                return [describeAccelFailure(error)];
              }
            },
          ],
        }),
    }),
    ...buildVmHandlers({ vms, createOps, stats }),
    ...buildImageHandlers({ images, oci, vms, store }),
  };
  const socketGid = config.daemon.socket_group ? await groupIdByName(config.daemon.socket_group) : undefined;
  if (config.daemon.socket_group && socketGid === undefined) {
    throw new BangerError(
      ErrorCode.CONFIG_INVALID,
      `${layout.configFile}: daemon.socket_group: no group named '${config.daemon.socket_group}'`,
    );
  }
  const server: RpcServer = createRpcServer({
    socketPath: layout.socketFile,
    handlers,
    logger,
    socketMode: socketGid === undefined ? 0o600 : 0o660,
    socketGid,
    onHello: (hello) => ({ compatible: hello.protocol === PROTOCOL_VERSION }),
  });
  await server.listen();
  await writeFile(layout.pidFile, `${process.pid}\n`, { mode: 0o644 });
  logger.info("daemon started", {
    socket: layout.socketFile,
    build: BUILD_VERSION,
    node: process.versions.node,
  });

  let resolveStopped!: () => void;
  const stopped = new Promise<void>((resolve) => {
    resolveStopped = resolve;
  });
  let stopping: Promise<void> | undefined;
  const stop = (reason: string): Promise<void> => {
    stopping ??= (async () => {
      logger.info("daemon stopping", { reason });
      clearInterval(reaper);
      await createOps.cancelAll();
      await server.close();
      store.close();
      await rm(layout.pidFile, { force: true });
      logger.info("daemon stopped");
      flush();
      resolveStopped();
    })();
    return stopping;
  };
  stopRequested = async (reason, stopVms) => {
    const stoppedVms = stopVms ? await vms.stopAll() : [];
    // Let the reply to daemon.shutdown reach the client first.
    setTimeout(() => void stop(reason), 20);
    return stoppedVms;
  };
  return { layout, stopped, stop };
}

async function refuseSecondInstance(layout: Layout): Promise<void> {
  const text = await readFile(layout.pidFile, "utf8").catch(() => "");
  const pid = Number.parseInt(text.trim(), 10);
  if (!Number.isInteger(pid) || pid <= 0 || pid === process.pid || !isPidAlive(pid)) return;
  const argv = (await readCmdline(pid)) ?? [];
  if (argv.some((arg) => arg.includes("bangerd") || arg.includes("daemon/main"))) {
    throw new BangerError(
      ErrorCode.BAD_STATE,
      `bangerd is already running (pid ${pid}) for ${layout.stateDir}`,
      {
        hint: "use it, or stop it with `banger daemon stop`",
      },
    );
  }
}

const REAP_INTERVAL_MS = 1000;

/** Short random ids for VMs and operations. */
function newId(): string {
  return randomBytes(6).toString("hex");
}

export type { Logger, Store };

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
