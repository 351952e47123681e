/**
 * The composition root: the only place that builds real adapters (runner,
 * store, logger, host probes, drivers) and hands them to the services. Every
 * subsystem's state and locks live on the object that owns them; see
 * ARCHITECTURE.md for the lock order.
 */
import { randomBytes } from "node:crypto";
import { mkdir, readFile, rm, writeFile } from "node:fs/promises";
import { homedir } from "node:os";
import { Mutex } from "../core/concurrency/index.ts";
import type { Config } from "../core/config/index.ts";
import type { Logger } from "../core/log/index.ts";
import { type Layout, resolveLayout } from "../core/paths/index.ts";
import { BangerError, BUILD_VERSION, ErrorCode, PROTOCOL_VERSION } from "../protocol/index.ts";
import { loadConfigFile } from "../sys/config/index.ts";
import { createHostProbes, groupIdByName } from "../sys/host/index.ts";
import { createFileLogger } from "../sys/log/index.ts";
import { isPidAlive, readCmdline } from "../sys/proc/index.ts";
import { createProcessRunner } from "../sys/runner/index.ts";
import { openStore, type Store } from "../sys/store/index.ts";
import { runDoctor } from "./doctor/index.ts";
import { buildHandlers, type DaemonInfo } from "./handlers.ts";
import { createRpcServer, type RpcServer } from "./rpc/server.ts";

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
  const locks = { imagePublication: new Mutex(), vmReservation: new Mutex() };
  void locks;

  let stopRequested: ((reason: string) => void) | undefined;
  const info: DaemonInfo = {
    pid: process.pid,
    startedAt,
    socket: layout.socketFile,
    stateDir: layout.stateDir,
    netns: options.env.BANGER_NETNS ?? null,
    requestStop: (reason) => stopRequested?.(reason),
  };
  const handlers = buildHandlers({
    info,
    store,
    doctor: () => runDoctor({ probes, runner, layout, config, extraChecks: [] }),
  });
  const socketGid = config.daemon.socket_group ? await groupIdByName(config.daemon.socket_group) : undefined;
  if (config.daemon.socket_group && socketGid === undefined) {
    throw new BangerError(ErrorCode.CONFIG_INVALID, `${layout.configFile}: daemon.socket_group: no group named '${config.daemon.socket_group}'`);
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
  logger.info("daemon started", { socket: layout.socketFile, build: BUILD_VERSION, node: process.versions.node });

  let resolveStopped!: () => void;
  const stopped = new Promise<void>((resolve) => {
    resolveStopped = resolve;
  });
  let stopping: Promise<void> | undefined;
  const stop = (reason: string): Promise<void> => {
    stopping ??= (async () => {
      logger.info("daemon stopping", { reason });
      await server.close();
      store.close();
      await rm(layout.pidFile, { force: true });
      logger.info("daemon stopped");
      flush();
      resolveStopped();
    })();
    return stopping;
  };
  stopRequested = (reason) => {
    // Let the reply to daemon.shutdown reach the client first.
    setTimeout(() => void stop(reason), 20);
  };
  return { layout, stopped, stop };
}

async function refuseSecondInstance(layout: Layout): Promise<void> {
  const text = await readFile(layout.pidFile, "utf8").catch(() => "");
  const pid = Number.parseInt(text.trim(), 10);
  if (!Number.isInteger(pid) || pid <= 0 || pid === process.pid || !isPidAlive(pid)) return;
  const argv = (await readCmdline(pid)) ?? [];
  if (argv.some((arg) => arg.includes("bangerd") || arg.includes("daemon/main"))) {
    throw new BangerError(ErrorCode.BAD_STATE, `bangerd is already running (pid ${pid}) for ${layout.stateDir}`, {
      hint: "use it, or stop it with `banger daemon stop`",
    });
  }
}

/** Short random ids for VMs and operations. */
export function newId(): string {
  return randomBytes(6).toString("hex");
}

export type { Logger, Store };
