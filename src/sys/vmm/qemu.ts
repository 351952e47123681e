/**
 * The QEMU `microvm` driver: plans QEMU's argv, spawns it detached from the
 * daemon and talks to it over QMP. Process control (spawn, liveness,
 * signal and wait) is ./process.ts, shared with the Firecracker driver.
 * The serial console is served on `console.sock` beside the control socket
 * and drained into console.log by this driver (./console.ts), capped in
 * size; QEMU starts with its vCPUs stopped and gets `cont` once the drain is
 * attached, so no boot output is lost. `reattach` re-attaches the drain.
 */
import { open, readFile, rm } from "node:fs/promises";
import { dirname, join } from "node:path";
import { pollUntil, throwIfAborted } from "../../core/async/index.ts";
import type { Logger } from "../../core/log/index.ts";
import {
  incomingLoaded,
  machineSignature,
  maskBootSpec,
  planQemuIncoming,
  SnapshotFiles,
} from "../../core/snapshot/index.ts";
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
import { connectQmp, type QmpClient } from "../qmp/index.ts";
import { type ConsoleDrain, drainConsole } from "./console.ts";
import { isVmmRunning, killAndWait, signalVmm, spawnDetachedVmm, waitVmmGone } from "./process.ts";
import { saveQemuState } from "./qemu-snapshot.ts";

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
  /** Size cap and rotated generations of each VM's console.log. */
  console?: { maxBytes: number; files: number } | undefined;
}

/** The console socket and log of the VM whose QMP socket is `controlSocket` (both in the VM directory). */
function consoleFiles(controlSocket: string): { socket: string; log: string } {
  const dir = dirname(controlSocket);
  return { socket: join(dir, "console.sock"), log: join(dir, "console.log") };
}

const DEFAULT_CONSOLE = { maxBytes: 8 * 1024 * 1024, files: 3 };

const DEFAULT_QMP_TIMEOUT_MS = 10_000;
/** How long a restoring QEMU may take to read its state (hundreds of MB from the page cache or disk). */
const RESTORE_TIMEOUT_MS = 120_000;
const DEFAULT_KILL_TIMEOUT_MS = 10_000;
/** QMP connects during `stop` are to a running QEMU: the socket is already there. */
const STOP_QMP_TIMEOUT_MS = 2_000;
const LOG_TAIL_LINES = 15;
/** How long a start that saw QEMU vanish waits for the child's exit event. */
const EXIT_EVENT_WAIT_MS = 2_000;

