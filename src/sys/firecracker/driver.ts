import { closeSync } from "node:fs";
import { rm, writeFile } from "node:fs/promises";
import { dirname, join } from "node:path";
import { throwIfAborted } from "../../core/async/index.ts";
import {
  capabilitiesFor,
  type FirecrackerCall,
  type FirecrackerCapabilities,
  firecrackerFeatures,
  firecrackerFiles,
  parseFirecrackerVersion,
  planFirecrackerBoot,
  planSnapshotCreate,
  planSnapshotLoad,
  type VmState,
} from "../../core/firecracker/index.ts";
import type { Logger } from "../../core/log/index.ts";
import { machineSignature, maskBootSpec, SnapshotFiles } from "../../core/snapshot/index.ts";
import {
  type BootSpec,
  runStateOf,
  type VmmDriver,
  type VmmFeatures,
  type VmmHandle,
} from "../../core/vmm/contract.ts";
import { BangerError, ErrorCode } from "../../protocol/index.ts";
import { kernelFormat } from "../kernel/index.ts";
import { createProcessRunner, type Runner } from "../runner/index.ts";
import { type ConsoleDrain, drainConsoleFifo, openConsoleFifo } from "../vmm/console.ts";
import { isVmmRunning, killAndWait, signalAndWait, spawnDetachedVmm, waitVmmGone } from "../vmm/process.ts";
import { firecrackerRequest, waitForApi } from "./client.ts";

export interface FirecrackerDriverOptions {
  /** Path (or PATH name) of the firecracker binary. */
  binary: string;
  logger: Logger;
  /** Runs `firecracker --version`; defaults to a process runner. */
  runner?: Runner;
  /** Time allowed for the API socket to answer after spawn. */
  apiTimeoutMs?: number;
  /** Time allowed for each of the SIGTERM and SIGKILL phases of stop/kill. */
  signalTimeoutMs?: number;
  /** Size cap and rotated generations of each VM's console.log. */
  console?: { maxBytes: number; files: number } | undefined;
}

const DEFAULT_CONSOLE = { maxBytes: 8 * 1024 * 1024, files: 3 };

export interface FirecrackerDriver extends VmmDriver {
  /**
   * Runs `--version` once and caches the capabilities. `features` reflects
   * the probed binary afterwards (bzImage in kernelFormats only where the
   * binary boots one); before the first probe it is the conservative ELF-only set.
   */
  probe(): Promise<FirecrackerCapabilities>;
}

/** Name of Firecracker's own log, next to the API socket. */

