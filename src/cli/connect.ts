/**
 * How the CLI reaches the daemon (turborepo's connector, adapted):
 * connect → handshake; on a missing or dead socket, autostart bangerd
 * (detached, its output in the daemon log), wait for the socket with a
 * deadline, handshake. A stale socket is removed only after proving the
 * daemon's recorded pid is gone. On a protocol mismatch an idle daemon is
 * restarted; a busy one is left alone and the user gets a hint.
 */
import { spawn, spawnSync } from "node:child_process";
import { closeSync, existsSync, mkdirSync, openSync } from "node:fs";
import { readFile, rm } from "node:fs/promises";
import { pollUntil, sleep } from "../core/async/index.ts";
import type { Layout } from "../core/paths/index.ts";
import { BangerError, BUILD_VERSION, ErrorCode, PROTOCOL_VERSION, type ResultOf } from "../protocol/index.ts";
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
  } else if (first.reason === "refused") {
    await removeStaleSocket(options.layout);
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

/**
 * A socket that refuses connections is stale only if the pid that owned it
 * is gone. A live process behind the pid file keeps its socket.
 */
async function removeStaleSocket(layout: Layout): Promise<void> {
  const pid = Number.parseInt((await readFile(layout.pidFile, "utf8").catch(() => "")).trim(), 10);
  if (Number.isInteger(pid) && pid > 0 && pidAlive(pid)) {
    throw new BangerError(
      ErrorCode.DAEMON_UNAVAILABLE,
      `${layout.socketFile} refuses connections but its daemon pid ${pid} is still alive; not removing it`,
      { hint: `check that process (ps -p ${pid}); stop it if it is a hung bangerd, then retry` },
    );
  }
  await rm(layout.socketFile, { force: true });
  await rm(layout.pidFile, { force: true });
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
    if (exitCode !== null) break;
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

function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === "EPERM";
  }
}
