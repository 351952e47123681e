/**
 * The RPC server's public shapes: what a handler gets and returns, the
 * server's options and limits. Shared by the server, its connections and
 * every handler table.
 */
import type { Readable } from "node:stream";
import type { z } from "zod";
import type { Logger } from "../../core/log/index.ts";
import type {
  ExecSignal,
  MethodName,
  MethodTable,
  Progress,
  RequestId,
  ResultOf,
  StreamChannel,
} from "../../protocol/index.ts";

/** The byte channels of one request, in both directions. */
export interface RequestStreams {
  /** Sends bytes to the client on `ch`; resolves once the socket can take more. */
  write(ch: StreamChannel, data: Buffer): Promise<void>;
  /** Tells the client `ch` has ended. */
  end(ch: StreamChannel): void;
  /** Bytes the client sends on `ch` (stdin, tcp), ending when the client ends it. */
  incoming(ch: StreamChannel): Readable;
}

export interface HandlerContext {
  requestId: RequestId;
  signal: AbortSignal;
  logger: Logger;
  progress: Progress;
  streams: RequestStreams;
  /** Listeners for the client's `$/signal` and `$/resize` on this request (one each; a later call replaces). */
  control: {
    onSignal(listener: (signal: ExecSignal) => void): void;
    onResize(listener: (size: { cols: number; rows: number }) => void): void;
  };
}

/** A request's control listeners, set by its handler. */
export interface ControlListeners {
  signal?: (signal: ExecSignal) => void;
  resize?: (size: { cols: number; rows: number }) => void;
}

export type Handler<M extends MethodName> = (
  params: z.infer<MethodTable[M]["params"]>,
  ctx: HandlerContext,
) => Promise<ResultOf<M>> | ResultOf<M>;

export type HandlerTable = { [M in MethodName]?: Handler<M> };

export interface RpcServerOptions {
  socketPath: string;
  handlers: HandlerTable;
  logger: Logger;
  /** 0o600, or 0o660 with a group. */
  socketMode: number;
  socketGid?: number | undefined;
  maxFrameBytes?: number;
  /** Open connections allowed now (the composition root derives it from the open-file limit). */
  maxConnections?: (() => number) | undefined;
  idleTimeoutMs?: number | undefined;
  /** Bytes of partial frames held across all connections. */
  maxBufferedFrameBytes?: number | undefined;
  /** Reply bytes waiting for a slow client before its connection stops being read. */
  maxPendingWriteBytes?: number | undefined;
  /** Bytes buffered per incoming stream channel before the socket is paused. */
  streamBufferBytes?: number | undefined;
  /** Decides, from the client's hello, whether the connection may continue. */
  onHello(params: { protocol: number; build: string }): { compatible: boolean };
}

export interface RpcServer {
  listen(): Promise<void>;
  /** Stops accepting, aborts in-flight handlers, closes every connection. */
  close(): Promise<void>;
  readonly connectionCount: number;
}

export const RPC_LIMITS = {
  maxConnections: 1024,
  idleTimeoutMs: 10 * 60_000,
  maxBufferedFrameBytes: 64 * 1024 * 1024,
  maxPendingWriteBytes: 4 * 1024 * 1024,
  streamBufferBytes: 1024 * 1024,
} as const;

/** Shared accounting of partial-frame bytes across connections. */
export interface FrameBudget {
  held: number;
  readonly limit: number;
}
