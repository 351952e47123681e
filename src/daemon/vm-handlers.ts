/**
 * RPC handlers of the `vm.*` methods: translate between the
 * protocol and the services, including the byte streams of exec, proxy and
 * logs, the async create operations, and the stats and health probes.
 */
import { errorMessage } from "../core/async/index.ts";
import type { OperationRegistry, OperationSnapshot } from "../core/concurrency/index.ts";
import { applyRunDefaults, type RunDefaults } from "../core/oci/index.ts";
import { isActiveState } from "../core/vm/index.ts";
import {
  BangerError,
  type CreateVmParams,
  ErrorCode,
  type OperationInfo,
  type VmInfo,
} from "../protocol/index.ts";
import type { PoolService } from "./pool/index.ts";
import type { HandlerContext, HandlerTable } from "./rpc/server.ts";
import type { SnapshotService } from "./snapshot/index.ts";
import type { OpOptions, VmService, VmStatsService } from "./vm/index.ts";

export interface VmHandlerDeps {
  vms: VmService;
  createOps: OperationRegistry<VmInfo>;
  stats: VmStatsService;
  /** Makes the VMs of `vm.create` with `from` (restored clones). */
  snapshots: Pick<SnapshotService, "createFrom">;
  /** Refuses a delete that would lose work (a workspace's unexported commits) unless forced. */
  beforeDelete?: (name: string, options: { force: boolean; signal: AbortSignal }) => Promise<void>;
  /** The run defaults (ENTRYPOINT, CMD, ENV, WORKDIR, USER) of a VM's image, if it has any. */
  runDefaults?: (vmName: string) => RunDefaults | undefined;
  /** Warm pools: a matching create takes a member; `vm.list` leaves members out. */
  pool?: Pick<PoolService, "take" | "isMember">;
}

