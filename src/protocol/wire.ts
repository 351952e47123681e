/**
 * JSON-RPC 2.0 envelopes as banger frames them: one JSON object per line
 * over a Unix socket.
 *
 * Extensions to plain JSON-RPC, all carried as notifications:
 * - `$/progress` (server → client): a step of a long operation, tied to the
 *   request id.
 * - `$/cancel` (client → server): aborts the handler of the request id.
 * - `$/stream` (both ways): a chunk of one of a request's byte channels
 *   (stdin, stdout, stderr, or a raw TCP proxy), base64 in `data`, or its end.
 * Their params schemas are in notifications.ts. This file holds no schema,
 * so the CLI bundle, which needs only these constants and types, leaves zod out.
 */
import type { WireErrorData } from "./errors.ts";

/** A VM name is a DNS label: lowercase letters, digits and hyphens, 1 to 63, no edge hyphen. */
export const VM_NAME_PATTERN = /^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$/;

/** What `vm workspace export` can write. */
export const EXPORT_FORMATS = ["patch", "bundle", "branch"] as const;

/** Bumped on any incompatible change to the wire or the method table. */
export const PROTOCOL_VERSION = 1;

/** A line longer than this closes the connection. */
export const MAX_FRAME_BYTES = 4 * 1024 * 1024;

/** Bytes carried in one `$/stream` chunk before base64. */
const STREAM_CHUNK_BYTES = 64 * 1024;

export const JSONRPC_PARSE_ERROR = -32700;
export const JSONRPC_INVALID_REQUEST = -32600;
export const JSONRPC_METHOD_NOT_FOUND = -32601;
export const JSONRPC_INVALID_PARAMS = -32602;
export const JSONRPC_SERVER_ERROR = -32000;

export type RequestId = number | string;

export interface RpcRequest {
  jsonrpc: "2.0";
  id: RequestId;
  method: string;
  params?: unknown;
}

export interface RpcNotification {
  jsonrpc: "2.0";
  method: string;
  params?: unknown;
}

export interface RpcSuccess {
  jsonrpc: "2.0";
  id: RequestId;
  result: unknown;
}

export interface RpcFailure {
  jsonrpc: "2.0";
  id: RequestId | null;
  error: { code: number; message: string; data?: WireErrorData };
}

export type RpcMessage = RpcRequest | RpcNotification | RpcSuccess | RpcFailure;

/** This build's version; a unit test keeps it equal to package.json's. */
export const BUILD_VERSION = "0.1.0";

/** A request's byte channels (`$/stream`'s `ch`). */
export const STREAM_CHANNELS = ["stdin", "stdout", "stderr", "tcp"] as const;

/** The `$/stream` notifications that carry `data` on `ch`, one per STREAM_CHUNK_BYTES. */
export function* streamNotifications(
  id: RequestId,
  ch: (typeof STREAM_CHANNELS)[number],
  data: Buffer,
): Generator<{
  jsonrpc: "2.0";
  method: "$/stream";
  params: { id: RequestId; ch: (typeof STREAM_CHANNELS)[number]; data: string };
}> {
  for (let offset = 0; offset < data.length; offset += STREAM_CHUNK_BYTES) {
    const piece = data.subarray(offset, offset + STREAM_CHUNK_BYTES);
    yield { jsonrpc: "2.0", method: "$/stream", params: { id, ch, data: piece.toString("base64") } };
  }
}
