/**
 * The guest channel's wire format, pure side (the agent's half is
 * guest/agent/protocol.h; ARCHITECTURE.md "Guest channel" is the spec):
 * frame encoding, an incremental decoder that refuses bad headers, the exec
 * request records, and the signal table the protocol uses.
 *
 * Frame: 12-byte big-endian header `u16 magic | u8 type | u8 stream |
 * u32 channel | u32 length`, then `length` (≤ 64 KiB) payload bytes.
 */
import { BangerError, ErrorCode } from "../../protocol/index.ts";
import { firecrackerFiles } from "../firecracker/index.ts";
import { qemuAgentSocket } from "../vmm/qemu-plan.ts";

/** The protocol this host speaks; it also serves agents of MIN_AGENT_PROTOCOL and later. */
export const AGENT_PROTOCOL = 3;
/** Version 1 lacks the tree requests (STAT..SETATTR), versions 1 and 2 the LANE request; everything else is the same. */
export const MIN_AGENT_PROTOCOL = 1;
const FRAME_MAGIC = 0x6267;
const HEADER_BYTES = 12;
export const MAX_PAYLOAD = 65536;
/** Bytes a sender may have in flight per channel stream before the peer grants more. */
export const STREAM_WINDOW = 262144;
/** The agent's vsock port under Firecracker. */
const AGENT_VSOCK_PORT = 7100;

/** Where a VM's agent is reached: a plain Unix socket, or Firecracker's hybrid vsock socket and a port. */
export type AgentEndpoint =
  | { kind: "unix"; path: string }
  | { kind: "hybrid-vsock"; path: string; port: number };

/** The endpoint for a VM: QEMU's virtio-serial chardev socket or Firecracker's vsock, both in the VM's directory. */
export function agentEndpoint(vmm: "qemu" | "firecracker", vmDir: string): AgentEndpoint {
  return vmm === "firecracker"
    ? { kind: "hybrid-vsock", path: firecrackerFiles(vmDir).vsock, port: AGENT_VSOCK_PORT }
    : { kind: "unix", path: qemuAgentSocket(vmDir) };
}

export const FrameType = {
  HELLO: 1,
  EXEC: 2,
  DATA: 3,
  EOF: 4,
  CREDIT: 5,
  SIGNAL: 6,
  RESIZE: 7,
  EXIT: 8,
  ERROR: 9,
  CLOSE: 10,
  READ: 11,
  WRITE: 12,
  CLOCK: 13,
  STAT: 14,
  LIST: 15,
  MKDIR: 16,
  LINK: 17,
  SETATTR: 18,
  LANE: 19,
} as const;
const MAX_FRAME_TYPE = FrameType.LANE;
/** The protocol that brought the LANE request. */
export const LANE_PROTOCOL = 3;
/** A LANE's token length (guest/agent/protocol.h BG_LANE_TOKEN). */
export const LANE_TOKEN_BYTES = 16;
export type FrameType = (typeof FrameType)[keyof typeof FrameType];

export {
  decodeEntries,
  encodeAttrsRequest,
  encodeLink,
  encodeList,
  encodeStat,
  type GuestAttrs,
  type GuestEntry,
  type GuestEntryKind,
} from "./files.ts";

export const Stream = { stdin: 0, stdout: 1, stderr: 2 } as const;
export type Stream = (typeof Stream)[keyof typeof Stream];

export interface Frame {
  type: FrameType;
  stream: Stream;
  channel: number;
  payload: Buffer;
}

export function encodeFrame(frame: {
  type: FrameType;
  stream?: Stream | undefined;
  channel: number;
  payload?: Buffer | undefined;
}): Buffer {
  const payload = frame.payload ?? Buffer.alloc(0);
  if (payload.length > MAX_PAYLOAD)
    throw new Error(`frame payload of ${payload.length} bytes exceeds ${MAX_PAYLOAD}`);
  const header = Buffer.alloc(HEADER_BYTES);
  header.writeUInt16BE(FRAME_MAGIC, 0);
  header.writeUInt8(frame.type, 2);
  header.writeUInt8(frame.stream ?? 0, 3);
  header.writeUInt32BE(frame.channel >>> 0, 4);
  header.writeUInt32BE(payload.length, 8);
  return Buffer.concat([header, payload]);
}

export function u32(value: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt32BE(value >>> 0, 0);
  return b;
}

/**
 * Incremental decoder: `push` bytes, get whole frames. A bad magic, unknown
 * type, bad stream or oversize length throws a GUEST_UNREACHABLE error; the
 * caller then drops the connection (nothing after a bad header can be trusted).
 */
export class FrameDecoder {
  #buffer: Buffer = Buffer.alloc(0);