export function createQemuDriver(options: QemuDriverOptions): VmmDriver {
  const qmpTimeoutMs = options.qmpTimeoutMs ?? DEFAULT_QMP_TIMEOUT_MS;
  const killTimeoutMs = options.killTimeoutMs ?? DEFAULT_KILL_TIMEOUT_MS;
  const launcher = options.launcher ?? [];
  const consoleCap = options.console ?? DEFAULT_CONSOLE;
  /** Console drains of the VMMs this daemon watches, by control socket; each ends when its VMM exits. */
  const drains = new Map<string, ConsoleDrain>();

  async function attachConsole(controlSocket: string, logFile: string, timeoutMs: number): Promise<void> {
    if (drains.has(controlSocket)) return;
    const drain = await drainConsole({
      socketPath: consoleFiles(controlSocket).socket,
      logFile,
      maxBytes: consoleCap.maxBytes,
      files: consoleCap.files,
      logger: options.logger,
      connectTimeoutMs: timeoutMs,
    });
    drains.set(controlSocket, drain);
    void drain.ended.then(() => {
      if (drains.get(controlSocket) === drain) drains.delete(controlSocket);
    });
  }

  async function kill(handle: VmmHandle): Promise<void> {
    await killAndWait(handle, killTimeoutMs, "QEMU");
    await removeSockets(handle.controlSocket);
  }

  async function stop(handle: VmmHandle, stopOptions: { timeoutMs: number }): Promise<void> {
    const log = options.logger.child({ pid: handle.pid });
    if (!(await isVmmRunning(handle))) {
      await removeSockets(handle.controlSocket);
      return;
    }
    const qmp = await tryConnect(handle.controlSocket, log);
    try {
      if (qmp) {
        if (await step("system_powerdown", () => qmp.powerdown())) return;
        if (await step("quit", () => qmp.quit())) return;
      } else if (await step("SIGTERM", () => signalVmm(handle, "SIGTERM"))) {
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
      if (!(await waitVmmGone(handle, stopOptions.timeoutMs))) return false;
      log.debug(`QEMU stopped after ${name}`);
      await removeSockets(handle.controlSocket);
      return true;
    }
  }

  function argvFor(spec: BootSpec, accel: QemuAccel): string[] {
    const consoleSocket = consoleFiles(qemuControlSocket(spec.vmDir)).socket;
    return planQemuArgv({ spec, accel, binary: options.binary, consoleSocket });
  }

  /**
   * Boots (or, with `incoming`, loads a saved state into) a new QEMU: with
   * its vCPUs stopped until the console drain is attached and, for a
   * restore, the state is in; then `cont`.
   */
  async function launch(spec: BootSpec, signal: AbortSignal, incoming?: string): Promise<VmmHandle> {
    throwIfAborted(signal, `start of ${spec.vmName}`);
    const accel = await options.accel();
    const controlSocket = qemuControlSocket(spec.vmDir);
    const argv = [...launcher, ...argvFor(spec, accel), ...(incoming ? planQemuIncoming() : [])];
    const log = options.logger.child({ vm: spec.vmName });
    await removeSockets(controlSocket);
    const state = incoming === undefined ? undefined : await open(incoming, "r");
    const spawned = await spawnDetachedVmm({
      argv,
      stdout: spec.vmmLog,
      stderr: spec.vmmLog,
      extraFds: state === undefined ? [] : [state.fd],
    }).finally(() => state?.close());
    const { pid, startTicks, exited, exitDescription } = spawned;
    log.info(incoming ? "QEMU started to restore a snapshot" : "QEMU started", { pid, accel });

    const handle: VmmHandle = { pid, pidStartTicks: startTicks, controlSocket };
    /**
     * QEMU's exit event can trail the closing of the QMP connection it
     * accepted; once /proc says it is gone, wait briefly for the event and
     * its status.
     */
    const exitedDuringStart = async () => {
      if (exited.aborted) return true;
      if (await isVmmRunning(handle)) return false;
      await pollUntil(() => exited.aborted, { timeoutMs: EXIT_EVENT_WAIT_MS, intervalMs: 10 });
      return true;
    };
    try {
      const qmp = await connectQmp({
        socketPath: controlSocket,
        timeoutMs: qmpTimeoutMs,
        signal: AbortSignal.any([signal, exited]),
      }).catch(async (error: unknown) => {
        if (await exitedDuringStart()) {
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
        throwIfAborted(signal, `start of ${spec.vmName}`);
        throw new BangerError(
          ErrorCode.BOOT_FAILED,
          `QEMU for ${spec.vmName} did not answer on ${controlSocket} within ${qmpTimeoutMs} ms`,
          { hint: `see ${spec.vmmLog}`, cause: error },
        );
      });
      try {
        if (incoming) {
          const loaded = await pollUntil(
            async () => incomingLoaded((await qmp.status()).status) || exited.aborted,
            { timeoutMs: RESTORE_TIMEOUT_MS, intervalMs: 10, signal },
          );
          if (!loaded || exited.aborted) {
            const tail = await logTail(spec.vmmLog);
            throw new BangerError(
              ErrorCode.BOOT_FAILED,
              `QEMU for ${spec.vmName} could not load ${incoming}`,
              {
                hint: tail ? `last lines of ${spec.vmmLog}:\n${tail}` : `see ${spec.vmmLog}`,
              },
            );
          }
        }
        // QEMU waits with its vCPUs stopped (-S) until the console drain is attached.
        await attachConsole(controlSocket, spec.consoleLog, qmpTimeoutMs);
        await qmp.execute("cont");
      } finally {
        qmp.close();
      }
      return handle;
    } catch (error) {
      drains.get(controlSocket)?.close();
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
      snapshots: true,
    },
    start: (spec, signal) => launch(spec, signal),
    snapshots: {
      async describe(spec) {
        const accel = await options.accel();
        const signature = machineSignature(argvFor(maskBootSpec(spec), accel));
        return { signature, vmmVersion: null, accel };
      },
      save: async (handle, dir, signal) => void (await saveQemuState(handle, dir, signal)),
      restore: (spec, dir, signal) => launch(spec, signal, join(dir, SnapshotFiles.state)),
    },
    stop,
    kill,
    isRunning: isVmmRunning,
    pause: (handle) => qmpCommand(handle, "stop"),
    resume: (handle) => qmpCommand(handle, "cont"),
    async reattach(handle) {
      const qmp = await connectQmp({ socketPath: handle.controlSocket, timeoutMs: STOP_QMP_TIMEOUT_MS });
      try {
        const status = runStateOf((await qmp.status()).status);
        const files = consoleFiles(handle.controlSocket);
        await attachConsole(handle.controlSocket, files.log, STOP_QMP_TIMEOUT_MS).catch((error: unknown) =>
          options.logger.warn("cannot re-attach the console; its output is dropped", {
            socket: files.socket,
            err: String(error),
          }),
        );
        return status;
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

/** Removes the QMP socket and the console socket beside it. */
async function removeSockets(controlSocket: string): Promise<void> {
  await rm(controlSocket, { force: true });
  await rm(consoleFiles(controlSocket).socket, { force: true });
}
