/**
 * The composition root: the only place that builds real adapters and hands
 * them to the services (see services.ts). The daemon's lifetime is one
 * AsyncDisposableStack: every resource is deferred on it as it is made, so a
 * failure half-way through start undoes what was made, in reverse, and stop
 * is that same disposal, run once. Each subsystem's state and locks live on
 * the object that owns them (ARCHITECTURE.md "Lock order").
 */
import { mkdir, rm, writeFile } from "node:fs/promises";
import { homedir } from "node:os";
import type { Config } from "../../core/config/index.ts";
import type { Logger } from "../../core/log/index.ts";
import { type Layout, resolveLayout } from "../../core/paths/index.ts";
import { BangerError, BUILD_VERSION, ErrorCode, PROTOCOL_VERSION } from "../../protocol/index.ts";
import { loadConfigFile } from "../../sys/config/index.ts";
import { groupIdByName } from "../../sys/host/index.ts";
import { acquireDaemonLock } from "../../sys/lock/index.ts";
import { createFileLogger } from "../../sys/log/index.ts";
import { readOpenFileLimit } from "../../sys/proc/index.ts";
import { openStore, type Store } from "../../sys/store/index.ts";
import { runDoctor } from "../doctor/index.ts";
import { buildHandlers, type DaemonInfo } from "../handlers.ts";
import { ociMetaOf } from "../image/oci.ts";
import { buildImageHandlers } from "../image-handlers.ts";
import { buildNetworkHandlers } from "../network-handlers.ts";
import { createRpcServer } from "../rpc/server.ts";
import { buildSnapshotHandlers } from "../snapshot-handlers.ts";
import { buildVmHandlers } from "../vm-handlers.ts";
import { buildWorkspaceHandlers } from "../workspace-handlers.ts";
import { startBackground, stateChecks } from "./background.ts";
import { ensureHostFeatures, type RegisterCapabilities, registerCapabilities } from "./capabilities.ts";
import { buildServices, type Services } from "./services.ts";

export interface DaemonOptions {
  env: Readonly<Record<string, string | undefined>>;
  logToStderr: boolean;
  /** What is registered beyond the core (capabilities.ts); tests pass their own. */
  registerCapabilities?: RegisterCapabilities | undefined;
}

export interface Daemon {
  readonly layout: Layout;
  /** Resolves when the daemon has fully stopped. */
  readonly stopped: Promise<void>;
  /** Disposes the daemon's lifetime; later calls return the same promise. */
  stop(reason: string): Promise<void>;
}

/** VMMs that die on their own (guest poweroff, crash, OOM kill) are noticed within a second or two. */

