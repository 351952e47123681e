/**
 * VM lifecycle: create, start, stop, kill, pause, resume, delete, set,
 * exec, proxy, logs. A façade: each method looks the VM up, takes its lock
 * when it changes the VM, and calls one operation module (boot, stop,
 * create, recovery) over the shared context (context.ts).
 *
 * Lock discipline (ARCHITECTURE.md "Lock order"):
 * - `vmLocks[id]` is held across a whole lifecycle op on one VM (start,
 *   stop, kill, delete, set), including boot.
 * - `reservation` is held only to re-check the name, allocate the guest IP
 *   and insert the row (milliseconds). Image resolution and boot run outside it.
 * - Never take `reservation` and then a VM lock.
 * - exec, proxy, logs, sshConfig and runtime take no lock.
 *
 * Resources: every acquisition in a multi-step operation is registered on
 * an AsyncDisposableStack with its undo; a failure or cancel unwinds in
 * reverse order, a success moves them to the VM (its handles.json).
 */
import type { Socket } from "node:net";
import { GIB } from "../../core/units.ts";
import {
  canReconfigure,
  isActiveState,
  isAtRest,
  mayHoldRuntime,
  type VmRecord,
} from "../../core/vm/index.ts";
import { BangerError, type CreateVmParams, ErrorCode, type VmInfo } from "../../protocol/index.ts";
import { startLocked } from "./boot.ts";
import { claimLocked } from "./claim.ts";
import { createVmContext, type OpOptions, type VmServiceDeps } from "./context.ts";
import { createVm, removeVm } from "./create.ts";
import type { GuestExec, GuestExecResult, GuestFiles } from "./platform.ts";
import { type ReconcileResult, reap, reconcile } from "./recovery.ts";
import type { RestoreFrom } from "./restore.ts";
import { type SavedState, saveLocked } from "./snapshot.ts";
import { pauseOrResume, releaseRuntime, stopLocked } from "./stop.ts";
import { killStrayVmms } from "./strays.ts";
import { discardSuspended, resumeSuspendedLocked, suspendLocked } from "./suspend.ts";

export type { OpOptions, VmServiceDeps } from "./context.ts";

export interface VmService {
  /** Boots a new VM from an image, or (with `from`) restores a clone of a snapshot. */
  create(params: CreateVmParams, options: OpOptions, from?: RestoreFrom): Promise<VmInfo>;
  /** Saves a running or paused VM's state and disk into `dir` under its lock; the VM goes on (./snapshot.ts). */
  saveSnapshot(
    name: string,
    dir: string,
    options: OpOptions & { includeSecrets: boolean },
  ): Promise<SavedState>;
  list(): Promise<VmInfo[]>;
  show(name: string): Promise<VmInfo>;
  start(name: string, options: OpOptions): Promise<VmInfo>;
  /** Graceful stop; a cancel kills the VMM and fails with CANCELLED (see stop.ts). */
  stop(name: string, options: OpOptions): Promise<VmInfo>;
  restart(name: string, options: OpOptions): Promise<VmInfo>;
  kill(name: string): Promise<VmInfo>;
  /** Freezes a running VM's vCPUs; its memory, disk and network stay. */
  pause(name: string): Promise<VmInfo>;
  /** Lets a paused VM run again, or restores a suspended one from disk. */
  resume(name: string, options: OpOptions): Promise<VmInfo>;
  /** Writes a running or paused VM's memory to disk and ends its VMM (./suspend.ts). */
  suspend(name: string, options: OpOptions): Promise<VmInfo>;
  /** Takes a paused warm pool member as `name` (or a generated name): rename, resume, hostname (./claim.ts). */
  claim(memberId: string, name: string | undefined, options: OpOptions): Promise<VmInfo>;
  /** Exec events (starts and ends) of a VM since the daemon started, and how many run now. */
  execActivity(vmId: string): { events: number; inFlight: number };
  delete(name: string): Promise<void>;
  exec(name: string, exec: GuestExec): Promise<GuestExecResult>;
  /** The running guest's files through its channel (no program in the guest needed). */
  files(name: string): Promise<GuestFiles>;
  proxy(name: string, port: number, signal: AbortSignal): Promise<Socket>;
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
  reconcile(): Promise<ReconcileResult>;
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
  /** The file on the host that stores the VM's root disk; null when it is missing. */
  diskFile: string | null;
}

