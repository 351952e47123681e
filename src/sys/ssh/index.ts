/**
 * The daemon's SSH layer over the system OpenSSH client: the daemon's client
 * key pair, pinning a guest's host key from its console log, waiting for a
 * guest's sshd banner, running commands in a guest with streamed stdio, and
 * plain TCP connections to guest ports (for the daemon's port proxy).
 *
 * One ControlMaster per VM: every ssh call of a session uses
 * ControlMaster=auto with ControlPersist, so the first exec leaves a master
 * behind and later execs skip the key exchange. `close()` ends it.
 * ssh is a long-lived child, so exec spawns it directly (argv only); short
 * control commands go through the Runner.
 */
import { chmod, mkdir, readFile, rename, rm, writeFile } from "node:fs/promises";
import { connect, type Socket } from "node:net";
import { join } from "node:path";
import type { Readable } from "node:stream";
import { pipeline } from "node:stream/promises";
import { cancelled, sleep, throwIfAborted } from "../../core/async/index.ts";
import {
  type HostKey,
  knownHostsLine,
  parseHostKeyLine,
  type SshTarget,
  sshControlArgv,
  sshExecArgv,
} from "../../core/ssh/index.ts";
import { BangerError, ErrorCode } from "../../protocol/index.ts";
import { writeFileAtomic } from "../fs/index.ts";
import { createProcessRunner, type Runner, spawnProcess } from "../runner/index.ts";

export interface ClientKey {
  /** Path of the private key (id_ed25519). */
  privateKey: string;
  /** Path of the public key (id_ed25519.pub). */
  publicKeyFile: string;
  /** The public key line, e.g. "ssh-ed25519 AAAA… banger". */
  publicKey: string;
}

/**
 * The daemon's ed25519 client key in `sshDir` (mode 0700), generated once.
 * Generation writes to temporary names and renames the private key last, so
 * a crash never leaves a private key without its public half.
 */
export async function ensureClientKey(sshDir: string, runner: Runner): Promise<ClientKey> {
  await mkdir(sshDir, { recursive: true, mode: 0o700 });
  await chmod(sshDir, 0o700);
  const privateKey = join(sshDir, "id_ed25519");
  const publicKeyFile = `${privateKey}.pub`;
  const existing = await readPublicKey(privateKey, publicKeyFile, runner);
  if (existing !== undefined) return { privateKey, publicKeyFile, publicKey: existing };

  const temp = join(sshDir, `.id_ed25519.tmp-${process.pid}-${Date.now()}`);
  try {
    await runner.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "banger", "-f", temp]);
    await chmod(temp, 0o600);
    await rename(`${temp}.pub`, publicKeyFile);
    await rename(temp, privateKey);
  } finally {
    await rm(temp, { force: true });
    await rm(`${temp}.pub`, { force: true });
  }
  const publicKey = (await readFile(publicKeyFile, "utf8")).trim();
  return { privateKey, publicKeyFile, publicKey };
}

/** The public key of an existing private key (re-derived if the .pub is gone), or undefined. */
async function readPublicKey(privateKey: string, publicKeyFile: string, runner: Runner) {
  try {
    await readFile(privateKey);
  } catch {
    return undefined;
  }
  await chmod(privateKey, 0o600);
  try {
    return (await readFile(publicKeyFile, "utf8")).trim();
  } catch {
    const derived = await runner.run(["ssh-keygen", "-y", "-f", privateKey]);
    const publicKey = derived.stdout.trim();
    await writeFile(publicKeyFile, `${publicKey}\n`, { mode: 0o644 });
    return publicKey;
  }
}

export interface PinHostKeyOptions {
  /** The guest's serial console log. */
  consoleLog: string;
  ip: string;
  /** Only needed when sshd is not on port 22. */
  port?: number;
  /** Written (mode 0600) with one line for this guest, replacing earlier content. */
  knownHostsFile: string;
}

/** Reads the guest's host key from its console log and pins it in `knownHostsFile`. */
export async function pinHostKey(options: PinHostKeyOptions): Promise<HostKey> {
  let text: string;
  try {
    text = await readFile(options.consoleLog, "utf8");
  } catch (error) {
    throw new BangerError(ErrorCode.BOOT_FAILED, `cannot read console log ${options.consoleLog}`, {
      cause: error,
    });
  }
  const key = parseHostKeyLine(text);
  if (key === undefined) {
    throw new BangerError(
      ErrorCode.BOOT_FAILED,
      `the guest has not printed its SSH host key to ${options.consoleLog} yet`,
      { hint: "the image's init must print `banger-init: hostkey <type> <key>` to the console" },
    );
  }
  await writeFileAtomic(options.knownHostsFile, knownHostsLine(options.ip, key, options.port), {
    mode: 0o600,
  });
  return key;
}

export interface WaitForBannerOptions {
  host: string;
  port: number;
  /** How long to wait in total, in milliseconds (a duration, not a timestamp). */
  deadlineMs: number;
  signal?: AbortSignal | undefined;
  /** Checked between attempts; false means the VM died, so waiting is pointless. */
  stillAlive: () => Promise<boolean>;
  /** Pause between attempts; default 100 ms. */
  intervalMs?: number;
}

