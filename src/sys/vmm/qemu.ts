/**
 * The QEMU `microvm` driver: spawns QEMU detached from the daemon, talks to
 * it over QMP, and decides liveness through /proc (a reparented QEMU leaves
 * a zombie behind for a while, which counts as gone).
 */
import { spawn } from "node:child_process";
import { open, readFile, rm } from "node:fs/promises";
import type { Logger } from "../../core/log/index.ts";
import {
  type BootSpec,
  planQemuArgv,
  type QemuAccel,
  qemuControlSocket,
  runStateOf,
  type VmmDriver,
  type VmmHandle,
} from "../../core/vmm/index.ts";
import { BangerError, ErrorCode } from "../../protocol/index.ts";
import { processLiveness, readProcStat } from "../proc/index.ts";
import { connectQmp, type QmpClient } from "../qmp/index.ts";

export interface QemuDriverOptions {
  /** The QEMU executable (name on PATH or absolute path). */
  binary: string;
  /** Decides the accelerator for each start (see chooseAccel). */
  accel: () => Promise<QemuAccel>;
  logger: Logger;
  /**
   * Argv QEMU is launched through, e.g. `["ip", "netns", "exec", "ns1"]`.
   * It must exec QEMU in place (same pid). Empty by default.
   */
  launcher?: readonly string[] | undefined;
  /** How long `start` waits for QMP to answer. */
  qmpTimeoutMs?: number | undefined;
  /** How long `kill` (and the last step of `stop`) waits after SIGKILL. */
  killTimeoutMs?: number | undefined;
  pollIntervalMs?: number | undefined;
}

const DEFAULT_QMP_TIMEOUT_MS = 10_000;
const DEFAULT_KILL_TIMEOUT_MS = 10_000;
const DEFAULT_POLL_MS = 50;
/** QMP connects during `stop` are to a running QEMU: the socket is already there. */
const STOP_QMP_TIMEOUT_MS = 2_000;
const LOG_TAIL_LINES = 15;

export function createQemuDriver(options: QemuDriverOptions): VmmDriver {
  const qmpTimeoutMs = options.qmpTimeoutMs ?? DEFAULT_QMP_TIMEOUT_MS;
  const killTimeoutMs = options.killTimeoutMs ?? DEFAULT_KILL_TIMEOUT_MS;
  const pollMs = options.pollIntervalMs ?? DEFAULT_POLL_MS;
  const launcher = options.launcher ?? [];

  const liveness = (handle: VmmHandle) =>
    processLiveness({ pid: handle.pid, startTicks: handle.pidStartTicks, marker: handle.controlSocket });
  const isRunning = async (handle: VmmHandle) => (await liveness(handle)) === "alive";

  /** Polls until the process is not "alive" (dead, zombie or a reused pid); false on timeout. */
  async function waitGone(handle: VmmHandle, timeoutMs: number): Promise<boolean> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      if (!(await isRunning(handle))) return true;
      if (Date.now() >= deadline) return false;
      await delay(pollMs);
    }
  }

  /** Sends `signal` only to our own live process, never to a reused pid. */
  async function signalProcess(handle: VmmHandle, signal: NodeJS.Signals): Promise<void> {
    if (!(await isRunning(handle))) return;
    try {
      process.kill(handle.pid, signal);
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== "ESRCH") throw error;
    }
  }

  async function kill(handle: VmmHandle): Promise<void> {
    await signalProcess(handle, "SIGKILL");
    if (!(await waitGone(handle, killTimeoutMs))) {
      throw new BangerError(
        ErrorCode.INTERNAL,
        `QEMU (pid ${handle.pid}) survived SIGKILL for ${killTimeoutMs} ms`,
        {
          hint: "the process may be stuck in the kernel (D state); check `cat /proc/PID/stack`",
        },
      );
    }
    await removeSocket(handle.controlSocket);
  }

  async function stop(handle: VmmHandle, stopOptions: { timeoutMs: number }): Promise<void> {
    const log = options.logger.child({ pid: handle.pid });
    if (!(await isRunning(handle))) {
      await removeSocket(handle.controlSocket);
      return;
    }
    const qmp = await tryConnect(handle.controlSocket, log);
    try {
      if (qmp) {
        if (await step("system_powerdown", () => qmp.powerdown())) return;
        if (await step("quit", () => qmp.quit())) return;
      } else if (await step("SIGTERM", () => signalProcess(handle, "SIGTERM"))) {
        return;
      }
    } finally {
      qmp?.close();
    }
    log.warn("QEMU ignored a graceful stop; sending SIGKILL");
    await kill(handle);

    /** Fires `action` without awaiting it (a wedged QEMU may never reply) and waits for the exit. */
    async function step(name: string, action: () => Promise<void>): Promise<boolean> {
      action().catch((error: unknown) => log.debug(`QEMU stop: ${name} failed`, { error: String(error) }));
      if (!(await waitGone(handle, stopOptions.timeoutMs))) return false;
      log.debug(`QEMU stopped after ${name}`);
      await removeSocket(handle.controlSocket);
      return true;
    }
  }

  async function start(spec: BootSpec, signal: AbortSignal): Promise<VmmHandle> {
    throwIfCancelled(signal, spec);
    const accel = await options.accel();
    const [command, ...args] = [...launcher, ...planQemuArgv({ spec, accel, binary: options.binary })];
    if (command === undefined) throw new BangerError(ErrorCode.INTERNAL, "QEMU argv is empty");
    const log = options.logger.child({ vm: spec.vmName });
    const controlSocket = qemuControlSocket(spec.vmDir);
    await removeSocket(controlSocket);
    const { pid, exited, exitDescription } = await spawnDetached(command, args, spec.vmmLog);
    log.info("QEMU started", { pid, accel });

    const stat = await readProcStat(pid);
    const handle: VmmHandle = {
      pid,
      pidStartTicks: stat?.startTicks ?? 0,
      controlSocket,
    };
    try {
      const qmp = await connectQmp({
        socketPath: controlSocket,
        timeoutMs: qmpTimeoutMs,
        signal: AbortSignal.any([signal, exited]),
      }).catch(async (error: unknown) => {
        if (exited.aborted) {
          const tail = await logTail(spec.vmmLog);
          throw new BangerError(
            ErrorCode.BOOT_FAILED,
            `QEMU for ${spec.vmName} ${exitDescription()} during start`,
            {
              hint: tail ? `last lines of ${spec.vmmLog}:\n${tail}` : `see ${spec.vmmLog}`,
              cause: error,
              data: { vmmLog: spec.vmmLog },
            },
          );
        }
        throwIfCancelled(signal, spec);
        throw new BangerError(
          ErrorCode.BOOT_FAILED,
          `QEMU for ${spec.vmName} did not answer on ${controlSocket} within ${qmpTimeoutMs} ms`,
          { hint: `see ${spec.vmmLog}`, cause: error },
        );
      });
      qmp.close();
      return handle;
    } catch (error) {
      log.warn("QEMU start failed; killing it", { pid, error: String(error) });
      await kill(handle).catch((killError: unknown) =>
        log.error("could not kill QEMU after a failed start", { pid, error: String(killError) }),
      );
      throw error;
    }
  }

  return {
    kind: "qemu",
    features: {
      diskFormats: ["qcow2", "raw"],
      kernelFormats: ["bzImage", "elf"],
      pauseResume: true,
      vsock: false,
      softwareEmulation: true,
      snapshots: false,
    },
    start,
    stop,
    kill,
    isRunning,
    pause: (handle) => qmpCommand(handle, "stop"),
    resume: (handle) => qmpCommand(handle, "cont"),
    async reattach(handle) {
      const qmp = await connectQmp({ socketPath: handle.controlSocket, timeoutMs: STOP_QMP_TIMEOUT_MS });
      try {
        return runStateOf((await qmp.status()).status);
      } finally {
        qmp.close();
      }
    },
  };
}

