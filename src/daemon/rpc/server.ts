/**
 * The JSON-RPC server: one JSON object per line over a Unix socket.
 *
 * Contracts:
 * - Every connection starts with `daemon.hello`; any other request first is
 *   answered HANDSHAKE_REQUIRED.
 * - A malformed line gets a PARSE_ERROR reply, an unknown method
 *   METHOD_NOT_FOUND, bad params INVALID_PARAMS with per-field messages, an
 *   id that is neither a string nor a number INVALID_REQUEST (with id null);
 *   an oversize frame closes that connection. None of them affects other
 *   clients.
 * - Limits (ARCHITECTURE.md "Limits"): at most `maxConnections()` open
 *   connections (more are told RESOURCE_EXHAUSTED and closed); a connection
 *   with no request in flight and no traffic for `idleTimeoutMs` is closed;
 *   partial frames held across all connections stay under
 *   `maxBufferedFrameBytes`; a client that stops reading is paused (no new
 *   requests are read) once `maxPendingWriteBytes` wait for it, and closed
 *   at four times that (at least two frames); bytes a client streams in wait in a buffer of
 *   `streamBufferBytes` per channel, read ahead by as much again (so a
 *   `$/cancel` queued behind them is still read), then the socket is paused
 *   until the reader drains it: a fast writer runs at the pace of the
 *   slowest reader.
 * - Log lines carry the method and sizes, never a request's input.
 * - `$/cancel` aborts the handler's AbortSignal; a closed connection aborts
 *   every handler still running for it.
 * - `$/signal` and `$/resize` reach the handler's `control` listeners; ones
 *   for a request without listeners are dropped.
 * - Handlers return data; errors that are not BangerErrors reach the client
 *   as INTERNAL with a correlation id that is also logged.
 */
import { chmod, chown, rm } from "node:fs/promises";
import { createServer, type Server, type Socket } from "node:net";
import { ErrorCode, JSONRPC_SERVER_ERROR } from "../../protocol/index.ts";
import { Connection } from "./connection.ts";
import { type FrameBudget, RPC_LIMITS, type RpcServer, type RpcServerOptions } from "./types.ts";

export type {
  Handler,
  HandlerContext,
  HandlerTable,
  RequestStreams,
  RpcServer,
  RpcServerOptions,
} from "./types.ts";

export function createRpcServer(options: RpcServerOptions): RpcServer {
  const connections = new Set<Connection>();
  let server: Server | undefined;
  let nextConnection = 0;
  const budget: FrameBudget = {
    held: 0,
    limit: options.maxBufferedFrameBytes ?? RPC_LIMITS.maxBufferedFrameBytes,
  };
  const maxConnections = options.maxConnections ?? (() => RPC_LIMITS.maxConnections);
  let refusedSinceLog = 0;

  const refuse = (socket: Socket) => {
    socket.on("error", () => {});
    const limit = maxConnections();
    if (refusedSinceLog++ === 0)
      options.logger.warn("connection limit reached; refusing new connections", { limit });
    socket.end(
      `${JSON.stringify({
        jsonrpc: "2.0",
        id: null,
        error: {
          code: JSONRPC_SERVER_ERROR,
          message: `bangerd has ${connections.size} open connections, its limit is ${limit}`,
          data: {
            code: ErrorCode.RESOURCE_EXHAUSTED,
            hint: "close idle banger clients (each open `vm logs -f`, `vm ssh` or exec holds one) and retry",
          },
        },
      })}\n`,
    );
    socket.destroySoon();
  };

  return {
    async listen() {
      await rm(options.socketPath, { force: true });
      server = createServer((socket) => {
        if (connections.size >= maxConnections()) {
          refuse(socket);
          return;
        }
        if (refusedSinceLog > 0) {
          options.logger.info("accepting connections again", { refused: refusedSinceLog });
          refusedSinceLog = 0;
        }
        const connection = new Connection(socket, options, ++nextConnection, budget);
        connections.add(connection);
        socket.on("close", () => {
          connection.abortAll();
          connection.releaseFrame();
          connections.delete(connection);
        });
      });
      // Accept failures (EMFILE) are handled by libuv; anything else is logged, never fatal.
      server.on("error", (error) => options.logger.warn("socket server error", { err: error.message }));
      await new Promise<void>((resolve, reject) => {
        server!.once("error", reject);
        // A restrictive umask closes the window between bind and chmod.
        const previousUmask = process.umask(0o177);
        server!.listen(options.socketPath, () => {
          process.umask(previousUmask);
          resolve();
        });
      });
      if (options.socketGid !== undefined)
        await chown(options.socketPath, process.getuid?.() ?? 0, options.socketGid);
      await chmod(options.socketPath, options.socketMode);
    },
    async close() {
      const closing = server
        ? new Promise<void>((resolve) => server!.close(() => resolve()))
        : Promise.resolve();
      for (const connection of connections) connection.destroy();
      await closing;
      await rm(options.socketPath, { force: true });
    },
    get connectionCount() {
      return connections.size;
    },
  };
}