export function createFirecrackerDriver(options: FirecrackerDriverOptions): FirecrackerDriver {
  const runner = options.runner ?? createProcessRunner();
  const log = options.logger.child({ vmm: "firecracker" });
  const apiTimeoutMs = options.apiTimeoutMs ?? 10_000;
  const signalTimeoutMs = options.signalTimeoutMs ?? 5_000;
  let capabilities: Promise<FirecrackerCapabilities> | undefined;
  let probed: FirecrackerCapabilities | undefined;
  /** `--version`'s `major.minor.patch`: a snapshot loads only into the version that made it. */
  let version: string | null = null;
  const consoleCap = options.console ?? DEFAULT_CONSOLE;
  /** Console drains of the VMMs this daemon watches, by API socket; each ends when its VMM exits. */
  const drains = new Map<string, ConsoleDrain>();
  const watchDrain = (controlSocket: string, drain: ConsoleDrain) => {
    drains.set(controlSocket, drain);
    void drain.ended.then(() => {
      if (drains.get(controlSocket) === drain) drains.delete(controlSocket);
    });
  };
  const mkfifo = async (path: string) => {
    await rm(path, { force: true });
    await runner.run(["mkfifo", "-m", "0600", path]);
  };

  function probe(): Promise<FirecrackerCapabilities> {
    capabilities ??= probeCapabilities(runner, options.binary).then(
      ({ caps, versionText }) => {
        probed = caps;
        version = versionText;
        log.info("firecracker probed", { binary: options.binary, caps });
        return caps;
      },
      (error: unknown) => {
        capabilities = undefined;
        throw error;
      },
    );
    return capabilities;
  }

  async function start(spec: BootSpec, signal: AbortSignal): Promise<VmmHandle> {
    const caps = await probe();
    if ((await kernelFormat(spec.kernel)) === "bzImage" && !caps.bzImage) {
      throw new BangerError(
        ErrorCode.BOOT_FAILED,
        `this Firecracker cannot boot the bzImage ${spec.kernel}`,
        {
          hint: "use an ELF vmlinux (banger extracts one from a bzImage), or Firecracker v1.17 or newer",
        },
      );
    }
    return launch(spec, planFirecrackerBoot(spec, caps), signal);
  }

  /** Spawns Firecracker in the VM directory, waits for its API and makes the planned calls; kills it if one fails. */
  async function launch(
    spec: BootSpec,
    plan: readonly FirecrackerCall[],
    signal: AbortSignal,
  ): Promise<VmmHandle> {
    throwIfAborted(signal);
    const files = firecrackerFiles(spec.vmDir);
    await removeSockets(files);
    // Firecracker opens --log-path and --metrics-path without O_CREAT.
    await writeFile(files.log, "", { flag: "a" });
    await writeFile(files.metrics, "", { flag: "a" });

    // Firecracker's stdout is the serial console, through a FIFO the daemon drains; its stderr goes to the VMM log.
    const { drain, writerFd } = await openConsoleFifo({
      fifoPath: files.console,
      logFile: spec.consoleLog,
      ...consoleCap,
      logger: log,
      mkfifo,
    });
    let spawned: Awaited<ReturnType<typeof spawnDetachedVmm>>;
    try {
      // Its working directory is the VM's, where the drive's relative path points.
      spawned = await spawnDetachedVmm({
        argv: [options.binary, ...firecrackerArgv(spec, files)],
        stdout: { fd: writerFd },
        stderr: spec.vmmLog,
        cwd: spec.vmDir,
      });
    } catch (error) {
      drain.close();
      throw error;
    } finally {
      closeSync(writerFd);
    }
    const { pid, startTicks, exited } = spawned;
    const handle: VmmHandle = { pid, pidStartTicks: startTicks, controlSocket: files.api };
    watchDrain(files.api, drain);
    const vmLog = log.child({ vm: spec.vmName, pid });
    vmLog.info("firecracker spawned", { socket: files.api });
    try {
      await waitForApi(files.api, Date.now() + apiTimeoutMs, {
        signal,
        // Our own child: its exit event is exact, while /proc can show a
        // half-exec'd command line when the binary is a wrapper script.
        isAlive: () => !exited.aborted,
      });
      for (const call of plan) {
        throwIfAborted(signal);
        await firecrackerRequest(files.api, call.method, call.path, call.body, { signal });
      }
    } catch (error) {
      vmLog.warn("firecracker start failed; killing it", { error: String(error) });
      await killAndWait(handle, signalTimeoutMs, "firecracker");
      await removeSockets(files);
      throw error;
    }
    vmLog.info("firecracker started");
    return handle;
  }

  async function stop(handle: VmmHandle, stopOptions: { timeoutMs: number }): Promise<void> {
    if (!(await isVmmRunning(handle))) return removeControlSocket(handle);
    const stopLog = log.child({ pid: handle.pid });
    try {
      await firecrackerRequest(
        handle.controlSocket,
        "PUT",
        "/actions",
        { action_type: "SendCtrlAltDel" },
        {
          timeoutMs: Math.max(1000, stopOptions.timeoutMs),
        },
      );
      if (await waitVmmGone(handle, stopOptions.timeoutMs)) return removeControlSocket(handle);
      stopLog.warn("guest ignored Ctrl-Alt-Del; sending SIGTERM");
    } catch (error) {
      stopLog.warn("SendCtrlAltDel failed; sending SIGTERM", { error: String(error) });
    }
    if (await signalAndWait(handle, "SIGTERM", signalTimeoutMs)) return removeControlSocket(handle);
    stopLog.warn("firecracker ignored SIGTERM; sending SIGKILL");
    await killAndWait(handle, signalTimeoutMs, "firecracker");
    await removeControlSocket(handle);
  }

  async function kill(handle: VmmHandle): Promise<void> {
    await killAndWait(handle, signalTimeoutMs, "firecracker");
    await removeControlSocket(handle);
  }

  /** A daemon that restarted drains the console FIFO of a Firecracker it finds running. */
  function reattachConsole(handle: VmmHandle): void {
    if (drains.has(handle.controlSocket)) return;
    const files = firecrackerFiles(dirname(handle.controlSocket));
    try {
      const logFile = join(dirname(handle.controlSocket), "console.log");
      watchDrain(
        handle.controlSocket,
        drainConsoleFifo({ fifoPath: files.console, logFile, ...consoleCap, logger: log }),
      );
    } catch (error) {
      log.warn("cannot re-attach the console; its output is dropped", {
        fifo: files.console,
        err: String(error),
      });
    }
  }

  return {
    kind: "firecracker",
    get features(): VmmFeatures {
      return firecrackerFeatures(probed);
    },
    probe,
    start,
    snapshots: {
      async describe(spec) {
        const caps = await probe();
        const plan = planFirecrackerBoot(maskBootSpec(spec), caps).map((call) => JSON.stringify(call));
        return { signature: machineSignature(plan), vmmVersion: version, accel: null };
      },
      async save(handle, dir, signal) {
        const call = planSnapshotCreate(snapshotFiles(dir));
        await firecrackerRequest(handle.controlSocket, call.method, call.path, call.body, {
          signal,
          timeoutMs: 120_000,
        });
      },
      async restore(spec, dir, signal) {
        await probe();
        return launch(spec, [planSnapshotLoad(spec, snapshotFiles(dir))], signal);
      },
    },
    stop,
    kill,
    isRunning: isVmmRunning,
    pause: (handle) => pauseFirecracker(handle),
    resume: (handle) => resumeFirecracker(handle),
    async reattach(handle) {
      const reply = await firecrackerRequest(handle.controlSocket, "GET", "/", undefined, {
        timeoutMs: 5000,
      });
      const state = (reply.body as { state?: unknown } | undefined)?.state;
      reattachConsole(handle);
      return runStateOf(typeof state === "string" ? state : "");
    },
  };
}

