/**
 * How the CLI reaches the daemon (turborepo's connector, adapted):
 * connect → handshake; on a missing or dead socket, autostart bangerd
 * (detached, its output in the daemon log), wait for the socket with a
 * deadline, handshake. The CLI never removes the socket or pid file: only
 * the daemon holding the home's lock does, so concurrent autostarts are
 * safe (the losers' daemons exit with DAEMON_RUNNING and their CLIs wait
 * for the winner's socket). On a protocol mismatch an idle daemon is
 * restarted; a busy one is left alone and the user gets a hint.
 */
import { spawn, spawnSync } from "node:child_process";
import { closeSync, existsSync, mkdirSync, openSync, readFileSync } from "node:fs";
import { readFile } from "node:fs/promises";
import { pollUntil, sleep } from "../core/async/index.ts";
import type { Layout } from "../core/paths/index.ts";
import {
  BangerError,
  BUILD_VERSION,
  ErrorCode,
  exitStatusFor,
  PROTOCOL_VERSION,
  type ResultOf,
} from "../protocol/index.ts";
import { RpcClient } from "./rpc/client.ts";

export interface ConnectOptions {
  layout: Layout;
  autostart: boolean;
  /** Command that runs the daemon in the foreground (bin/bangerd). */
  daemonCommand: readonly string[];
  env: Readonly<Record<string, string | undefined>>;
  /** How long to wait for an autostarted daemon's socket. */
  startTimeoutMs?: number;
  /** Called once when the daemon is being started, for a progress line. */
  onStarting?: () => void;
}

export interface Connection {
  client: RpcClient;
  hello: ResultOf<"daemon.hello">;
  /** True when this call started the daemon. */
  started: boolean;
}

export async function connectDaemon(options: ConnectOptions): Promise<Connection> {
  const first = await tryConnect(options.layout.socketFile);
  if (first.client) {
    const hello = await handshake(first.client);
    if (hello.compatible) return { client: first.client, hello, started: false };
    if (hello.runningVms > 0 || !options.autostart) {
      first.client.close();
      throw new BangerError(
        ErrorCode.VERSION_MISMATCH,
        `bangerd (pid ${hello.pid}) speaks protocol ${hello.protocol}, this CLI speaks ${PROTOCOL_VERSION}`,
        {
          hint:
            hello.runningVms > 0
              ? `it has ${hello.runningVms} running VMs; stop them, then run \`banger daemon stop\``
              : undefined,
        },
      );
    }
    await first.client.call("daemon.shutdown", {}).catch(() => undefined);
    first.client.close();
    await waitForPidGone(hello.pid, 10_000);
  } else if (!options.autostart) {
    throw new BangerError(
      ErrorCode.DAEMON_UNAVAILABLE,
      `bangerd is not running (no answer on ${options.layout.socketFile})`,
      {
        hint: "start it with `banger daemon start`, or drop --no-autostart / BANGER_NO_AUTOSTART",
      },
    );
  }
  options.onStarting?.();
  const child = spawnDaemon(options);
  const client = await waitForSocket(options, child);
  const hello = await handshake(client);
  return { client, hello, started: true };
}

type TryResult =
  | { client: RpcClient; reason?: undefined }
  | { client?: undefined; reason: "missing" | "refused" };

async function tryConnect(socketPath: string): Promise<TryResult> {
  try {
    return { client: await RpcClient.connect(socketPath) };
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    if (code === "ENOENT") return { reason: "missing" };
    if (code === "ECONNREFUSED") return { reason: "refused" };
    if (code === "EACCES" || code === "EPERM") {
      throw new BangerError(
        ErrorCode.PERMISSION_DENIED,
        `no permission to use the daemon socket ${socketPath}`,
        {
          hint: "run as the daemon's user (often root), or set daemon.socket_group in the config",
        },
      );
    }
    throw error;
  }
}