export function createVmService(deps: VmServiceDeps): VmService {
  const ctx = createVmContext(deps);
  const { store, vmLocks } = deps;
  /** Runs `op` under the named VM's lock, with its row read again once the lock is held. */
  const locked = <T>(name: string, op: (fresh: VmRecord) => Promise<T>): Promise<T> => {
    const vm = ctx.byName(name);
    return vmLocks.run(vm.id, () => op(ctx.byName(name)));
  };

  const execs = new Map<string, { events: number; inFlight: number }>();
  const execActivity = (vmId: string) => {
    let activity = execs.get(vmId);
    if (!activity) {
      activity = { events: 0, inFlight: 0 };
      execs.set(vmId, activity);
    }
    return activity;
  };

  /** Counts `request` as guest activity of the VM while it runs (the idle pass reads it). */
  const trackActivity = <T>(vmId: string, request: () => Promise<T>): Promise<T> => {
    const activity = execActivity(vmId);
    activity.events++;
    activity.inFlight++;
    return request().finally(() => {
      activity.events++;
      activity.inFlight--;
    });
  };

  /** The VM for guest I/O: a suspended VM is woken first (`vm.suspend_after_idle` counts on it). */
  const wakeForGuestIo = async (name: string, signal: AbortSignal | undefined): Promise<VmRecord> => {
    const vm = ctx.byName(name);
    if (vm.state !== "suspended") return vm;
    return vmLocks.run(vm.id, async () => {
      const fresh = ctx.byName(name);
      return fresh.state === "suspended"
        ? resumeSuspendedLocked(ctx, fresh, {
            signal: signal ?? new AbortController().signal,
            progress: () => {},
          })
        : fresh;
    });
  };

  /** A graceful stop of whatever state the VM is in (a suspended VM's state is discarded). */
  const stopAny = async (fresh: VmRecord, options: OpOptions): Promise<VmRecord> => {
    if (fresh.state === "suspended") return discardSuspended(ctx, fresh);
    return isAtRest(fresh.state) ? fresh : stopLocked(ctx, fresh, "graceful", options);
  };

  return {
    create: (params, options, from) => createVm(ctx, params, options, from),

    saveSnapshot: (name, dir, options) => locked(name, (fresh) => saveLocked(ctx, fresh, dir, options)),

    async list() {
      return store.listVms().map(ctx.toInfo);
    },

    async show(name) {
      return ctx.toInfo(ctx.byName(name));
    },

    start: (name, options) =>
      locked(name, async (fresh) => {
        if (fresh.state === "running" && (await ctx.isAlive(fresh))) return ctx.toInfo(fresh);
        if (fresh.state === "paused" && (await ctx.isAlive(fresh))) throw ctx.notRunning(fresh);
        if (fresh.state === "suspended") return ctx.toInfo(await resumeSuspendedLocked(ctx, fresh, options));
        let current = fresh;
        if (mayHoldRuntime(fresh.state)) {
          await releaseRuntime(ctx, fresh, await ctx.handles.load(fresh));
          current = ctx.setState(fresh, "stopped", `the VMM process was gone (state was ${fresh.state})`);
        }
        return ctx.toInfo(await startLocked(ctx, current, options));
      }),

    stop: (name, options) => locked(name, async (fresh) => ctx.toInfo(await stopAny(fresh, options))),

    restart: (name, options) =>
      locked(name, async (fresh) => {
        const stopped = await stopAny(fresh, options);
        return ctx.toInfo(await startLocked(ctx, stopped, options));
      }),

    kill: (name) =>
      locked(name, async (fresh) =>
        ctx.toInfo(
          fresh.state === "suspended"
            ? await discardSuspended(ctx, fresh)
            : await stopLocked(ctx, fresh, "kill"),
        ),
      ),

    pause: (name) => locked(name, async (fresh) => ctx.toInfo(await pauseOrResume(ctx, fresh, "pause"))),

    resume: (name, options) =>
      locked(name, async (fresh) =>
        ctx.toInfo(
          fresh.state === "suspended"
            ? await resumeSuspendedLocked(ctx, fresh, options)
            : await pauseOrResume(ctx, fresh, "resume"),
        ),
      ),

    suspend: (name, options) =>
      locked(name, async (fresh) => ctx.toInfo(await suspendLocked(ctx, fresh, options))),

    async delete(name) {
      const vm = ctx.byName(name);
      await vmLocks.run(vm.id, async () => {
        const fresh = store.getVmById(vm.id);
        if (!fresh) return;
        if (ctx.handles.vmmHandle(await ctx.handles.load(fresh))) await stopLocked(ctx, fresh, "kill");
        // Whatever handles.json said: no process of this VM outlives it.
        await killStrayVmms({ census: deps.census, logger: deps.logger, vmId: fresh.id });
        await removeVm(ctx, fresh);
      });
    },

    execActivity: (vmId) => ({ ...execActivity(vmId) }),

    claim: (memberId, name, options) =>
      vmLocks.run(memberId, async () => {
        const member = store.getVmById(memberId);
        if (!member) throw new BangerError(ErrorCode.VM_NOT_FOUND, `pool member ${memberId} is gone`);
        return ctx.toInfo(await claimLocked(ctx, member, name, options));
      }),

    async exec(name, exec) {
      const vm = await wakeForGuestIo(name, exec.signal);
      if (vm.state !== "running" || !(await ctx.isAlive(vm))) throw ctx.notRunning(vm);
      const result = await trackActivity(vm.id, () => ctx.channel.exec(ctx.target(vm), exec));
      // ssh's 255 is also what a VM that stopped (or was deleted) under the command looks like.
      if (result.exitCode === 255) {
        const fresh = store.getVmById(vm.id);
        if (fresh?.state !== "running" || !(await ctx.isAlive(fresh))) {
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

    async files(name) {
      const vm = await wakeForGuestIo(name, undefined);
      if (vm.state !== "running" || !(await ctx.isAlive(vm))) throw ctx.notRunning(vm);
      if (!ctx.channel.files) {
        throw new BangerError(
          ErrorCode.BAD_STATE,
          `VM '${name}' is reached by a channel without file requests`,
          {
            hint: "file copies need banger's guest agent; restart the VM",
          },
        );
      }
      const files = ctx.channel.files(ctx.target(vm));
      // Each request counts as guest activity, as an exec does, so an idle pass never suspends a copy.
      const track = <T>(request: () => Promise<T>): Promise<T> =>
        trackActivity(vm.id, request).catch((error: unknown) => {
          throw guestDiskFull(error) ? withHint(error, diskFullHint(vm.name)) : error;
        });
      return {
        stat: (path, options) => track(() => files.stat(path, options)),
        list: (path) => track(() => files.list(path)),
        readFile: (path, onData) => track(() => files.readFile(path, onData)),
        writeFile: (path, mode, source, size) => track(() => files.writeFile(path, mode, source, size)),
        mkdir: (path, attrs) => track(() => files.mkdir(path, attrs)),
        link: (path, target, options) => track(() => files.link(path, target, options)),
        setAttrs: (path, attrs) => track(() => files.setAttrs(path, attrs)),
      };
    },

    async proxy(name, port, signal) {
      const vm = ctx.byName(name);
      if (vm.state !== "running") throw ctx.notRunning(vm);
      return ctx.channel.openTcp(ctx.target(vm), port, signal);
    },

    async logs(name, options) {
      const vm = ctx.byName(name);
      const file = ctx.paths(vm).console;
      const size = await deps.files.size(file);
      let sent = 0;
      await deps.files.stream(file, {
        offset: Math.max(0, size - options.tailBytes),
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
      const vm = ctx.byName(name);
      return {
        user: deps.guest.user,
        host: vm.guestIp,
        identityFile: await deps.guest.identityFile(),
        knownHostsFile: ctx.paths(vm).knownHosts,
      };
    },

    async runtime(name) {
      const vm = ctx.byName(name);
      const alive = await ctx.isAlive(vm);
      return {
        info: ctx.toInfo(vm),
        alive,
        pid: alive ? (await ctx.handles.load(vm)).pid : null,
        diskFile: (await deps.disks.locate(ctx.paths(vm).dir))?.file ?? null,
      };
    },

    reconcile: () => reconcile(ctx),

    async stopAll() {
      const stopped: string[] = [];
      for (const vm of store.listVms().filter((candidate) => isActiveState(candidate.state))) {
        await vmLocks.run(vm.id, async () => {
          await stopLocked(ctx, ctx.byName(vm.name), "graceful");
          stopped.push(vm.name);
        });
      }
      return stopped;
    },

    set: (name, changes) =>
      locked(name, async (fresh) => {
        if (!canReconfigure(fresh.state)) {
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
          await deps.disks.grow(await ctx.storedDisk(fresh), changes.diskGib * GIB);
        }
        const updated = {
          ...fresh,
          cpus: changes.cpus ?? fresh.cpus,
          memoryMib: changes.memoryMib ?? fresh.memoryMib,
          diskGib: changes.diskGib ?? fresh.diskGib,
          updatedAt: deps.now().toISOString(),
        };
        store.updateVm(updated);
        deps.logger.info("vm set", { vm: name, ...changes });
        return ctx.toInfo(updated);
      }),

    reap: () => reap(ctx),
  };
}

/** An error the guest answered because its disk (or the user's quota there) is full. */
function guestDiskFull(error: unknown): error is BangerError {
  return (
    error instanceof BangerError &&
    error.code === ErrorCode.RESOURCE_EXHAUSTED &&
    error.message.startsWith("guest: ")
  );
}

function diskFullHint(name: string): string {
  return `the guest's disk is full: free space in it, or grow it with \`banger vm stop ${name} && banger vm set ${name} --disk 20g && banger vm start ${name}\``;
}

function withHint(error: BangerError, hint: string): BangerError {
  return new BangerError(error.code, error.message, { hint, data: error.data, cause: error.cause });
}
