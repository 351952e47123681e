/**
 * One host session with a guest agent over a connected byte stream: the
 * HELLO handshake, then many channels multiplexed at once (exec, file read,
 * file write, clock). Each output stream is credit-limited both ways
 * (STREAM_WINDOW bytes in flight): the agent stops reading a process's pipe
 * when the host has not consumed its output, and the host sends stdin only
 * within the credit the agent granted. When the stream closes every open
 * channel fails with GUEST_UNREACHABLE.
 *
 * One concern, kept whole: the frame dispatch, the channel table and the
 * credit accounting are one state machine per session.
 */
import type { Duplex, Readable } from "node:stream";
import {
  AGENT_PROTOCOL,
  decodeEntries,
  type ExecRequest,
  encodeAttrsRequest,
  encodeClock,
  encodeExecRequest,
  encodeFrame,
  encodeLane,
  encodeLink,
  encodeList,
  encodeStat,
  type Frame,
  FrameDecoder,
  FrameType,
  type GuestAttrs,
  type GuestEntry,
  MAX_PAYLOAD,
  MIN_AGENT_PROTOCOL,
  SIGNAL_NUMBERS,
  STREAM_WINDOW,
  Stream,
  signalName,
  u32,
} from "../../core/agent/index.ts";
import { drained } from "../../core/async/index.ts";
import { BangerError, ErrorCode } from "../../protocol/index.ts";

export interface ExecResult {
  exitCode: number | null;
  signal: string | null;
}

export interface AgentExecOptions extends Omit<ExecRequest, "stdin"> {
  /** Bytes for the process's stdin; without it stdin is /dev/null (a PTY always has its own). */
  stdin?: Readable | undefined;
  /** Called in order; the next chunk waits for the returned promise (backpressure to the guest). */
  onStdout?: ((chunk: Buffer) => void | Promise<void>) | undefined;
  onStderr?: ((chunk: Buffer) => void | Promise<void>) | undefined;
}

export interface AgentProcess {
  /** Settles when the process has exited and its output has been delivered. */
  readonly done: Promise<ExecResult>;
  /** Sends a signal (by name, e.g. "SIGINT") to the process group. */
  kill(signal: string): void;
  resize(cols: number, rows: number): void;
  /** Kills the process group (SIGKILL) and ends the channel; `done` rejects with CANCELLED. */
  close(): void;
}

/** A LANE in progress (AgentSession.openLane). */
export interface GuestLane {
  /** The agent's listening port; rejects as `done` does when the agent refused the request. */
  readonly port: Promise<number>;
  readonly done: Promise<void>;
  close(): void;
}

type Handler = (frame: Frame) => void;

/** A channel's side of the connection: frames in, failure when the session ends. */
interface ChannelEntry {
  onFrame: Handler;
  fail(error: Error): void;
}

/** A guest's files through its agent: whole-file streams and the tree requests (protocol 2). */
export interface AgentFiles {
  /** The entry at `path` (lstat; `follow` stats a symlink's target); undefined when nothing is there. */
  stat(path: string, options?: { follow?: boolean }): Promise<GuestEntry | undefined>;
  /** The children of a directory, lstat'ed, in directory order. */
  list(path: string): Promise<GuestEntry[]>;
  /** Streams a file to `onData` (in order, with backpressure). */
  readFile(path: string, onData: (chunk: Buffer) => void | Promise<void>): Promise<void>;
  /**
   * Writes `source` to a file (created or truncated with `mode`, less the
   * agent's umask). `size`, when given, is exactly what `source` yields; a
   * large one may travel over a lane (lane.ts) rather than frames.
   */
  writeFile(path: string, mode: number, source: AsyncIterable<Buffer | string>, size?: number): Promise<void>;
  /** Makes a directory (an existing one is kept), then sets `attrs` on it. */
  mkdir(path: string, attrs: GuestAttrs): Promise<void>;
  /** Replaces what is at `path` (not a directory) with a symlink to `target`, or with `hard` a hard link. */
  link(path: string, target: string, options: { hard: boolean; attrs: GuestAttrs }): Promise<void>;
  /** Sets owner, mode and mtime, never through a symlink. */
  setAttrs(path: string, attrs: GuestAttrs): Promise<void>;
}

export class AgentSession implements AgentFiles {
  readonly version: string;
  /** The protocol the agent speaks (MIN_AGENT_PROTOCOL..AGENT_PROTOCOL). */
  readonly protocol: number;
  readonly #socket: Duplex;
  readonly #channels = new Map<number, ChannelEntry>();
  #nextChannel = 1;
  #closedError: Error | undefined;
  readonly #closedListeners = new Set<(error: Error) => void>();

