import { request as httpRequest } from "node:http";
import { cancelled, sleep, throwIfAborted } from "../../core/async/index.ts";
import type { FirecrackerMethod } from "../../core/firecracker/index.ts";
import { BangerError, ErrorCode } from "../../protocol/index.ts";

export interface FirecrackerReply {
  status: number;
  /** Parsed JSON body, or undefined for 204. */
  body: unknown;
}

/** Fault messages that mean "wrong VM state" rather than "bad configuration". */
const STATE_FAULTS = [
  "not supported before starting the microVM",
  "not supported after starting the microVM",
  "Loading a microVM snapshot not allowed",
  "The microVM must be paused",
];

/** Faults about the request itself (routing, body, ids): banger sent something this Firecracker refuses. */
const REQUEST_FAULTS = [
  "Invalid request method and/or path",
  "Empty PUT request",
  "Empty PATCH request",
  "Empty Delete request",
  "GET request cannot have a body",
  "An error occurred when deserializing the json body",
  "The ID cannot be empty",
  "API Resource IDs can only contain",
  "The id from the path does not match",
];

/**
 * One Firecracker API call over HTTP/1.1 on the Unix socket. Opens one
 * connection per call (micro_http caps concurrent connections). 200/204
 * resolve; a `fault_message` reply throws an error naming the call:
 * BAD_STATE for state refusals, INTERNAL for a request Firecracker could
 * not parse or route (a banger bug), BOOT_FAILED for the rest.
 */
export function firecrackerRequest(
  socketPath: string,
  method: FirecrackerMethod,
  path: string,
  body?: unknown,
  options: { timeoutMs?: number; signal?: AbortSignal } = {},
): Promise<FirecrackerReply> {
  const call = `firecracker ${method} ${path}`;
  const payload = body === undefined ? undefined : Buffer.from(JSON.stringify(body));
  return new Promise<FirecrackerReply>((resolve, reject) => {
    const req = httpRequest(
      {
        socketPath,
        method,
        path,
        agent: false,
        headers: {
          Accept: "application/json",
          ...(payload ? { "Content-Type": "application/json", "Content-Length": payload.length } : {}),
        },
        timeout: options.timeoutMs ?? 30_000,
        ...(options.signal ? { signal: options.signal } : {}),
      },
      (res) => {
        const chunks: Buffer[] = [];
        res.on("data", (chunk: Buffer) => chunks.push(chunk));
        res.on("error", (error) => reject(transportError(call, error)));
        res.on("end", () => {
          const status = res.statusCode ?? 0;
          const text = Buffer.concat(chunks).toString("utf8");
          let parsed: unknown;
          try {
            parsed = text.length > 0 ? JSON.parse(text) : undefined;
          } catch {
            parsed = text;
          }
          if (status === 200 || status === 204) {
            resolve({ status, body: parsed });
            return;
          }
          reject(faultError(call, status, parsed));
        });
      },
    );
    req.on("timeout", () => req.destroy(new Error(`no reply within ${options.timeoutMs ?? 30_000} ms`)));
    req.on("error", (error) => reject(transportError(call, error)));
    req.end(payload);
  });
}

function faultError(call: string, status: number, body: unknown): BangerError {
  const fault =
    typeof body === "object" &&
    body !== null &&
    typeof (body as { fault_message?: unknown }).fault_message === "string"
      ? (body as { fault_message: string }).fault_message
      : `HTTP ${status} ${typeof body === "string" ? body : JSON.stringify(body)}`;
  if (STATE_FAULTS.some((needle) => fault.includes(needle))) {
    return new BangerError(ErrorCode.BAD_STATE, `${call}: ${fault}`, {
      data: { status, fault },
      hint: "the VM is not in a state that allows this; `banger vm show NAME` shows its state",
    });
  }
  if (REQUEST_FAULTS.some((needle) => fault.includes(needle))) {
    return new BangerError(ErrorCode.INTERNAL, `${call}: ${fault}`, {
      data: { status, fault },
      hint: "banger sent a request this Firecracker refuses: a banger bug; please report it with `firecracker --version`",
    });
  }
  return new BangerError(ErrorCode.BOOT_FAILED, `${call}: ${fault}`, {
    data: { status, fault },
    hint: "the Firecracker log next to the VM's API socket has details",
  });
}

function transportError(call: string, error: Error): BangerError {
  if (error.name === "AbortError") {
    return cancelled(undefined, call, { cause: error });
  }
  return new BangerError(ErrorCode.BOOT_FAILED, `${call}: ${error.message}`, { cause: error });
}

/**
 * Polls `GET /` until the API answers, the deadline (epoch ms) passes, or the
 * signal aborts. `isAlive` lets the caller stop early when the process died.
 */
export async function waitForApi(
  socketPath: string,
  deadline: number,
  options: { signal?: AbortSignal; isAlive?: () => boolean | Promise<boolean> } = {},
): Promise<void> {
  let lastError: unknown;
  for (;;) {
    throwIfAborted(options.signal, "waiting for the Firecracker API");
    try {
      await firecrackerRequest(socketPath, "GET", "/", undefined, { timeoutMs: 2000 });
      return;
    } catch (error) {
      lastError = error;
    }
    if (options.isAlive && !(await options.isAlive())) {
      throw new BangerError(
        ErrorCode.BOOT_FAILED,
        `firecracker exited before its API socket ${socketPath} answered`,
        {
          cause: lastError,
        },
      );
    }
    if (Date.now() >= deadline) {
      throw new BangerError(
        ErrorCode.BOOT_FAILED,
        `the Firecracker API at ${socketPath} did not answer in time`,
        {
          cause: lastError,
        },
      );
    }
    await sleep(25, options.signal);
  }
}

export interface FirecrackerClient {
  readonly socketPath: string;
  request(method: FirecrackerMethod, path: string, body?: unknown): Promise<FirecrackerReply>;
}

export function createFirecrackerClient(
  socketPath: string,
  options: { timeoutMs?: number } = {},
): FirecrackerClient {
  return {
    socketPath,
    request: (method, path, body) => firecrackerRequest(socketPath, method, path, body, options),
  };
}
