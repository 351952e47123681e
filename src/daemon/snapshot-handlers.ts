/**
 * RPC handlers of snapshots: `vm.snapshot`, `snapshot.list|show|delete` and
 * `vm.fork`. (`vm.create` with `from` is routed in vm-handlers.ts.)
 */
import type { HandlerContext, HandlerTable } from "./rpc/server.ts";
import type { SnapshotService } from "./snapshot/index.ts";

export function buildSnapshotHandlers(deps: { snapshots: SnapshotService }): HandlerTable {
  const { snapshots } = deps;
  const op = (ctx: HandlerContext) => ({ signal: ctx.signal, progress: ctx.progress });
  return {
    "vm.snapshot": (params, ctx) => snapshots.take(params, op(ctx)),
    "snapshot.list": async () => ({ snapshots: await snapshots.list() }),
    "snapshot.show": (params) => snapshots.show(params.name),
    "snapshot.delete": async (params) => {
      await snapshots.delete(params.name);
      return { name: params.name, deleted: true as const };
    },
    "vm.fork": (params, ctx) => snapshots.fork(params, op(ctx)),
  };
}
