/**
 * Fakes for running CLI commands in-process: a daemon client that answers
 * from a table of method handlers and records every call, write and
 * notification, and a CliContext whose terminal, signals and interactive
 * programs the test controls.
 */
import { PassThrough, Writable } from "node:stream";
import type { CliContext, CliSignal, InputStream, OutputStream } from "../../src/cli/context.ts";
import { runCli } from "../../src/cli/program.ts";
import type { CallOptions, DaemonClient, PendingCall } from "../../src/cli/rpc/client.ts";
import { resolveLayout } from "../../src/core/paths/index.ts";
import {
  BangerError,
  ErrorCode,
  type ExecSignal,
  type MethodName,
  type ParamsOf,
  type ResultOf,
  type StreamChannel,
  type VmInfo,
} from "../../src/protocol/index.ts";

/** A VM as the daemon lists it: running QEMU VM "web" unless `overrides` say otherwise. */
export function fakeVmInfo(overrides: Partial<VmInfo> = {}): VmInfo {
  return {
    id: "0123456789abcdef",
    name: "web",
    state: "running",
    image: "debian-bookworm",
    vmm: "qemu",
    cpus: 1,
    memoryMib: 1024,
    diskGib: 4,
    guestIp: "172.30.0.2",
    mac: "02:00:00:00:00:02",
    createdAt: new Date(Date.now() - 1000).toISOString(),
    updatedAt: new Date().toISOString(),
    lastError: null,
    dir: "/var/lib/banger/vms/0123",
    pid: 4242,
    ...overrides,
  };
}

/** What a fake handler sees of its call. */
export interface FakeCall {
  id: number;
  method: MethodName;
  params: unknown;
  options: CallOptions;
  /** Bytes the command sent per channel, and which channels it ended. */
  written: Partial<Record<StreamChannel, Buffer[]>>;
  ended: Set<StreamChannel>;
  cancelled: boolean;
  /** `$/signal` and `$/resize` the command sent, in order. */
  signals: ExecSignal[];
  resizes: { cols: number; rows: number }[];
  /** Resolves once the command cancels the call (a `$/cancel` or its abort signal). */
  whenCancelled: Promise<void>;
}

export type FakeHandler<M extends MethodName> = (
  params: ParamsOf<M>,
  call: FakeCall,
) => ResultOf<M> | Promise<ResultOf<M>>;

export type FakeHandlers = { [M in MethodName]?: FakeHandler<M> };

export class FakeDaemonClient implements DaemonClient {
  readonly calls: FakeCall[] = [];
  closed = false;
  #handlers: FakeHandlers;
  #socketTakes: () => Promise<void>;
  #nextId = 1;

  /**
   * `options.socketTakes` resolves when the fake socket takes one more
   * written chunk (backpressure); by default it takes every chunk at once.
   */
  constructor(handlers: FakeHandlers, options: { socketTakes?: () => Promise<void> } = {}) {
    this.#handlers = handlers;
    this.#socketTakes = options.socketTakes ?? (async () => {});
  }

  /** Calls of one method, in order. */
  callsOf(method: MethodName): FakeCall[] {
    return this.calls.filter((call) => call.method === method);
  }

  call<M extends MethodName>(
    method: M,
    params?: ParamsOf<M>,
    options: CallOptions = {},
  ): Promise<ResultOf<M>> {
    return this.start(method, params, options).result;
  }

  start<M extends MethodName>(method: M, params?: ParamsOf<M>, options: CallOptions = {}): PendingCall<M> {
    let markCancelled = () => {};
    const call: FakeCall = {
      id: this.#nextId++,
      method,
      params,
      options,
      written: {},
      ended: new Set(),
      cancelled: false,
      signals: [],
      resizes: [],
      whenCancelled: new Promise<void>((resolve) => {
        markCancelled = resolve;
      }),
    };
    const cancel = () => {
      call.cancelled = true;
      markCancelled();
    };
    if (options.signal?.aborted) cancel();
    else options.signal?.addEventListener("abort", cancel, { once: true });
    this.calls.push(call);
    const handler = this.#handlers[method] as FakeHandler<M> | undefined;
    const result = handler
      ? Promise.resolve().then(() => handler(params as ParamsOf<M>, call))
      : Promise.reject(new BangerError(ErrorCode.METHOD_NOT_FOUND, `the fake daemon has no ${method}`));
    return {
      id: call.id,
      result,
      write: async (ch, data) => {
        const chunks = call.written[ch] ?? [];
        chunks.push(Buffer.from(data));
        call.written[ch] = chunks;
        await this.#socketTakes();
      },
      end: (ch) => {
        call.ended.add(ch);
      },
      cancel,
      signal: (signal) => {
        call.signals.push(signal);
      },
      resize: (cols, rows) => {
        call.resizes.push({ cols, rows });
      },
    };
  }