/**
 * Resolves once a TCP connection to host:port reads a line starting with
 * "SSH-". Fails with BOOT_FAILED when `stillAlive()` turns false or when
 * `deadlineMs` passes, and with CANCELLED on abort.
 */
export async function waitForSshBanner(options: WaitForBannerOptions): Promise<void> {
  const { host, port, deadlineMs, signal } = options;
  const interval = options.intervalMs ?? 100;
  const started = Date.now();
  const endsAt = started + deadlineMs;
  let lastError = "no attempt yet";
  for (;;) {
    throwIfAborted(signal);
    const remaining = endsAt - Date.now();
    if (remaining <= 0) {
      throw new BangerError(
        ErrorCode.BOOT_FAILED,
        `sshd on ${host}:${port} did not answer within ${formatSeconds(Date.now() - started)} (last: ${lastError})`,
        { hint: "the VM's console log shows how far the guest got", data: { host, port } },
      );
    }
    const attemptMs = Math.min(1000, remaining);
    const attempt = await readBanner(host, port, attemptMs, signal);
    if (attempt.ok) return;
    // An attempt the deadline cut short says less than the one before it.
    const cutShort = attemptMs < 1000 && attempt.error === "timed out";
    if (!cutShort || lastError === "no attempt yet") lastError = attempt.error;
    throwIfAborted(signal);
    if (!(await options.stillAlive())) {
      throw new BangerError(
        ErrorCode.BOOT_FAILED,
        `the VM stopped before sshd on ${host}:${port} answered (waited ${formatSeconds(Date.now() - started)})`,
        { hint: "the VM's console log shows why the guest stopped", data: { host, port } },
      );
    }
    await sleep(Math.min(interval, Math.max(0, endsAt - Date.now())), signal);
  }
}

export type BannerAttempt = { ok: true } | { ok: false; error: string };

/**
 * One attempt to read sshd's banner from host:port within `timeoutMs`; never
 * throws. `error` says why it failed ("timed out", "ECONNREFUSED", ...).
 */
export function probeSshBanner(options: {
  host: string;
  port: number;
  timeoutMs: number;
  signal?: AbortSignal | undefined;
}): Promise<BannerAttempt> {
  return readBanner(options.host, options.port, options.timeoutMs, options.signal);
}

function readBanner(host: string, port: number, timeoutMs: number, signal?: AbortSignal) {
  return new Promise<BannerAttempt>((resolve) => {
    const socket = connect({ host, port });
    let received = Buffer.alloc(0);
    let settled = false;
    const finish = (attempt: BannerAttempt) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      signal?.removeEventListener("abort", onAbort);
      socket.destroy();
      resolve(attempt);
    };
    const onAbort = () => finish({ ok: false, error: "cancelled" });
    const timer = setTimeout(() => finish({ ok: false, error: "timed out" }), timeoutMs);
    signal?.addEventListener("abort", onAbort, { once: true });
    socket.on("data", (chunk: Buffer) => {
      received = Buffer.concat([received, chunk]);
      if (received.length < 4) return;
      const head = received.subarray(0, 4).toString("latin1");
      finish(head === "SSH-" ? { ok: true } : { ok: false, error: `unexpected banner '${head}'` });
    });
    socket.on("error", (error: NodeJS.ErrnoException) =>
      finish({ ok: false, error: error.code ?? error.message }),
    );
    socket.on("close", () => finish({ ok: false, error: "connection closed before a banner" }));
  });
}

export interface SshSessionOptions extends SshTarget {
  /** Runs `ssh -O check|exit`; defaults to a process runner. */
  runner?: Runner;
  /** Prepended to every ssh argv, e.g. ["ip", "netns", "exec", "NS"] in tests. */
  commandPrefix?: readonly string[];
}

export interface ExecOptions {
  argv: readonly string[];
  /** Piped to the remote command's stdin; without it stdin is empty. */
  stdin?: Readable | undefined;
  /** Called per chunk as it arrives; a returned promise pauses the stream until it settles. */
  onStdout?: ((chunk: Buffer) => void | Promise<void>) | undefined;
  onStderr?: ((chunk: Buffer) => void | Promise<void>) | undefined;
  /**
   * Aborting kills the local ssh client (SIGTERM, then SIGKILL after 2 s) and
   * rejects with CANCELLED. Without a pty sshd does not signal the remote
   * command; it runs on until it ends or writes to its closed output.
   */
  signal?: AbortSignal | undefined;
}

export interface ExecResult {
  /** The remote command's status; 255 also means ssh itself failed (see stderr). */
  exitCode: number | null;
  /** Signal that ended the local ssh client, if any. */
  signal: string | null;
}

export interface SshSession {
  exec(options: ExecOptions): Promise<ExecResult>;
  /** True when this session's ControlMaster is up. */
  check(): Promise<boolean>;
  /** Ends the ControlMaster; safe to call repeatedly or when none runs. */
  close(): Promise<void>;
}