/** `PATCH /vm {"state":"Paused"}`: freezes the vCPUs. */
export function pauseFirecracker(handle: VmmHandle): Promise<void> {
  return patchVmState(handle, "Paused");
}

/** `PATCH /vm {"state":"Resumed"}`. */
export function resumeFirecracker(handle: VmmHandle): Promise<void> {
  return patchVmState(handle, "Resumed");
}

async function patchVmState(handle: VmmHandle, state: VmState): Promise<void> {
  if (!(await isVmmRunning(handle))) {
    throw new BangerError(ErrorCode.BAD_STATE, `firecracker (pid ${handle.pid}) is not running`);
  }
  await firecrackerRequest(handle.controlSocket, "PATCH", "/vm", { state });
}

async function probeCapabilities(
  runner: Runner,
  binary: string,
): Promise<{ caps: FirecrackerCapabilities; versionText: string }> {
  const result = await runner.run([binary, "--version"], { timeoutMs: 10_000 });
  const parsed = parseFirecrackerVersion(result.stdout);
  return { caps: capabilitiesFor(parsed), versionText: `${parsed.major}.${parsed.minor}.${parsed.patch}` };
}

/** Firecracker's own flags: the API socket, the VM id, its log and metrics files. */
function firecrackerArgv(spec: BootSpec, files: ReturnType<typeof firecrackerFiles>): string[] {
  return [
    "--api-sock",
    files.api,
    "--id",
    spec.vmId,
    "--log-path",
    files.log,
    "--level",
    "Info",
    "--metrics-path",
    files.metrics,
  ];
}

/** A Firecracker snapshot's two files in a snapshot directory. */
function snapshotFiles(dir: string): { state: string; memory: string } {
  return { state: join(dir, SnapshotFiles.state), memory: join(dir, SnapshotFiles.memory) };
}

async function removeSockets(files: { api: string; vsock: string; console: string }): Promise<void> {
  await rm(files.api, { force: true });
  await rm(files.vsock, { force: true });
  await rm(files.console, { force: true });
}

/** What a stopped Firecracker leaves: its API socket and console FIFO. */
async function removeControlSocket(handle: VmmHandle): Promise<void> {
  await rm(handle.controlSocket, { force: true });
  await rm(firecrackerFiles(dirname(handle.controlSocket)).console, { force: true });
}