  constructor(socket: Duplex, hello: { version: string; protocol: number }, decoder: FrameDecoder) {
    this.#socket = socket;
    this.version = hello.version;
    this.protocol = hello.protocol;
    socket.on("data", (chunk: Buffer) => {
      let frames: Frame[];
      try {
        frames = decoder.push(chunk);
      } catch (error) {
        this.#end(error as Error);
        return;
      }
      for (const frame of frames) this.#channels.get(frame.channel)?.onFrame(frame);
    });
    socket.on("close", () => this.#end(channelClosed()));
    socket.on("error", () => this.#end(channelClosed()));
    socket.resume();
  }

  get isClosed(): boolean {
    return this.#closedError !== undefined;
  }

  /** Called once when the session ends (the stream closed or misbehaved). */
  onClose(listener: (error: Error) => void): () => void {
    if (this.#closedError) {
      listener(this.#closedError);
      return () => undefined;
    }
    this.#closedListeners.add(listener);
    return () => this.#closedListeners.delete(listener);
  }

  /** Ends the session; open channels fail with `reason` (default: GUEST_UNREACHABLE). */
  close(reason: Error = channelClosed()): void {
    this.#end(reason);
  }

  exec(options: AgentExecOptions): AgentProcess {
    const request = encodeExecRequest({ ...options, stdin: options.stdin !== undefined });
    const channel = new Channel(this, this.#open(), [options.onStdout, options.onStderr]);
    this.#send(FrameType.EXEC, channel.id, request);
    if (options.stdin && !options.tty) void channel.pump(options.stdin);
    else if (options.stdin && options.tty) void channel.pump(options.stdin, { sendEof: false });
    const done = channel.done.then(exitResult);
    done.catch(() => undefined);
    return {
      done,
      kill: (name) => {
        const number = SIGNAL_NUMBERS[name];
        if (number === undefined) throw new BangerError(ErrorCode.INVALID_PARAMS, `unknown signal ${name}`);
        if (!channel.finished) this.#send(FrameType.SIGNAL, channel.id, u32(number));
      },
      resize: (cols, rows) => {
        if (!channel.finished)
          this.#send(FrameType.RESIZE, channel.id, u32(((cols & 0xffff) << 16) | (rows & 0xffff)));
      },
      close: () => {
        if (channel.finished) return;
        this.#send(FrameType.CLOSE, channel.id);
        channel.fail(new BangerError(ErrorCode.CANCELLED, "the command was killed"));
      },
    };
  }

  /** Streams a guest file to `onData` (in order, with backpressure). */
  async readFile(path: string, onData: (chunk: Buffer) => void | Promise<void>): Promise<void> {
    const channel = new Channel(this, this.#open(), [onData, undefined]);
    this.#send(FrameType.READ, channel.id, Buffer.from(path, "utf8"));
    await channel.done;
  }

  /** Writes `source` to a guest file (created or truncated with `mode`). */
  async writeFile(path: string, mode: number, source: AsyncIterable<Buffer | string>): Promise<void> {
    const channel = new Channel(this, this.#open(), [undefined, undefined]);
    this.#send(FrameType.WRITE, channel.id, Buffer.concat([u32(mode), Buffer.from(path, "utf8")]));
    void channel.pump(source);
    await channel.done;
  }

  /**
   * Starts a LANE (protocol 3): the agent opens `path` and a TCP listener
   * for a connection that opens with `token` and brings `size` bytes.
   * `port` is the listener's; `done` settles with the agent's answer;
   * `close` gives the lane up (the agent drops listener and file).
   */
  openLane(options: { path: string; mode: number; size: number; token: Uint8Array }): GuestLane {
    let answered: ((port: number) => void) | undefined;
    const port = new Promise<number>((resolve) => (answered = resolve));
    let head = Buffer.alloc(0);
    const channel = new Channel(this, this.#open(), [
      (chunk) => {
        head = Buffer.concat([head, chunk]);
        if (head.length >= 4) answered?.(head.readUInt32BE(0));
      },
      undefined,
    ]);
    this.#send(FrameType.LANE, channel.id, encodeLane(options));
    const done = channel.done.then(() => undefined);
    return {
      port: Promise.race([port, done.then(() => 0)]),
      done,
      close: () => {
        if (channel.finished) return;
        this.#send(FrameType.CLOSE, channel.id);
        channel.fail(new BangerError(ErrorCode.CANCELLED, "the lane was given up"));
      },
    };
  }

  async stat(path: string, options: { follow?: boolean } = {}): Promise<GuestEntry | undefined> {
    try {
      const [entry] = await this.#tree(FrameType.STAT, encodeStat(path, { follow: options.follow === true }));
      return entry;
    } catch (error) {
      if (error instanceof BangerError && error.data?.errno === ERRNO.ENOENT) return undefined;
      throw error;
    }
  }

  list(path: string): Promise<GuestEntry[]> {
    return this.#tree(FrameType.LIST, encodeList(path));
  }

  async mkdir(path: string, attrs: GuestAttrs): Promise<void> {
    await this.#tree(FrameType.MKDIR, encodeAttrsRequest(path, attrs));
  }

  async link(path: string, target: string, options: { hard: boolean; attrs: GuestAttrs }): Promise<void> {
    await this.#tree(FrameType.LINK, encodeLink(path, target, options));
  }

  async setAttrs(path: string, attrs: GuestAttrs): Promise<void> {
    await this.#tree(FrameType.SETATTR, encodeAttrsRequest(path, attrs));
  }

  /** One tree request: its entry records (if any) once the agent answers EXIT. */
  async #tree(type: FrameType, payload: Buffer): Promise<GuestEntry[]> {
    if (this.protocol < 2) {
      throw new BangerError(
        ErrorCode.VERSION_MISMATCH,
        `the guest agent speaks protocol ${this.protocol}, which has no file tree requests`,
        { hint: "restart the VM so banger injects its current agent" },
      );
    }
    const chunks: Buffer[] = [];
    const channel = new Channel(this, this.#open(), [(chunk) => void chunks.push(chunk), undefined]);
    this.#send(type, channel.id, payload);
    await channel.done;
    return decodeEntries(Buffer.concat(chunks));
  }

  /** Sets the guest's CLOCK_REALTIME. */
  async setClock(epochMs: number): Promise<void> {
    const channel = new Channel(this, this.#open(), [undefined, undefined]);
    this.#send(FrameType.CLOCK, channel.id, encodeClock(epochMs));
    await channel.done;
  }

  /** @internal used by Channel */
  register(id: number, entry: ChannelEntry | undefined): void {
    if (entry) this.#channels.set(id, entry);
    else this.#channels.delete(id);
  }

  /** @internal used by Channel: resolves once the socket can take more. */
  send(type: FrameType, id: number, payload?: Buffer, stream?: Stream): Promise<void> {
    return this.#send(type, id, payload, stream);
  }

  #send(type: FrameType, id: number, payload?: Buffer, stream?: Stream): Promise<void> {
    if (this.#closedError) return Promise.resolve();
    const fits = this.#socket.write(encodeFrame({ type, channel: id, payload, stream }));
    return fits ? Promise.resolve() : drained(this.#socket);
  }

  #open(): number {
    if (this.#closedError) throw this.#closedError;
    const id = this.#nextChannel;
    this.#nextChannel = this.#nextChannel >= 0xfffffffe ? 1 : this.#nextChannel + 1;
    return id;
  }

  #end(error: Error): void {
    if (this.#closedError) return;
    this.#closedError = error;
    this.#socket.destroy();
    for (const entry of [...this.#channels.values()]) entry.fail(error);
    this.#channels.clear();
    for (const listener of this.#closedListeners) listener(error);
    this.#closedListeners.clear();
  }
}

/** One multiplexed channel: output delivery with credits, input pumping, the end frame. */
class Channel {
  readonly id: number;
  readonly done: Promise<Frame>;
  finished = false;
  readonly #session: AgentSession;
  readonly #outputs: [
    ((c: Buffer) => void | Promise<void>) | undefined,
    ((c: Buffer) => void | Promise<void>) | undefined,
  ];
  #delivery: Promise<void> = Promise.resolve();
  #sendCredit = STREAM_WINDOW;
  #creditWaiter: (() => void) | undefined;
  #resolve!: (frame: Frame) => void;
  #reject!: (error: Error) => void;

  constructor(
    session: AgentSession,
    id: number,
    outputs: [
      ((c: Buffer) => void | Promise<void>) | undefined,
      ((c: Buffer) => void | Promise<void>) | undefined,
    ],
  ) {
    this.#session = session;
    this.id = id;
    this.#outputs = outputs;
    this.done = new Promise((resolve, reject) => {
      this.#resolve = resolve;
      this.#reject = reject;
    });
    // A caller that never awaits `done` must not crash the daemon with an unhandled rejection.
    this.done.catch(() => undefined);
    session.register(id, { onFrame: (frame) => this.#onFrame(frame), fail: (error) => this.fail(error) });
  }

  fail(error: Error): void {
    if (this.finished) return;
    this.finished = true;
    this.#session.register(this.id, undefined);
    this.#creditWaiter?.();
    this.#reject(error);
  }

  /** Sends `source` as stream 0 within the agent's credit, then EOF. Stops when the channel ends. */
  async pump(
    source: AsyncIterable<Buffer | string>,
    options: { sendEof: boolean } = { sendEof: true },
  ): Promise<void> {
    try {
      for await (const raw of source) {
        let chunk: Buffer = typeof raw === "string" ? Buffer.from(raw) : (raw as Buffer);
        while (chunk.length > 0) {
          while (this.#sendCredit === 0 && !this.finished)
            await new Promise<void>((r) => (this.#creditWaiter = r));
          if (this.finished) return;
          const size = Math.min(chunk.length, this.#sendCredit, MAX_PAYLOAD);
          this.#sendCredit -= size;
          await this.#session.send(FrameType.DATA, this.id, chunk.subarray(0, size), Stream.stdin);
          chunk = chunk.subarray(size);
        }
      }
    } catch {
      // A failing stdin source ends the input like an EOF would.
    }
    if (!this.finished && options.sendEof)
      await this.#session.send(FrameType.EOF, this.id, undefined, Stream.stdin);
  }

  #onFrame(frame: Frame): void {
    if (this.finished) return;
    switch (frame.type) {
      case FrameType.DATA: {
        if (frame.stream === Stream.stdin) return;
        const output = this.#outputs[frame.stream - 1];
        const stream = frame.stream;
        this.#delivery = this.#delivery
          .then(() => output?.(frame.payload))
          .then(
            () => this.#session.send(FrameType.CREDIT, this.id, u32(frame.payload.length), stream),
            (error: Error) => {
              this.#session.send(FrameType.CLOSE, this.id);
              this.fail(error);
            },
          );
        return;
      }
      case FrameType.CREDIT:
        if (frame.stream === Stream.stdin && frame.payload.length === 4) {
          this.#sendCredit += frame.payload.readUInt32BE(0);
          this.#creditWaiter?.();
          this.#creditWaiter = undefined;
        }
        return;
      case FrameType.EXIT:
      case FrameType.ERROR: {
        this.#session.register(this.id, undefined);
        void this.#delivery.then(() => {
          if (this.finished) return;
          this.finished = true;
          this.#creditWaiter?.();
          if (frame.type === FrameType.EXIT) this.#resolve(frame);
          else this.#reject(agentError(frame.payload));
        });
        return;
      }
      default:
        return;
    }
  }
}

function exitResult(frame: Frame): ExecResult {
  if (frame.payload.length < 8) return { exitCode: null, signal: null };
  const code = frame.payload.readInt32BE(0);
  const signal = frame.payload.readUInt32BE(4);
  return signal !== 0 ? { exitCode: null, signal: signalName(signal) } : { exitCode: code, signal: null };
}

const ERRNO = {
  EPERM: 1,
  ENOENT: 2,
  ESRCH: 3,
  EACCES: 13,
  EEXIST: 17,
  ENOTDIR: 20,
  EISDIR: 21,
  EINVAL: 22,
  EMFILE: 24,
  ENOSPC: 28,
  EROFS: 30,
  EDQUOT: 122,
};

/** An ERROR frame (u32 errno, message) as a BangerError with a code a user can act on. */
function agentError(payload: Buffer): BangerError {
  const errno = payload.length >= 4 ? payload.readUInt32BE(0) : 0;
  const message = `guest: ${payload.subarray(4).toString("utf8")}`;
  const data = { errno };
  switch (errno) {
    case ERRNO.ESRCH:
      // The agent's answer to a user or group its guest does not have (guest/agent/exec.c resolve_user).
      return new BangerError(ErrorCode.INVALID_PARAMS, message, {
        hint: "name a user and group of the guest's /etc/passwd and /etc/group, or give numbers (`-u 1000:1000`); for an image's USER, fix it or pass `-u`",
      });
    case ERRNO.ENOENT:
    case ERRNO.EEXIST:
    case ERRNO.ENOTDIR:
    case ERRNO.EISDIR:
    case ERRNO.EINVAL:
      return new BangerError(ErrorCode.INVALID_PARAMS, message, {
        hint: "check the path or request in the guest",
        data,
      });
    case ERRNO.EPERM:
    case ERRNO.EACCES:
    case ERRNO.EROFS:
      return new BangerError(ErrorCode.PERMISSION_DENIED, message, {
        hint: "the guest refused it; check the file's owner and mode in the guest",
        data,
      });
    case ERRNO.ENOSPC:
    case ERRNO.EDQUOT:
      return new BangerError(ErrorCode.RESOURCE_EXHAUSTED, message, {
        hint: "the guest's disk is full: free space in it, or grow it with `banger vm stop NAME && banger vm set NAME --disk 20g && banger vm start NAME`",
        data,
      });
    case ERRNO.EMFILE:
      return new BangerError(ErrorCode.BAD_STATE, message, {
        hint: "too many commands run in this VM at once; wait for some to finish",
        data,
      });
    default:
      return new BangerError(ErrorCode.INTERNAL, message, { data });
  }
}

function channelClosed(): BangerError {
  return new BangerError(ErrorCode.GUEST_UNREACHABLE, "the guest channel closed", {
    hint: "the VM stopped or its agent died; `banger vm show NAME` shows its state",
  });
}

/** The first resend of an unanswered HELLO; each later one waits twice as long. */
const HELLO_RESEND_MS = 100;

/**
 * Sends HELLO and waits for the agent's HELLO (its readiness event) on a
 * connected stream; rejects when `signal` aborts or the stream ends first.
 * An unanswered HELLO is sent again after 100 ms, then 200, 400...: a
 * guest restored from a snapshot can lose what the host writes just after
 * it connects (seen under QEMU about once in ten restores), and answers
 * the next HELLO at once. A HELLO resets only the agent's session, which
 * holds no channel yet: the host opens none before the first answer, and
 * its requests follow every HELLO it sent, so the agent takes them after.
 */
export async function openAgentSession(socket: Duplex, signal: AbortSignal): Promise<AgentSession> {
  const decoder = new FrameDecoder();
  const hello = await new Promise<Frame>((resolve, reject) => {
    const hello = encodeFrame({ type: FrameType.HELLO, channel: 0, payload: u32(AGENT_PROTOCOL) });
    let resendMs = HELLO_RESEND_MS;
    let resend: NodeJS.Timeout | undefined;
    const sendHello = () => {
      socket.write(hello);
      resend = setTimeout(sendHello, resendMs);
      resendMs *= 2;
    };
    const cleanup = () => {
      clearTimeout(resend);
      socket.pause();
      socket.off("data", onData);
      socket.off("close", onClose);
      socket.off("error", onClose);
      signal.removeEventListener("abort", onAbort);
    };
    const onData = (chunk: Buffer) => {
      let frames: Frame[];
      try {
        frames = decoder.push(chunk);
      } catch (error) {
        cleanup();
        reject(error);
        return;
      }
      const found = frames.find((f) => f.type === FrameType.HELLO);
      if (found) {
        cleanup();
        resolve(found);
      }
    };
    const onClose = () => {
      cleanup();
      reject(channelClosed());
    };
    const onAbort = () => {
      cleanup();
      reject(signal.reason ?? new BangerError(ErrorCode.CANCELLED, "cancelled"));
    };
    if (signal.aborted) return onAbort();
    socket.on("data", onData);
    socket.once("close", onClose);
    socket.once("error", onClose);
    signal.addEventListener("abort", onAbort, { once: true });
    socket.resume();
    sendHello();
  }).catch((error: unknown) => {
    // Late errors of a socket given up on have nobody to tell.
    socket.on("error", () => {});
    socket.destroy();
    throw error;
  });
  const protocol = hello.payload.length >= 4 ? hello.payload.readUInt32BE(0) : 0;
  if (protocol < MIN_AGENT_PROTOCOL || protocol > AGENT_PROTOCOL) {
    socket.destroy();
    throw new BangerError(
      ErrorCode.VERSION_MISMATCH,
      `the guest agent speaks protocol ${protocol}, not ${AGENT_PROTOCOL}`,
      {
        hint: "restart the VM so banger injects its current agent",
      },
    );
  }
  return new AgentSession(socket, { version: hello.payload.subarray(4).toString("utf8"), protocol }, decoder);
}
