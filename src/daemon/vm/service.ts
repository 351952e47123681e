/**
 * VM lifecycle: create, start, stop, kill, delete, exec, proxy, logs.
 *
 * Lock discipline (ARCHITECTURE.md "Lock order"):
 * - `vmLocks[id]` is held across a whole lifecycle op on one VM (start,
 *   stop, kill, delete, set), including boot.
 * - `reservation` is held only to re-check the name, allocate the guest IP
 *   and insert the row (milliseconds). Image resolution and boot run outside it.
 * - Never take `reservation` and then a VM lock.
 *
 * Resources: every acquisition in a multi-step operation is registered on
 * an AsyncDisposableStack with its undo; a failure or cancel unwinds in
 * reverse order, a success moves them to the VM (its handles.json).
 */
import { join } from "node:path";
import { errorMessage, throwIfAborted } from "../../core/async/index.ts";
import type { KeyedLocks, Mutex } from "../../core/concurrency/index.ts";
import type { Config } from "../../core/config/index.ts";
import { planKernelCmdline } from "../../core/image/index.ts";
import type { Logger } from "../../core/log/index.ts";
import { type Layout, vmPaths } from "../../core/paths/index.ts";
import { GIB } from "../../core/units.ts";
import {
  assertTransition,
  emptyHandles,
  isActiveState,
  macForVmId,
  tapNameForVmId,
  type VmHandles,
  type VmRecord,
  validateVmName,
} from "../../core/vm/index.ts";
import type { VmmHandle } from "../../core/vmm/contract.ts";
import {
  BangerError,
  type CreateVmParams,
  ErrorCode,
  isCancelled,
  type Progress,
  type VmInfo,
  type VmmKind,
  type VmState,
} from "../../protocol/index.ts";
import type { Store } from "../../sys/store/index.ts";
import type { ImageService } from "../image/index.ts";
import type {
  GuestAccess,
  GuestExec,
  VmDisks,
  VmFiles,
  VmHook,
  VmHookContext,
  VmmDrivers,
  VmNetwork,
} from "./platform.ts";
import { killStrayVmms, listVmms, type VmmCensus } from "./strays.ts";

export interface OpOptions {
  signal: AbortSignal;
  progress: Progress;
}

/** In a VM directory while its create runs; one left at reconcile marks an interrupted create. */
const CREATE_PENDING_FILE = "create-pending.json";

export interface VmServiceDeps {
  store: Store;
  layout: Layout;
  config: Config;
  logger: Logger;
  images: Pick<ImageService, "resolve" | "vmlinux">;
  network: VmNetwork;
  drivers: VmmDrivers;
  disks: VmDisks;
  files: VmFiles;
  guest: GuestAccess;
  /** Capability hooks run at every start and stop, in this order (stopped in reverse). */
  hooks?: readonly VmHook[] | undefined;
  /** Finds VMMs from /proc, so none survives a lost or torn handles.json (./strays.ts). */
  census?: VmmCensus | undefined;
  vmLocks: KeyedLocks;
  reservation: Mutex;
  now(): Date;
  newId(): string;
  tscKhz(): Promise<number>;
}

export interface VmService {
  create(params: CreateVmParams, options: OpOptions): Promise<VmInfo>;
  list(): Promise<VmInfo[]>;
  show(name: string): Promise<VmInfo>;
  start(name: string, options: OpOptions): Promise<VmInfo>;
  stop(name: string, options: OpOptions): Promise<VmInfo>;
  restart(name: string, options: OpOptions): Promise<VmInfo>;
  kill(name: string): Promise<VmInfo>;
  /** Freezes a running VM's vCPUs; its memory, disk and network stay. */
  pause(name: string): Promise<VmInfo>;
  /** Lets a paused VM run again. */
  resume(name: string): Promise<VmInfo>;
  delete(name: string): Promise<void>;
  exec(name: string, exec: GuestExec): Promise<{ exitCode: number | null; signal: string | null }>;
  proxy(name: string, port: number, signal: AbortSignal): Promise<import("node:net").Socket>;
  logs(
    name: string,
    options: {
      follow: boolean;
      tailBytes: number;
      signal: AbortSignal;
      onData(chunk: Buffer): Promise<void>;
    },
  ): Promise<number>;
  sshConfig(
    name: string,
  ): Promise<{ user: string; host: string; identityFile: string; knownHostsFile: string }>;
  /**
   * A read-only look at a VM for probes (stats, health), without its lock:
   * the row, the liveness decision, the VMM pid when alive, and its root disk file.
   */
  runtime(name: string): Promise<VmRuntime>;
  /** Brings rows in line with reality after a daemon start; returns what it changed. */
  reconcile(): Promise<{ kept: string[]; demoted: string[]; removed: string[]; removedTaps: string[] }>;
  /** Stops every running VM (daemon stop --stop-vms); returns their names. */
  stopAll(): Promise<string[]>;
  /** Changes a stopped VM's vCPUs, memory or disk size (the disk only grows). */
  set(
    name: string,
    changes: { cpus?: number | undefined; memoryMib?: number | undefined; diskGib?: number | undefined },
  ): Promise<VmInfo>;
  /**
   * Finds running VMs whose VMM died on its own (poweroff, crash, OOM kill),
   * marks them stopped with the reason and releases what they held. VMs
   * with a lifecycle op in progress are left to that op.
   */
  reap(): Promise<string[]>;
}

