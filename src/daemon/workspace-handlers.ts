/**
 * RPC handlers of `vm.workspace.*`, `vm.cp.*` and `vm.auth.*`: payloads
 * arrive on the request's `stdin` channel and leave on `stdout`.
 */
import type { Config } from "../core/config/index.ts";
import type { HandlerContext, HandlerTable } from "./rpc/server.ts";
import type { TransferService, WorkspaceService } from "./workspace/index.ts";

export interface WorkspaceHandlerDeps {
  workspaces: WorkspaceService;
  transfers: TransferService;
  auth: Config["auth"];
}

export function buildWorkspaceHandlers(deps: WorkspaceHandlerDeps): HandlerTable {
  const { workspaces, transfers } = deps;
  return {
    "vm.workspace.prepare": (params, ctx) =>
      workspaces.prepare({
        name: params.name,
        path: params.path,
        readonly: params.readonly === true,
        includeUntracked: params.includeUntracked === true,
        repo: params.repo,
        payload: ctx.streams.incoming("stdin"),
        signal: ctx.signal,
      }),
    "vm.workspace.show": (params) => workspaces.show(params.name),
    "vm.workspace.export": (params, ctx) =>
      toStdout(ctx, (onData) =>
        workspaces.export({ name: params.name, format: params.format, onData, signal: ctx.signal }),
      ),
    "vm.workspace.exported": (params) =>
      workspaces.markExported(params.name, { head: params.head, tree: params.tree }),
    "vm.cp.in": (params, ctx) =>
      transfers.copyIn({
        name: params.name,
        path: params.path,
        source: params.source,
        base: params.base,
        archive: params.archive === true,
        payload: ctx.streams.incoming("stdin"),
        signal: ctx.signal,
      }),
    "vm.cp.out": (params, ctx) =>
      toStdout(ctx, (onData) =>
        transfers.copyOut({ name: params.name, path: params.path, onData, signal: ctx.signal }),
      ),
    "vm.auth.config": () => ({
      authorizedKeys: deps.auth.authorized_keys,
      gitIdentity: deps.auth.git_identity,
      files: deps.auth.files.map((file) => ({ host: file.host, guest: file.guest ?? file.host })),
    }),
    "vm.auth.sync": (params, ctx) => transfers.syncAuth(params, ctx.signal),
  };
}

/** Runs `body` with a writer to the request's stdout channel, and ends the channel whatever happens. */
async function toStdout<T>(
  ctx: HandlerContext,
  body: (onData: (chunk: Buffer) => Promise<void>) => Promise<T>,
): Promise<T> {
  try {
    return await body((chunk) => ctx.streams.write("stdout", chunk));
  } finally {
    ctx.streams.end("stdout");
  }
}