  push(chunk: Buffer): Frame[] {
    this.#buffer = this.#buffer.length === 0 ? chunk : Buffer.concat([this.#buffer, chunk]);
    const frames: Frame[] = [];
    let at = 0;
    while (this.#buffer.length - at >= HEADER_BYTES) {
      const magic = this.#buffer.readUInt16BE(at);
      const type = this.#buffer.readUInt8(at + 2);
      const stream = this.#buffer.readUInt8(at + 3);
      const length = this.#buffer.readUInt32BE(at + 8);
      if (magic !== FRAME_MAGIC || type < 1 || type > MAX_FRAME_TYPE || stream > 2 || length > MAX_PAYLOAD) {
        throw new BangerError(ErrorCode.GUEST_UNREACHABLE, "the guest agent sent a malformed frame", {
          hint: "the guest channel was closed; `banger vm restart NAME` restarts the agent",
        });
      }
      if (this.#buffer.length - at < HEADER_BYTES + length) break;
      frames.push({
        type: type as FrameType,
        stream: stream as Stream,
        channel: this.#buffer.readUInt32BE(at + 4),
        payload: Buffer.from(this.#buffer.subarray(at + HEADER_BYTES, at + HEADER_BYTES + length)),
      });
      at += HEADER_BYTES + length;
    }
    this.#buffer = this.#buffer.subarray(at);
    return frames;
  }
}

export interface ExecRequest {
  argv: readonly string[];
  env?: readonly string[] | undefined;
  cwd?: string | undefined;
  user?: string | undefined;
  tty?: { cols: number; rows: number } | undefined;
  stdin?: boolean | undefined;
  /** Start and forget: stdio on /dev/null, the process outlives the session. */
  detach?: boolean | undefined;
}

/** The EXEC payload: NUL-terminated `tag=value` records. Values holding a NUL are refused. */
export function encodeExecRequest(request: ExecRequest): Buffer {
  if (request.argv.length === 0) throw invalid("argv", "is empty");
  const records: string[] = [];
  for (const arg of request.argv) records.push(`a=${noNul("argv", arg)}`);
  for (const kv of request.env ?? []) {
    if (!/^[^=]+=/.test(kv)) throw invalid("env", `"${kv}" is not KEY=VALUE`);
    records.push(`e=${noNul("env", kv)}`);
  }
  if (request.cwd !== undefined) records.push(`w=${noNul("cwd", request.cwd)}`);
  if (request.user !== undefined) records.push(`u=${noNul("user", request.user)}`);
  if (request.tty) records.push(`t=${request.tty.cols},${request.tty.rows}`);
  if (request.stdin) records.push("i=1");
  if (request.detach) records.push("d=1");
  const payload = Buffer.from(records.map((r) => `${r}\0`).join(""), "utf8");
  if (payload.length > MAX_PAYLOAD)
    throw invalid("argv", `and env take ${payload.length} bytes, over ${MAX_PAYLOAD}`);
  return payload;
}

function noNul(field: string, value: string): string {
  if (value.includes("\0")) throw invalid(field, "contains a NUL byte");
  return value;
}

function invalid(field: string, what: string): BangerError {
  return new BangerError(ErrorCode.INVALID_PARAMS, `${field} ${what}`, {
    hint: "pass the command as separate words after `--`",
  });
}

/** Linux signal numbers (x86 and arm64 agree on these) for the names the exec contract allows and more. */
export const SIGNAL_NUMBERS: Readonly<Record<string, number>> = {
  SIGHUP: 1,
  SIGINT: 2,
  SIGQUIT: 3,
  SIGILL: 4,
  SIGTRAP: 5,
  SIGABRT: 6,
  SIGBUS: 7,
  SIGFPE: 8,
  SIGKILL: 9,
  SIGUSR1: 10,
  SIGSEGV: 11,
  SIGUSR2: 12,
  SIGPIPE: 13,
  SIGALRM: 14,
  SIGTERM: 15,
  SIGCHLD: 17,
  SIGCONT: 18,
  SIGSTOP: 19,
  SIGTSTP: 20,
  SIGTTIN: 21,
  SIGTTOU: 22,
  SIGURG: 23,
  SIGXCPU: 24,
  SIGXFSZ: 25,
  SIGVTALRM: 26,
  SIGPROF: 27,
  SIGWINCH: 28,
  SIGIO: 29,
  SIGPWR: 30,
  SIGSYS: 31,
};

export function signalName(number: number): string {
  for (const [name, n] of Object.entries(SIGNAL_NUMBERS)) if (n === number) return name;
  return `SIG${number}`;
}

/**
 * The LANE payload: a file write of exactly `size` bytes that arrive over
 * a TCP connection opening with `token` (guest/agent/lane.c).
 */
export function encodeLane(options: { path: string; mode: number; size: number; token: Uint8Array }): Buffer {
  const { path, mode, size, token } = options;
  if (token.length !== LANE_TOKEN_BYTES) throw new RangeError(`a lane token is ${LANE_TOKEN_BYTES} bytes`);
  if (!Number.isSafeInteger(size) || size < 0) throw new RangeError(`bad lane size ${size}`);
  const head = Buffer.alloc(12);
  head.writeUInt32BE(mode & 0o7777, 0);
  head.writeBigUInt64BE(BigInt(size), 4);
  return Buffer.concat([head, token, Buffer.from(path, "utf8")]);
}

/** The CLOCK payload for a time in milliseconds since the epoch (ms precision is all the host has here). */
export function encodeClock(epochMs: number): Buffer {
  const b = Buffer.alloc(12);
  const seconds = Math.floor(epochMs / 1000);
  b.writeBigInt64BE(BigInt(seconds), 0);
  b.writeUInt32BE(Math.round((epochMs - seconds * 1000) * 1e6), 8);
  return b;
}