  close(): void {
    this.closed = true;
  }
}

export interface FakeTerminal {
  stdinTty?: boolean;
  stdoutTty?: boolean;
  columns?: number;
  rows?: number;
}

export interface FakeCli {
  ctx: CliContext;
  stdin: PassThrough;
  stdout(): string;
  stderr(): string;
  /** Delivers a signal to the CLI as the terminal or a supervisor would. */
  signal(signal: CliSignal): void;
  /** Every setRawMode call on the terminal's stdin. */
  rawModes: boolean[];
  /** The reader of stdout goes away (EPIPE). */
  closeOutput(): void;
  /** The terminal changes size. */
  resize(columns: number, rows: number): void;
  /** argv of every program the command ran on the terminal. */
  interactive: string[][];
  /** Runs `banger ARGV` in-process; resolves its exit status. */
  run(argv: readonly string[]): Promise<number>;
}

export interface FakeCliOptions extends FakeTerminal {
  client: DaemonClient | (() => Promise<DaemonClient>);
  home?: string;
  /** The CLI's environment (for -e KEY). */
  env?: Record<string, string>;
  /** Exit status of programs run on the terminal (vm ssh). */
  interactiveStatus?: number;
}

export function fakeCli(options: FakeCliOptions): FakeCli {
  const out: Buffer[] = [];
  const err: Buffer[] = [];
  const rawModes: boolean[] = [];
  const stdin = Object.assign(
    new PassThrough(),
    options.stdinTty ? { isTTY: true, setRawMode: (raw: boolean) => rawModes.push(raw) } : { isTTY: false },
  ) as PassThrough & InputStream;
  const collector = (chunks: Buffer[]): OutputStream =>
    Object.assign(
      new Writable({
        write(chunk: Buffer | string, _encoding, callback) {
          chunks.push(Buffer.from(chunk));
          callback();
        },
      }),
      { isTTY: options.stdoutTty === true, columns: options.columns ?? 80, rows: options.rows ?? 24 },
    );
  const controller = new AbortController();
  const output = new AbortController();
  const resizeListeners = new Set<() => void>();
  const listeners = new Set<(signal: CliSignal) => void>();
  const interactive: string[][] = [];
  const client = options.client;
  const ctx: CliContext = {
    layout: resolveLayout({
      env: { BANGER_HOME: options.home ?? "/nonexistent/banger-test" },
      uid: 0,
      homeDir: "/root",
    }),
    env: options.env ?? {},
    root: "/opt/banger",
    stdin,
    stdout: collector(out),
    stderr: collector(err),
    client: typeof client === "function" ? client : async () => client,
    interrupted: () => controller.signal,
    onSignal(listener) {
      listeners.add(listener);
      return () => listeners.delete(listener);
    },
    outputClosed: () => output.signal,
    onResize(listener) {
      resizeListeners.add(listener);
      return () => resizeListeners.delete(listener);
    },
    async runInteractive(argv) {
      interactive.push([...argv]);
      return options.interactiveStatus ?? 0;
    },
    autostart: () => true,
    setAutostart() {},
    close() {},
  };
  return {
    ctx,
    stdin,
    stdout: () => Buffer.concat(out).toString("utf8"),
    stderr: () => Buffer.concat(err).toString("utf8"),
    signal(signal) {
      if (!controller.signal.aborted) controller.abort(signal);
      for (const listener of [...listeners]) listener(signal);
    },
    rawModes,
    closeOutput: () => output.abort(),
    resize(columns, rows) {
      Object.assign(ctx.stdout, { columns, rows });
      for (const listener of [...resizeListeners]) listener();
    },
    interactive,
    run: (argv) => runCli(ctx, argv),
  };
}