/** Opens state, listens on the socket and returns the running daemon. */
export async function startDaemon(options: DaemonOptions): Promise<Daemon> {
  const layout = resolveLayout({ env: options.env, uid: process.getuid?.() ?? 0, homeDir: homedir() });
  // Before anything else: a second daemon of this home must not touch its log, socket, pid file or store.
  const lock = acquireDaemonLock({
    lockFile: layout.lockFile,
    pidFile: layout.pidFile,
    home: layout.stateDir,
  });
  let config: Config;
  try {
    await mkdir(layout.stateDir, { recursive: true, mode: 0o700 });
    await mkdir(layout.runtimeDir, { recursive: true, mode: 0o700 });
    config = await loadConfigFile(layout.configFile, {
      vmDefaultImage: options.env.BANGER_DEFAULT_IMAGE || undefined,
    });
  } catch (error) {
    lock.release();
    throw error;
  }
  const { logger, close: closeLog } = createFileLogger({
    file: layout.daemonLog,
    level: config.daemon.log_level,
    alsoStderr: options.logToStderr,
    maxBytes: config.daemon.log_max_bytes,
    files: config.daemon.log_files,
  });
  const life = new AsyncDisposableStack();
  const shutdown = new AbortController();
  const { promise: stopped, resolve: resolveStopped } = Promise.withResolvers<void>();
  let stopping: Promise<void> | undefined;
  const stop = (reason: string): Promise<void> => {
    stopping ??= (async () => {
      logger.info("daemon stopping", { reason });
      await unwind(life, shutdown, logger);
      resolveStopped();
    })();
    return stopping;
  };
  try {
    // Disposed last: the lock outlives everything else the daemon made.
    life.defer(() => lock.release());
    life.defer(() => {
      logger.info("daemon stopped");
      closeLog();
    });
    // From here the pid file's path is ours: removed at stop, and after a failed start.
    life.defer(() => rm(layout.pidFile, { force: true }));
    const store = openStore(layout.dbFile);
    life.defer(() => store.close());
    const services = await buildServices(
      {
        env: options.env,
        layout,
        config,
        logger,
        store,
        registerCapabilities: options.registerCapabilities ?? registerCapabilities,
      },
      life,
    );
    const { vms } = services;
    await vms.reconcile();
    await ensureHostFeatures([...services.capabilities.hostFeatures, services.tapPool], life, {
      signal: shutdown.signal,
      logger,
    });
    const pool = await startBackground({ services, config, store, logger, signal: shutdown.signal, life });
    const info = daemonInfo({ layout, env: options.env, services, stop });
    const vmHandlers = buildVmHandlers({
      ...services,
      pool,
      beforeDelete: async (name, o) => {
        if (!o.force) await services.workspaces.assertNothingUnexported(name, o.signal);
      },
      runDefaults: (name) => {
        const vm = store.getVmByName(name);
        const image = vm ? store.getImageById(vm.imageId) : undefined;
        return image ? ociMetaOf(image)?.runDefaults : undefined;
      },
    });
    const { networking } = services.capabilities;
    const handlers = {
      ...buildHandlers({
        info,
        store,
        doctor: async () => [
          ...(await services.doctor()),
          ...(await runDoctor(stateChecks({ vms, pool, store }))),
        ],
      }),
      ...vmHandlers,
      ...buildImageHandlers({ ...services, store, defaultImage: config.vm.default_image }),
      ...(networking
        ? buildNetworkHandlers({ base: vmHandlers, vms, networking, createOps: services.createOps })
        : {}),
      ...buildWorkspaceHandlers({ ...services, auth: config.auth }),
      ...buildSnapshotHandlers(services),
      "pool.list": async () => ({ pools: await pool.list() }),
    };
    const socketGid = await socketGroup(config, layout);
    const server = createRpcServer({
      socketPath: layout.socketFile,
      handlers,
      logger,
      socketMode: socketGid === undefined ? 0o600 : 0o660,
      socketGid,
      maxConnections: connectionLimit(config.daemon.max_connections),
      onHello: (hello) => ({ compatible: hello.protocol === PROTOCOL_VERSION }),
    });
    life.defer(() => server.close());
    // Written before the socket answers, so a client that reached the daemon finds its pid.
    await writeFile(layout.pidFile, `${process.pid}\n`, { mode: 0o644 });
    await server.listen();
    logger.info("daemon started", {
      socket: layout.socketFile,
      build: BUILD_VERSION,
      node: process.versions.node,
    });
  } catch (error) {
    logger.error("daemon start failed", { error: String(error) });
    await unwind(life, shutdown, logger);
    throw error;
  }
  return { layout, stopped, stop };
}

/** What `daemon.status` and `daemon.shutdown` answer from. */
function daemonInfo(o: {
  layout: Layout;
  env: DaemonOptions["env"];
  services: Services;
  stop(reason: string): Promise<void>;
}): DaemonInfo {
  const { vms, createOps } = o.services;
  return {
    pid: process.pid,
    startedAt: o.services.now(),
    socket: o.layout.socketFile,
    stateDir: o.layout.stateDir,
    netns: o.env.BANGER_NETNS ?? null,
    requestStop: async (reason, stopVms) => {
      const stoppedVms = stopVms ? await vms.stopAll() : [];
      // Let the reply to daemon.shutdown reach the client first.
      setTimeout(() => void o.stop(reason), 20);
      return stoppedVms;
    },
    operations: () => createOps.running,
  };
}

/** Aborts what is in flight, then disposes the lifetime; an undo step that fails is logged, never thrown. */
async function unwind(life: AsyncDisposableStack, shutdown: AbortController, logger: Logger): Promise<void> {
  shutdown.abort();
  try {
    await life.disposeAsync();
  } catch (error) {
    logger.error("an undo step failed while the daemon stopped", { error: String(error) });
  }
}

async function socketGroup(config: Config, layout: Layout): Promise<number | undefined> {
  const group = config.daemon.socket_group;
  if (!group) return undefined;
  const gid = await groupIdByName(group);
  if (gid === undefined) {
    throw new BangerError(
      ErrorCode.CONFIG_INVALID,
      `${layout.configFile}: daemon.socket_group: no group named '${group}'`,
    );
  }
  return gid;
}

/**
 * The connection cap: the configured maximum, but never more than half the
 * open-file limit (re-read each second, so a `prlimit` from outside counts),
 * leaving the other half for VMMs, ssh, the store and the logs.
 */
function connectionLimit(configured: number): () => number {
  let limit = configured;
  let readAt = Number.NEGATIVE_INFINITY;
  return () => {
    const now = performance.now();
    if (now - readAt >= 1000) {
      readAt = now;
      const files = readOpenFileLimit();
      limit = files === undefined ? configured : Math.max(1, Math.min(configured, Math.floor(files / 2)));
    }
    return limit;
  };
}

export type { Logger, Store };