export function buildVmHandlers(deps: VmHandlerDeps): HandlerTable {
  const { vms, createOps, stats } = deps;
  const op = (ctx: HandlerContext) => ({ signal: ctx.signal, progress: ctx.progress });
  const create = async (params: CreateVmParams, options: OpOptions) => {
    const taken = await deps.pool?.take(params, options);
    if (taken) return taken;
    const { from } = params;
    return from === undefined
      ? vms.create(params, options)
      : deps.snapshots.createFrom({ ...params, from }, options);
  };
  return {
    "vm.create": (params, ctx) => create(params, op(ctx)),
    "vm.create.begin": (params) => {
      const snapshot = createOps.begin("vm.create", params.name ?? null, (opCtx) =>
        create(params, {
          signal: opCtx.signal,
          progress: (event) => opCtx.report(event.step, event.message),
        }),
      );
      return { operation: operationInfo(snapshot) };
    },
    "vm.create.status": async (params) => {
      const snapshot = await createOps.wait(params.operationId, params.waitMs ?? 0);
      if (!snapshot) throw operationNotFound(params.operationId);
      return { operation: operationInfo(snapshot), vm: snapshot.result ?? null };
    },
    "vm.create.cancel": async (params) => {
      const snapshot = await createOps.cancel(params.operationId);
      if (!snapshot) throw operationNotFound(params.operationId);
      return { operation: operationInfo(snapshot) };
    },
    "vm.list": async () => ({ vms: (await vms.list()).filter((vm) => !deps.pool?.isMember(vm)) }),
    "vm.show": (params) => vms.show(params.name),
    "vm.start": (params, ctx) => vms.start(params.name, op(ctx)),
    "vm.stop": (params, ctx) => vms.stop(params.name, op(ctx)),
    "vm.restart": (params, ctx) => vms.restart(params.name, op(ctx)),
    "vm.kill": (params) => vms.kill(params.name),
    "vm.pause": (params) => vms.pause(params.name),
    "vm.resume": (params, ctx) => vms.resume(params.name, op(ctx)),
    "vm.suspend": (params, ctx) => vms.suspend(params.name, op(ctx)),
    "vm.set": ({ name, ...changes }) => vms.set(name, changes),
    "vm.delete": async (params, ctx) => {
      await deps.beforeDelete?.(params.name, { force: params.force === true, signal: ctx.signal });
      if (params.force !== true) refuseActiveDelete(await vms.show(params.name));
      await vms.delete(params.name);
      return { name: params.name, deleted: true as const };
    },
    "vm.exec": async (params, ctx) => {
      try {
        const command = applyRunDefaults(deps.runDefaults?.(params.name), params);
        return await vms.exec(params.name, {
          ...command,
          tty: params.tty,
          timeoutMs: params.timeoutMs,
          detach: params.detach,
          stdin: params.stdin ? ctx.streams.incoming("stdin") : undefined,
          onStdout: (chunk) => ctx.streams.write("stdout", chunk),
          onStderr: (chunk) => ctx.streams.write("stderr", chunk),
          signal: ctx.signal,
          control: ctx.control,
        });
      } finally {
        ctx.streams.end("stdout");
        ctx.streams.end("stderr");
      }
    },
    "vm.proxy": async (params, ctx) => {
      const socket = await vms.proxy(params.name, params.port, ctx.signal);
      const incoming = ctx.streams.incoming("tcp");
      incoming.pipe(socket);
      const onAbort = () => socket.destroy();
      ctx.signal.addEventListener("abort", onAbort, { once: true });
      try {
        for await (const chunk of socket) await ctx.streams.write("tcp", chunk as Buffer);
      } catch {
        // The guest or the client closed the connection; either way the proxy ends.
      } finally {
        ctx.signal.removeEventListener("abort", onAbort);
        incoming.unpipe(socket);
        socket.destroy();
        ctx.streams.end("tcp");
      }
      return { closed: true as const };
    },
    "vm.logs": async (params, ctx) => {
      const bytes = await vms.logs(params.name, {
        follow: params.follow === true,
        tailBytes: params.tailBytes ?? Number.MAX_SAFE_INTEGER,
        signal: ctx.signal,
        onData: (chunk) => ctx.streams.write("stdout", chunk),
      });
      ctx.streams.end("stdout");
      return { bytes };
    },
    "vm.ssh-config": async (params) => {
      const vm = await vms.show(params.name);
      if (vm.state !== "running") {
        throw new BangerError(ErrorCode.BAD_STATE, `VM '${vm.name}' is ${vm.state}; ssh needs it running`, {
          hint:
            vm.state === "paused"
              ? `resume it with \`banger vm resume ${vm.name}\``
              : `start it with \`banger vm start ${vm.name}\``,
        });
      }
      return vms.sshConfig(params.name);
    },
    "vm.stats": (params, ctx) => stats.stats(params.name, ctx.signal),
    "vm.health": (params, ctx) => stats.health(params.name, ctx.signal),
  };
}

function operationInfo(snapshot: OperationSnapshot<VmInfo>): OperationInfo {
  const error = snapshot.error;
  return {
    id: snapshot.id,
    kind: snapshot.kind,
    state: snapshot.state,
    step: snapshot.step,
    message: snapshot.message,
    vmName: snapshot.result?.name ?? snapshot.subject,
    error:
      error === undefined
        ? null
        : error instanceof BangerError
          ? { code: error.code, message: error.message, ...(error.hint ? { hint: error.hint } : {}) }
          : { code: ErrorCode.INTERNAL, message: errorMessage(error) },
    startedAt: snapshot.startedAt.toISOString(),
    finishedAt: snapshot.finishedAt?.toISOString() ?? null,
  };
}

function refuseActiveDelete(vm: VmInfo): void {
  if (!isActiveState(vm.state)) return;
  throw new BangerError(ErrorCode.BAD_STATE, `VM '${vm.name}' is ${vm.state}; deleting it needs --force`, {
    hint: `stop it first (\`banger vm stop ${vm.name}\`), or \`banger vm delete --force ${vm.name}\``,
  });
}

function operationNotFound(id: string): BangerError {
  return new BangerError(ErrorCode.OPERATION_NOT_FOUND, `no operation with id '${id}'`, {
    hint: "finished operations are kept for a few minutes only",
  });
}