export function createSshSession(options: SshSessionOptions): SshSession {
  const { runner = createProcessRunner(), commandPrefix = [], ...target } = options;
  const control = (operation: "check" | "exit") =>
    runner.run([...commandPrefix, ...sshControlArgv(target, operation)], {
      allowFailure: true,
      timeoutMs: 10_000,
    });
  return {
    exec(execOptions) {
      return spawnSsh([...commandPrefix, ...sshExecArgv(target, execOptions.argv)], execOptions);
    },
    async check() {
      return (await control("check")).code === 0;
    },
    async close() {
      await control("exit");
    },
  };
}

async function spawnSsh(argv: readonly string[], options: ExecOptions): Promise<ExecResult> {
  const { signal } = options;
  if (signal?.aborted) throw cancelled(signal);
  const child = await spawnProcess(argv, { stdio: [options.stdin ? "pipe" : "ignore", "pipe", "pipe"] });
  return new Promise<ExecResult>((resolve, reject) => {
    let failure: unknown;
    let killTimer: NodeJS.Timeout | undefined;
    const terminate = (reason: unknown) => {
      failure ??= reason;
      if (child.exitCode !== null || child.signalCode !== null) return;
      child.kill("SIGTERM");
      killTimer = setTimeout(() => child.kill("SIGKILL"), 2000);
      killTimer.unref();
    };
    const onAbort = () => terminate(cancelled(signal));
    signal?.addEventListener("abort", onAbort, { once: true });

    const pumps = [
      pump(child.stdout!, options.onStdout, terminate),
      pump(child.stderr!, options.onStderr, terminate),
    ];
    if (options.stdin && child.stdin) {
      // EPIPE when the remote command exits without reading everything is not a failure of exec.
      pipeline(options.stdin, child.stdin).catch(() => {});
    }

    let settled = false;
    const settle = (code: number | null, exitSignal: string | null) => {
      if (settled) return;
      settled = true;
      if (killTimer) clearTimeout(killTimer);
      signal?.removeEventListener("abort", onAbort);
      if (failure !== undefined) reject(failure);
      else resolve({ exitCode: code, signal: exitSignal });
    };
    child.on("exit", (code, exitSignal) => {
      if (failure === undefined) return;
      // Cancelled or a handler failed: the ControlMaster holds our pipes (ssh passes its stdio
      // to the master) until the remote command ends, so stop reading instead of waiting for it.
      child.stdout?.destroy();
      child.stderr?.destroy();
      settle(code, exitSignal);
    });
    child.on("close", (code, exitSignal) => {
      void Promise.all(pumps).then(() => settle(code, exitSignal));
    });
  });
}

/**
 * Feeds a stream to `handler`, pausing while an async handler works. Resolves
 * once the stream ended and every handler call settled; never rejects (a
 * handler failure goes to `onFailure`, and later chunks are dropped).
 */
function pump(
  stream: Readable,
  handler: ((chunk: Buffer) => void | Promise<void>) | undefined,
  onFailure: (error: unknown) => void,
): Promise<void> {
  let failed = false;
  let pending: Promise<void> = Promise.resolve();
  const fail = (error: unknown) => {
    failed = true;
    onFailure(error);
  };
  stream.on("data", (chunk: Buffer) => {
    if (failed || handler === undefined) return;
    let outcome: void | Promise<void>;
    try {
      outcome = handler(chunk);
    } catch (error) {
      fail(error);
      return;
    }
    if (outcome instanceof Promise) {
      stream.pause();
      pending = outcome.then(
        () => {
          stream.resume();
        },
        (error: unknown) => {
          fail(error);
          stream.resume();
        },
      );
    }
  });
  return new Promise<void>((resolve) => {
    const done = () => resolve(pending);
    stream.once("end", done);
    stream.once("close", done);
    stream.once("error", done);
  });
}

/** A connected TCP socket to host:port (GUEST_UNREACHABLE on failure, CANCELLED on abort). */
export function openTcp(host: string, port: number, signal?: AbortSignal): Promise<Socket> {
  if (signal?.aborted) return Promise.reject(cancelled(signal));
  return new Promise<Socket>((resolve, reject) => {
    const socket = connect({ host, port });
    const onAbort = () => {
      socket.destroy();
      reject(cancelled(signal));
    };
    signal?.addEventListener("abort", onAbort, { once: true });
    socket.once("connect", () => {
      signal?.removeEventListener("abort", onAbort);
      socket.removeListener("error", onError);
      resolve(socket);
    });
    const onError = (error: NodeJS.ErrnoException) => {
      signal?.removeEventListener("abort", onAbort);
      socket.destroy();
      reject(
        new BangerError(
          ErrorCode.GUEST_UNREACHABLE,
          `cannot connect to ${host}:${port}: ${error.code ?? error.message}`,
          { cause: error, data: { host, port } },
        ),
      );
    };
    socket.once("error", onError);
  });
}

function formatSeconds(ms: number): string {
  return `${(ms / 1000).toFixed(1)} s`;
}