async function qmpCommand(handle: VmmHandle, command: "stop" | "cont"): Promise<void> {
  const qmp = await connectQmp({ socketPath: handle.controlSocket, timeoutMs: STOP_QMP_TIMEOUT_MS });
  try {
    await qmp.execute(command);
  } finally {
    qmp.close();
  }
}

interface DetachedChild {
  pid: number;
  /** Aborted when the process exits while this daemon is still its parent. */
  exited: AbortSignal;
  exitDescription(): string;
}

/**
 * Spawns in a new session with stdout/stderr appended to `logPath` and the
 * child unref'd, so QEMU outlives the daemon. Resolves once the process exists.
 */
async function spawnDetached(command: string, args: string[], logPath: string): Promise<DetachedChild> {
  const log = await open(logPath, "a", 0o640);
  try {
    const child = spawn(command, args, { detached: true, stdio: ["ignore", log.fd, log.fd] });
    const exited = new AbortController();
    let description = "is still running";
    child.once("exit", (code, signal) => {
      description = signal ? `was killed by ${signal}` : `exited with status ${code}`;
      exited.abort();
    });
    const spawnError = await new Promise<Error | undefined>((resolve) => {
      child.once("spawn", () => resolve(undefined));
      child.once("error", resolve);
    });
    if (spawnError || child.pid === undefined) {
      const missing = (spawnError as NodeJS.ErrnoException | undefined)?.code === "ENOENT";
      throw new BangerError(
        missing ? ErrorCode.TOOL_MISSING : ErrorCode.BOOT_FAILED,
        missing
          ? `${command} is not installed or not on PATH`
          : `could not start ${command}: ${String(spawnError)}`,
        { cause: spawnError, data: { tool: command } },
      );
    }
    child.on("error", () => {});
    child.unref();
    return { pid: child.pid, exited: exited.signal, exitDescription: () => description };
  } finally {
    await log.close();
  }
}

async function tryConnect(socketPath: string, log: Logger): Promise<QmpClient | undefined> {
  try {
    return await connectQmp({ socketPath, timeoutMs: STOP_QMP_TIMEOUT_MS });
  } catch (error) {
    log.warn("QMP unreachable during stop; falling back to signals", { error: String(error) });
    return undefined;
  }
}

async function logTail(path: string): Promise<string> {
  try {
    const text = await readFile(path, "utf8");
    return text.trimEnd().split("\n").slice(-LOG_TAIL_LINES).join("\n");
  } catch {
    return "";
  }
}

async function removeSocket(path: string): Promise<void> {
  await rm(path, { force: true });
}

function throwIfCancelled(signal: AbortSignal, spec: BootSpec): void {
  if (signal.aborted) {
    throw new BangerError(ErrorCode.CANCELLED, `start of ${spec.vmName} cancelled`, { cause: signal.reason });
  }
}

function delay(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