function handshake(client: RpcClient): Promise<ResultOf<"daemon.hello">> {
  return client.call("daemon.hello", {
    protocol: PROTOCOL_VERSION,
    build: BUILD_VERSION,
    client: "banger-cli",
  });
}

function spawnDaemon(options: ConnectOptions) {
  const { layout, env } = options;
  mkdirSync(layout.stateDir, { recursive: true, mode: 0o700 });
  const logFd = openSync(layout.daemonLog, "a", 0o600);
  const netns = env.BANGER_NETNS;
  const argv = netns ? ["ip", "netns", "exec", netns, ...options.daemonCommand] : [...options.daemonCommand];
  if (netns && !existsSync(`/run/netns/${netns}`)) ensureNetns(netns);
  // Inside a namespace the daemon has no route out; fd 3 keeps a handle on the
  // host's network namespace for the one step that downloads (image builds).
  const hostNetns = netns ? openSync("/proc/self/ns/net", "r") : undefined;
  try {
    const child = spawn(argv[0]!, argv.slice(1), {
      detached: true,
      stdio: hostNetns === undefined ? ["ignore", logFd, logFd] : ["ignore", logFd, logFd, hostNetns],
      env: { ...env, ...(hostNetns === undefined ? {} : { BANGER_HOST_NETNS_FD: "3" }) } as NodeJS.ProcessEnv,
    });
    child.unref();
    return child;
  } finally {
    closeSync(logFd);
    if (hostNetns !== undefined) closeSync(hostNetns);
  }
}

function ensureNetns(name: string): void {
  const result = spawnSync("ip", ["netns", "add", name], { encoding: "utf8" });
  if (result.status !== 0 && !existsSync(`/run/netns/${name}`)) {
    throw new BangerError(
      ErrorCode.PERMISSION_DENIED,
      `cannot create network namespace '${name}': ${(result.stderr ?? "").trim()}`,
      {
        hint: "creating a network namespace needs root",
      },
    );
  }
  spawnSync("ip", ["-n", name, "link", "set", "lo", "up"], { stdio: "ignore" });
}

async function waitForSocket(options: ConnectOptions, child: ReturnType<typeof spawn>): Promise<RpcClient> {
  const deadline = Date.now() + (options.startTimeoutMs ?? 20_000);
  let exitCode: number | null = null;
  child.once("exit", (code) => {
    exitCode = code ?? -1;
  });
  while (Date.now() < deadline) {
    const attempt = await tryConnect(options.layout.socketFile);
    if (attempt.client) return attempt.client;
    // Another autostart won the home's lock: its daemon is coming up, wait for it.
    if (exitCode !== null && exitCode !== exitStatusFor.DAEMON_RUNNING) break;
    await sleep(50);
  }
  const tail = await logTail(options.layout.daemonLog);
  throw new BangerError(
    ErrorCode.DAEMON_UNAVAILABLE,
    exitCode !== null
      ? `bangerd exited with status ${exitCode} while starting${tail}`
      : `bangerd did not open ${options.layout.socketFile} in time${tail}`,
    { hint: `read the full log with \`banger daemon logs\` (${options.layout.daemonLog})` },
  );
}

async function logTail(file: string): Promise<string> {
  const text = await readFile(file, "utf8").catch(() => "");
  const lines = text.trim().split("\n").slice(-5).join("\n");
  return lines ? `:\n${lines}` : "";
}

export async function waitForPidGone(pid: number, timeoutMs: number): Promise<void> {
  await pollUntil(() => !pidAlive(pid), { timeoutMs, intervalMs: 50 });
}

/** A zombie (dead, not yet reaped; forever where PID 1 never reaps) counts as gone. */
function pidAlive(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    const state = stat.slice(stat.lastIndexOf(")") + 2, stat.lastIndexOf(")") + 3);
    return state !== "Z" && state !== "X";
  } catch (error) {
    return (error as NodeJS.ErrnoException).code !== "ENOENT";
  }
}