export interface VmRuntime {
  info: VmInfo;
  /** The one liveness decision: the recorded VMM process is alive and ours. */
  alive: boolean;
  /** The VMM's pid when alive, else null. */
  pid: number | null;
  /** The file on the host that stores the VM's root disk. */
  diskFile: string;
}

export function createVmService(deps: VmServiceDeps): VmService {
  const { store, layout, config, logger } = deps;
  const hooks = deps.hooks ?? [];
  /** In-memory cache of handles.json, rebuilt from the files at reconcile. */
  const handleCache = new Map<string, VmHandles>();

  const toInfo = (vm: VmRecord): VmInfo => ({
    id: vm.id,
    name: vm.name,
    state: vm.state,
    image: vm.imageName,
    vmm: vm.vmm,
    cpus: vm.cpus,
    memoryMib: vm.memoryMib,
    diskGib: vm.diskGib,
    guestIp: vm.guestIp,
    mac: vm.mac,
    createdAt: vm.createdAt,
    updatedAt: vm.updatedAt,
    lastError: vm.lastError,
    dir: vmPaths(layout, vm.id).dir,
    pid: handleCache.get(vm.id)?.pid ?? null,
  });

  const byName = (name: string): VmRecord => {
    const vm = store.getVmByName(name);
    if (!vm) throw new BangerError(ErrorCode.VM_NOT_FOUND, `no VM named '${name}'`);
    return vm;
  };

  const setState = (vm: VmRecord, state: VmState, lastError: string | null = vm.lastError): VmRecord => {
    if (vm.state !== state) assertTransition(vm.name, vm.state, state);
    const updated = { ...vm, state, lastError, updatedAt: deps.now().toISOString() };
    store.setVmState(vm.id, state, lastError, updated.updatedAt);
    return updated;
  };

  const vmmHandle = (handles: VmHandles): VmmHandle | undefined =>
    handles.pid !== null && handles.controlSocket !== null
      ? { pid: handles.pid, pidStartTicks: handles.pidStartTicks ?? 0, controlSocket: handles.controlSocket }
      : undefined;

  const loadHandles = async (vm: VmRecord): Promise<VmHandles> =>
    handleCache.get(vm.id) ??
    (await deps.files.readHandles(vmPaths(layout, vm.id).handles)) ??
    emptyHandles();

  const saveHandles = async (vm: VmRecord, handles: VmHandles): Promise<void> => {
    handleCache.set(vm.id, handles);
    await deps.files.writeHandles(vmPaths(layout, vm.id).handles, handles);
  };

  const clearHandles = async (vm: VmRecord): Promise<void> => {
    handleCache.delete(vm.id);
    await deps.files.removeFile(vmPaths(layout, vm.id).handles);
  };

  /** The one liveness decision: the recorded VMM process is alive and ours. */
  const isAlive = async (vm: VmRecord): Promise<boolean> => {
    const handle = vmmHandle(await loadHandles(vm));
    return handle !== undefined && (await deps.drivers.get(vm.vmm).isRunning(handle));
  };

  const target = (vm: VmRecord) => ({
    vmId: vm.id,
    ip: vm.guestIp,
    knownHostsFile: vmPaths(layout, vm.id).knownHosts,
  });

  const hookContext = (vm: VmRecord): VmHookContext => ({
    vmId: vm.id,
    vmName: vm.name,
    guestIp: vm.guestIp,
    tap: tapNameForVmId(vm.id),
  });

  /** Stops every hook in reverse order; a failing stop is logged, the others still run. */
  const stopHooks = async (vm: VmRecord, only: readonly VmHook[] = hooks): Promise<void> => {
    for (const hook of [...only].reverse()) {
      await hook
        .stop(hookContext(vm))
        .catch((error: unknown) =>
          logger.warn("capability hook stop failed", { vm: vm.name, hook: hook.name, err: String(error) }),
        );
    }
  };

  const startHooks = async (
    vm: VmRecord,
    phase: VmHook["phase"],
    stack: AsyncDisposableStack,
    signal: AbortSignal,
  ): Promise<void> => {
    for (const hook of hooks.filter((candidate) => candidate.phase === phase)) {
      stack.defer(() => stopHooks(vm, [hook]));
      try {
        await hook.start({ ...hookContext(vm), signal });
      } catch (error) {
        if (error instanceof BangerError) throw error;
        throw new BangerError(
          ErrorCode.BOOT_FAILED,
          `capability '${hook.name}' failed to start: ${String(error)}`,
          {
            cause: error,
          },
        );
      }
    }
  };

  /** Releases everything a running VM holds on the host, after its VMM is gone. */
  const releaseRuntime = async (vm: VmRecord, handles: VmHandles): Promise<void> => {
    await stopHooks(vm);
    await deps.guest.close(target(vm)).catch(() => undefined);
    if (handles.tap) await deps.network.deleteTap(handles.tap);
    await deps.disks.detach(handles.extra);
    if (handles.controlSocket) await deps.files.removeFile(handles.controlSocket);
    await clearHandles(vm);
  };

  const storedDisk = async (vm: VmRecord) => {
    const disk = await deps.disks.locate(vmPaths(layout, vm.id).dir);
    if (!disk) {
      throw new BangerError(ErrorCode.BAD_STATE, `the root disk of VM '${vm.name}' is missing`, {
        hint: `delete the VM with \`banger vm delete ${vm.name}\` and create it again`,
      });
    }
    return disk;
  };

  async function startLocked(vm: VmRecord, options: OpOptions): Promise<VmRecord> {
    const { signal, progress } = options;
    const paths = vmPaths(layout, vm.id);
    const image = store.getImageById(vm.imageId);
    if (!image) {
      throw new BangerError(
        ErrorCode.IMAGE_NOT_FOUND,
        `VM '${vm.name}' uses image ${vm.imageName}, which no longer exists`,
      );
    }
    const driver = deps.drivers.get(vm.vmm);
    let current = setState(vm, "starting", null);
    await using stack = new AsyncDisposableStack();
    const handles: VmHandles = emptyHandles();
    try {
      // First, so a VM whose directory was removed gets the disk's hint, not a failed handles.json write.
      const stored = await storedDisk(vm);
      // A VMM a lost handles.json left behind would hold the disk's write lock.
      await killStrayVmms({ census: deps.census, logger, vmId: vm.id });
      // handles.json is written after each acquisition, so a daemon that dies
      // mid-start leaves a reconcile enough to tear down what was made.
      stack.defer(() => clearHandles(vm));
      progress({ step: "vm.network", message: `setting up the network for ${vm.name}` });
      await deps.network.ensureBridge(signal);
      const tap = tapNameForVmId(vm.id);
      handles.tap = tap;
      await saveHandles(vm, handles);
      await deps.network.createTap(tap, signal);
      stack.defer(() => deps.network.deleteTap(tap));

      const attached = await deps.disks.attach({
        disk: stored,
        base: image.rootfs,
        sizeBytes: vm.diskGib * GIB,
        signal,
      });
      stack.defer(() => deps.disks.detach(attached.handles));
      handles.disk = attached.path;
      handles.extra = { ...attached.handles };
      await saveHandles(vm, handles);
      await startHooks(vm, "before-boot", stack, signal);

      const kernel = driver.features.kernelFormats.includes("bzImage")
        ? image.kernel
        : await deps.images.vmlinux(image, { signal });

      const cmdline = planKernelCmdline({
        guestIp: vm.guestIp,
        gatewayIp: deps.network.gateway,
        prefixLength: deps.network.prefixLength,
        hostname: vm.name,
        sshPublicKey: await deps.guest.publicKey(),
        tscKhz: await deps.tscKhz(),
        searchDomain: config.network.domain,
        extraArgs: config.vm.kernel_args,
      });
      await deps.files.rotate(paths.console);
      const controlSocket = vm.vmm === "qemu" ? paths.qmpSocket : paths.apiSocket;
      progress({ step: "vm.boot", message: `booting ${vm.name} (${vm.vmm})` });
      const handle = await driver.start(
        {
          vmId: vm.id,
          vmName: vm.name,
          cpus: vm.cpus,
          memoryMib: vm.memoryMib,
          kernel,
          initrd: image.initrd,
          kernelCmdline: cmdline,
          disk: { path: attached.path, format: stored.format },
          tap,
          mac: vm.mac,
          consoleLog: paths.console,
          vmmLog: paths.vmmLog,
          controlSocket,
          vsockSocket: paths.vsockSocket,
          metricsFile: paths.metrics,
        },
        signal,
      );
      stack.defer(() => driver.kill(handle));
      handles.pid = handle.pid;
      handles.pidStartTicks = handle.pidStartTicks;
      handles.controlSocket = handle.controlSocket;
      await saveHandles(vm, handles);

      progress({ step: "vm.ssh", message: `waiting for ${vm.name} to answer SSH` });
      await deps.guest.waitForBanner({
        ip: vm.guestIp,
        deadlineMs: config.vm.boot_timeout_s * 1000,
        signal,
        stillAlive: () => driver.isRunning(handle),
      });
      await deps.guest.pinHostKey({
        consoleLog: paths.console,
        ip: vm.guestIp,
        knownHostsFile: paths.knownHosts,
      });
      stack.defer(() => deps.guest.close(target(vm)));
      const check = await deps.guest.exec(target(vm), { argv: ["true"], signal });
      if (check.exitCode !== 0) {
        throw new BangerError(
          ErrorCode.GUEST_UNREACHABLE,
          `SSH to ${vm.name} with its pinned host key failed (exit ${check.exitCode})`,
        );
      }
      await startHooks(vm, "guest-ready", stack, signal);
      current = setState(current, "running", null);
      stack.move();
      progress({ step: "vm.ready", message: `${vm.name} is running (${vm.guestIp})`, status: "done" });
      return current;
    } catch (error) {
      const reason = await describeBootFailure(error, paths.console);
      logger.warn("start failed", { vm: vm.name, err: reason });
      await stack
        .disposeAsync()
        .catch((undoError: unknown) =>
          logger.error("undo after failed start failed", { vm: vm.name, err: String(undoError) }),
        );
      setState(current, "error", reason);
      if (isCancelled(error)) throw error;
      // Both logs, then the failing step's own hint (a VMM's log tail for a disk lock or ENOMEM).
      const ownHint = error instanceof BangerError ? error.hint : undefined;
      const logs = `the VMM's own log is ${paths.vmmLog}; the guest console is ${paths.console} (\`banger vm logs ${vm.name}\`)`;
      throw new BangerError(
        error instanceof BangerError ? error.code : ErrorCode.BOOT_FAILED,
        `VM '${vm.name}' failed to start: ${reason}`,
        { hint: ownHint ? `${logs}\n${ownHint}` : logs, cause: error },
      );
    }
  }

  async function describeBootFailure(error: unknown, consoleLog: string): Promise<string> {
    const message = errorMessage(error);
    if (isCancelled(error)) return "cancelled";
    const tail = (await deps.files.tail(consoleLog, 1500).catch(() => "")).trim();
    return tail ? `${message}\n--- console tail ---\n${tail.split("\n").slice(-12).join("\n")}` : message;
  }

  async function stopLocked(vm: VmRecord, mode: "graceful" | "kill"): Promise<VmRecord> {
    const handles = await loadHandles(vm);
    const handle = vmmHandle(handles);
    let current = vm;
    if (handle) {
      const driver = deps.drivers.get(vm.vmm);
      if (mode === "graceful") {
        // A paused guest cannot see the power button: let it run to shut down.
        if (vm.state === "paused") await driver.resume(handle).catch(() => undefined);
        current = setState(vm, "stopping");
        await deps.guest.close(target(vm)).catch(() => undefined);
        await driver.stop(handle, { timeoutMs: config.vm.stop_timeout_s * 1000 });
      } else {
        await driver.kill(handle);
      }
    }
    await releaseRuntime(vm, handles);
    return setState(current, "stopped", mode === "kill" ? "killed" : null);
  }

  const reserve = (
    params: CreateVmParams,
    vmm: VmmKind,
    image: { id: string; name: string },
  ): Promise<VmRecord> =>
    deps.reservation.run(() => {
      const id = deps.newId();
      const name = params.name ?? `vm-${id.slice(0, 6)}`;
      if (store.getVmByName(name)) {
        throw new BangerError(ErrorCode.NAME_TAKEN, `a VM named '${name}' already exists`);
      }
      const now = deps.now().toISOString();
      const vm: VmRecord = {
        id,
        name,
        imageId: image.id,
        imageName: image.name,
        vmm,
        cpus: params.cpus ?? config.vm.cpus,
        memoryMib: params.memoryMib ?? config.vm.memory_mib,
        diskGib: params.diskGib ?? config.vm.disk_gib,
        guestIp: deps.network.allocateIp(store.usedGuestIps()),
        mac: macForVmId(id),
        state: "created",
        lastError: null,
        createdAt: now,
        updatedAt: now,
      };
      store.insertVm(vm);
      return vm;
    });

  async function removeVm(vm: VmRecord): Promise<void> {
    const paths = vmPaths(layout, vm.id);
    const disk = await deps.disks.locate(paths.dir);
    if (disk) await deps.disks.remove(disk);
    await deps.files.removeDir(paths.dir);
    handleCache.delete(vm.id);
    store.deleteVm(vm.id);
  }

  const notRunning = (vm: VmRecord): BangerError =>
    vm.state === "paused"
      ? new BangerError(ErrorCode.BAD_STATE, `VM '${vm.name}' is paused`, {
          hint: `resume it with \`banger vm resume ${vm.name}\``,
        })
      : new BangerError(ErrorCode.BAD_STATE, `VM '${vm.name}' is not running (it is ${vm.state})`, {
          hint: `start it with \`banger vm start ${vm.name}\``,
        });

  /** Pause or resume under the VM's lock; asking for the state it is already in is a no-op. */
  const pauseOrResume = (name: string, action: "pause" | "resume"): Promise<VmRecord> => {
    const vm = byName(name);
    return deps.vmLocks.run(vm.id, async () => {
      const fresh = byName(name);
      const [from, to] =
        action === "pause" ? (["running", "paused"] as const) : (["paused", "running"] as const);
      if (fresh.state === to && (await isAlive(fresh))) return fresh;
      if (fresh.state !== from || !(await isAlive(fresh))) {
        throw new BangerError(
          ErrorCode.BAD_STATE,
          `VM '${name}' is ${fresh.state}; only a ${from} VM can be ${action}d`,
          { hint: `see its state with \`banger vm show ${name}\`` },
        );
      }
      const handle = vmmHandle(await loadHandles(fresh))!;
      await deps.drivers.get(fresh.vmm)[action](handle);
      logger.info(`vm ${action}d`, { vm: name });
      return setState(fresh, to, fresh.lastError);
    });
  };

  return {
    async create(params, options) {
      if (params.name !== undefined) validateVmName(params.name);
      if (params.name !== undefined && store.getVmByName(params.name)) {
        throw new BangerError(ErrorCode.NAME_TAKEN, `a VM named '${params.name}' already exists`);
      }
      const requested = params.vmm ?? config.vmm.default;
      // An explicit VMM is checked before a possibly long image build; `auto`
      // is decided after it, when the accelerator probe has a kernel to boot.
      if (requested !== "auto") await deps.drivers.choose(requested);
      const image = await deps.images.resolve(params.image ?? config.vm.default_image, options);
      const vmm = await deps.drivers.choose(requested);
      const vm = await reserve(params, vmm, image);
      // From here the VM exists; any failure before it is usable removes it again.
      return deps.vmLocks.run(vm.id, async () => {
        await using stack = new AsyncDisposableStack();
        stack.defer(async () => {
          // A failure after the boot (the last step) also ends the VMM that boot left running.
          const current = store.getVmById(vm.id);
          if (current && vmmHandle(await loadHandles(current))) await stopLocked(current, "kill");
          await removeVm(vm);
        });
        const paths = vmPaths(layout, vm.id);
        await deps.files.makeDir(paths.dir);
        // Until removed below, this file tells a reconcile after a daemon crash that the create never finished.
        const marker = join(paths.dir, CREATE_PENDING_FILE);
        await deps.files.writeHandles(marker, emptyHandles());
        options.progress({ step: "vm.disk", message: `creating the root disk of ${vm.name}` });
        await deps.disks.create({
          vmm,
          base: image.rootfs,
          vmDir: paths.dir,
          sizeBytes: vm.diskGib * GIB,
          signal: options.signal,
        });
        let result = setState(vm, "stopped");
        if (params.start !== false) result = await startLocked(result, options);
        await deps.files.removeFile(marker);
        // A cancel that arrived during the last steps still unwinds: the client is told it failed.
        throwIfAborted(options.signal, `create of ${vm.name}`);
        stack.move();
        return toInfo(result);
      });
    },

    async list() {
      return store.listVms().map(toInfo);
    },

    async show(name) {
      return toInfo(byName(name));
    },

    async start(name, options) {
      const vm = byName(name);
      return deps.vmLocks.run(vm.id, async () => {
        const fresh = byName(name);
        if (fresh.state === "running" && (await isAlive(fresh))) return toInfo(fresh);
        if (fresh.state === "paused" && (await isAlive(fresh))) {
          throw new BangerError(ErrorCode.BAD_STATE, `VM '${name}' is paused`, {
            hint: `resume it with \`banger vm resume ${name}\``,
          });
        }
        let current = fresh;
        if (isActiveState(fresh.state) || fresh.state === "starting" || fresh.state === "stopping") {
          await releaseRuntime(fresh, await loadHandles(fresh));
          current = setState(fresh, "stopped", `the VMM process was gone (state was ${fresh.state})`);
        }
        return toInfo(await startLocked(current, options));
      });
    },

    async stop(name) {
      const vm = byName(name);
      return deps.vmLocks.run(vm.id, async () => {
        const fresh = byName(name);
        if (fresh.state === "stopped" || fresh.state === "created") return toInfo(fresh);
        return toInfo(await stopLocked(fresh, "graceful"));
      });
    },

    async restart(name, options) {
      const vm = byName(name);
      return deps.vmLocks.run(vm.id, async () => {
        const fresh = byName(name);
        const stopped =
          fresh.state === "stopped" || fresh.state === "created"
            ? fresh
            : await stopLocked(fresh, "graceful");
        return toInfo(await startLocked(stopped, options));
      });
    },

    async kill(name) {
      const vm = byName(name);
      return deps.vmLocks.run(vm.id, async () => toInfo(await stopLocked(byName(name), "kill")));
    },

    async pause(name) {
      return toInfo(await pauseOrResume(name, "pause"));
    },

    async resume(name) {
      return toInfo(await pauseOrResume(name, "resume"));
    },

    async delete(name) {
      const vm = byName(name);
      await deps.vmLocks.run(vm.id, async () => {
        const fresh = store.getVmById(vm.id);
        if (!fresh) return;
        const handles = await loadHandles(fresh);
        if (vmmHandle(handles)) await stopLocked(fresh, "kill");
        // Whatever handles.json said: no process of this VM outlives it.
        await killStrayVmms({ census: deps.census, logger, vmId: fresh.id });
        await removeVm(fresh);
      });
    },

    async exec(name, exec) {
      const vm = byName(name);
      if (vm.state !== "running" || !(await isAlive(vm))) throw notRunning(vm);
      const result = await deps.guest.exec(target(vm), exec);
      // ssh's 255 is also what a VM that stopped (or was deleted) under the command looks like.
      if (result.exitCode === 255) {
        const fresh = store.getVmById(vm.id);
        if (fresh?.state !== "running" || !(await isAlive(fresh))) {
          throw new BangerError(
            ErrorCode.BAD_STATE,
            `VM '${name}' ${fresh ? `stopped (it is ${fresh.state})` : "was deleted"} while the command ran`,
            {
              hint: fresh ? `start it with \`banger vm start ${name}\` and run the command again` : undefined,
            },
          );
        }
      }
      return result;
    },

    async proxy(name, port, signal) {
      const vm = byName(name);
      if (vm.state !== "running") throw notRunning(vm);
      return deps.guest.openTcp(vm.guestIp, port, signal);
    },

    async logs(name, options) {
      const vm = byName(name);
      const file = vmPaths(layout, vm.id).console;
      const size = await deps.files.size(file).catch(() => 0);
      const offset = Math.max(0, size - options.tailBytes);
      let sent = 0;
      await deps.files.stream(file, {
        offset,
        follow: options.follow,
        signal: options.signal,
        onData: async (chunk) => {
          sent += chunk.length;
          await options.onData(chunk);
        },
      });
      // A follow ends on its own only when the VM's directory went away.
      if (options.follow && !options.signal.aborted && !store.getVmById(vm.id)) {
        throw new BangerError(ErrorCode.VM_NOT_FOUND, `VM '${name}' was deleted`);
      }
      return sent;
    },

    async sshConfig(name) {
      const vm = byName(name);
      return {
        user: deps.guest.user,
        host: vm.guestIp,
        identityFile: await deps.guest.identityFile(),
        knownHostsFile: vmPaths(layout, vm.id).knownHosts,
      };
    },

    async runtime(name) {
      const vm = byName(name);
      const alive = await isAlive(vm);
      return {
        info: toInfo(vm),
        alive,
        pid: alive ? (await loadHandles(vm)).pid : null,
        diskFile:
          (await deps.disks.locate(vmPaths(layout, vm.id).dir))?.file ?? vmPaths(layout, vm.id).overlay,
      };
    },

    async reconcile() {
      const kept: string[] = [];
      const demoted: string[] = [];
      const removed: string[] = [];
      const owned = new Set<string>();
      /** Recorded VMMs of the VMs kept running; every other VMM of this home is killed. */
      const keptPids = new Set<number>();
      const found = await listVmms(deps.census, logger);
      for (const vm of store.listVms()) {
        await deps.vmLocks.run(vm.id, async () => {
          const handles = (await deps.files.readHandles(vmPaths(layout, vm.id).handles)) ?? emptyHandles();
          // A create the daemon died in: the user was told it failed, so nothing of it stays.
          if (await deps.files.exists(join(vmPaths(layout, vm.id).dir, CREATE_PENDING_FILE))) {
            const handle = vmmHandle(handles);
            if (handle && (await deps.drivers.get(vm.vmm).isRunning(handle)))
              await deps.drivers.get(vm.vmm).kill(handle);
            await killStrayVmms({ census: deps.census, logger, vmId: vm.id, found });
            await releaseRuntime(vm, handles);
            await removeVm(vm);
            removed.push(vm.name);
            return;
          }
          const handle = vmmHandle(handles);
          const driver = deps.drivers.get(vm.vmm);
          const alive = handle !== undefined && (await driver.isRunning(handle));
          if (alive && isActiveState(vm.state)) {
            handleCache.set(vm.id, handles);
            if (handles.tap) owned.add(handles.tap);
            keptPids.add(handle.pid);
            kept.push(vm.name);
            // A VMM whose control channel is dead still runs its guest; keep it, and say so.
            const status = await driver.reattach(handle).catch((error: unknown) => {
              const reason = `its ${vm.vmm} control channel did not answer after a daemon restart: ${errorMessage(error)}`;
              store.setVmState(vm.id, vm.state, reason, deps.now().toISOString());
              logger.warn("kept VM without a control channel", { vm: vm.name, err: reason });
              return "unreachable";
            });
            logger.info("reattached VM", { vm: vm.name, vmm: vm.vmm, status });
            // A daemon that died between pausing or resuming a VMM and writing the row left it behind.
            if ((status === "paused" || status === "running") && status !== vm.state) {
              setState(vm, status, vm.lastError);
            }
            return;
          }
          if (alive && handle) await driver.kill(handle);
          // Also a VMM its handles.json does not name (lost, torn, or never written).
          const strays = await killStrayVmms({ census: deps.census, logger, vmId: vm.id, found });
          if (
            handle ||
            strays.length > 0 ||
            isActiveState(vm.state) ||
            vm.state === "starting" ||
            vm.state === "stopping"
          ) {
            await releaseRuntime(vm, handles);
            if (vm.state !== "stopped") {
              setState(
                vm,
                "stopped",
                isActiveState(vm.state)
                  ? "the VMM process was gone when the daemon started"
                  : `interrupted while ${vm.state}`,
              );
            }
            demoted.push(vm.name);
          }
        });
      }
      // VMMs of VMs the store no longer has (or whose directory is gone) end too.
      const killedStrays = await killStrayVmms({ census: deps.census, logger, keep: keptPids, found });
      if (killedStrays.length > 0) logger.warn("killed VMMs no VM owned", { pids: killedStrays });
      const removedTaps = await deps.network.removeLeftoverTaps(owned).catch((error: unknown) => {
        logger.warn("could not list leftover taps", { err: String(error) });
        return [];
      });
      logger.info("reconciled", { kept, demoted, removed, removedTaps });
      return { kept, demoted, removed, removedTaps };
    },

    async stopAll() {
      const stopped: string[] = [];
      for (const vm of store.listVms().filter((candidate) => isActiveState(candidate.state))) {
        await deps.vmLocks.run(vm.id, async () => {
          await stopLocked(byName(vm.name), "graceful");
          stopped.push(vm.name);
        });
      }
      return stopped;
    },

    async set(name, changes) {
      const vm = byName(name);
      return deps.vmLocks.run(vm.id, async () => {
        const fresh = byName(name);
        if (fresh.state !== "stopped" && fresh.state !== "created" && fresh.state !== "error") {
          throw new BangerError(
            ErrorCode.BAD_STATE,
            `VM '${name}' is ${fresh.state}; vm set needs it stopped`,
            {
              hint: `stop it first: \`banger vm stop ${name}\``,
            },
          );
        }
        if (changes.diskGib !== undefined && changes.diskGib < fresh.diskGib) {
          throw new BangerError(
            ErrorCode.INVALID_PARAMS,
            `--disk ${changes.diskGib} GiB is smaller than VM '${name}''s disk (${fresh.diskGib} GiB); disks only grow`,
            { hint: `pass ${fresh.diskGib} or more` },
          );
        }
        if (changes.diskGib !== undefined && changes.diskGib > fresh.diskGib) {
          await deps.disks.grow(await storedDisk(fresh), changes.diskGib * GIB);
        }
        const updated: VmRecord = {
          ...fresh,
          cpus: changes.cpus ?? fresh.cpus,
          memoryMib: changes.memoryMib ?? fresh.memoryMib,
          diskGib: changes.diskGib ?? fresh.diskGib,
          updatedAt: deps.now().toISOString(),
        };
        store.updateVm(updated);
        logger.info("vm set", { vm: name, ...changes });
        return toInfo(updated);
      });
    },

    async reap() {
      const reaped: string[] = [];
      for (const vm of store.listVms()) {
        if (!isActiveState(vm.state) || deps.vmLocks.isLocked(vm.id) || (await isAlive(vm))) continue;
        await deps.vmLocks.run(vm.id, async () => {
          const fresh = store.getVmById(vm.id);
          if (!fresh || !isActiveState(fresh.state) || (await isAlive(fresh))) return;
          const handles = await loadHandles(fresh);
          const reason = await vmmDeathReason(fresh, handles);
          await releaseRuntime(fresh, handles);
          setState(fresh, "stopped", reason);
          logger.warn("reaped a VM whose VMM died", { vm: fresh.name, reason });
          reaped.push(fresh.name);
        });
      }
      return reaped;
    },
  };

  /** Why a VMM went away on its own, as far as its console can tell. */
  async function vmmDeathReason(vm: VmRecord, handles: VmHandles): Promise<string> {
    const tail = await deps.files.tail(vmPaths(layout, vm.id).console, 4096).catch(() => "");
    const who = `the VMM (pid ${handles.pid ?? "?"})`;
    if (/reboot: Power down|System halted|reboot: System halted/.test(tail)) {
      return `the guest powered off; ${who} exited`;
    }
    if (/reboot: Restarting system/.test(tail)) return `the guest rebooted; ${who} exited`;
    if (/Kernel panic/.test(tail)) {
      const line = tail.split("\n").find((text) => text.includes("Kernel panic")) ?? "Kernel panic";
      return `the guest kernel panicked (${line.trim()}); ${who} exited`;
    }
    return `${who} exited unexpectedly (killed or crashed)`;
  }
}
