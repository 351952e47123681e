/**
 * The bench's surroundings: host capabilities, its network namespace, its
 * own daemon (started and stopped by pid) and the banger CLI bound to both.
 * Every resource here is created with its undo registered by the caller.
 */
import { spawn } from "node:child_process";
import { closeSync, existsSync, openSync } from "node:fs";
import { readFile } from "node:fs/promises";
import { delimiter, join } from "node:path";
import { RpcClient } from "../src/cli/rpc/client.ts";
import { type Layout, resolveLayout } from "../src/core/paths/index.ts";
import { BUILD_VERSION, PROTOCOL_VERSION } from "../src/protocol/index.ts";
import { pidAlive, type RunResult, run, runChecked, sleep, stopPid, waitPidGone } from "./proc.ts";

export interface BenchEnv {
  /** The repository root. */
  root: string;
  /** The Node binary bin/banger uses (node_modules/node/bin/node). */
  node: string;
  /** BANGER_HOME of the bench's daemon; also holds the bench's own temp files. */
  home: string;
  layout: Layout;
  /** The network namespace everything with bridges, taps or guests runs in; null when not root. */
  netns: string | null;
  /** The environment banger CLI calls run with (never autostarts a daemon). */
  bangerEnv: NodeJS.ProcessEnv;
  /** Aborted on Ctrl-C, SIGTERM or the overall cap: loops stop and running children are killed. */
  signal: AbortSignal;
}

export const IMAGE_CACHE = "/var/tmp/banger-image-cache";

export function makeEnv(options: {
  root: string;
  home: string;
  netns: string | null;
  signal: AbortSignal;
}): BenchEnv {
  const bangerEnv: NodeJS.ProcessEnv = {
    ...process.env,
    BANGER_HOME: options.home,
    BANGER_IMAGE_CACHE: IMAGE_CACHE,
    // The bench boots the small catalog image, the one the test suite shares in IMAGE_CACHE.
    BANGER_DEFAULT_IMAGE: "debian-bookworm-minimal",
    BANGER_NO_AUTOSTART: "1",
  };
  delete bangerEnv.BANGER_FROM_SOURCE;
  if (options.netns) bangerEnv.BANGER_NETNS = options.netns;
  return {
    root: options.root,
    node: join(options.root, "node_modules", "node", "bin", "node"),
    home: options.home,
    layout: resolveLayout({ env: { BANGER_HOME: options.home }, uid: 0, homeDir: "/" }),
    netns: options.netns,
    bangerEnv,
    signal: options.signal,
  };
}

export function isRoot(): boolean {
  return process.getuid?.() === 0;
}

/** The absolute path of `name` on PATH, or null. */
export function onPath(name: string): string | null {
  for (const dir of (process.env.PATH ?? "").split(delimiter)) {
    if (dir && existsSync(join(dir, name))) return join(dir, name);
  }
  return null;
}

/** Host TSC rate in kHz the way the daemon computes it ("cpu MHz" × 1000). */
export async function hostTscKhz(): Promise<number> {
  const text = await readFile("/proc/cpuinfo", "utf8");
  const match = /^cpu MHz\s*:\s*([\d.]+)/m.exec(text);
  if (!match) throw new Error("no 'cpu MHz' line in /proc/cpuinfo");
  return Math.round(Number(match[1]) * 1000);
}

export async function createNetns(name: string): Promise<void> {
  await runChecked(["ip", "netns", "add", name], { timeoutMs: 10_000 });
  await runChecked(["ip", "-n", name, "link", "set", "lo", "up"], { timeoutMs: 10_000 });
}

/**
 * Deletes the namespace. Anything still inside it was started by this bench
 * (the namespace is its own, named by its pid), so it is ended by pid first.
 */
export async function deleteNetns(name: string, log: (line: string) => void): Promise<void> {
  const listed = await run(["ip", "netns", "pids", name], { timeoutMs: 10_000 });
  const leftovers = listed.stdout.split(/\s+/).filter(Boolean).map(Number);
  for (const pid of leftovers) {
    log(`ending leftover pid ${pid} in netns ${name}`);
    await stopPid(pid, 3000);
  }
  await runChecked(["ip", "netns", "del", name], { timeoutMs: 10_000 });
}

/** Runs bin/banger with the bench's environment. */
export function banger(
  env: BenchEnv,
  args: readonly string[],
  timeoutMs: number,
  options: { discardStdout?: boolean } = {},
): Promise<RunResult> {
  return run([join(env.root, "bin", "banger"), ...args], {
    env: env.bangerEnv,
    timeoutMs,
    signal: env.signal,
    discardStdout: options.discardStdout,
  });
}

export async function bangerChecked(
  env: BenchEnv,
  args: readonly string[],
  timeoutMs: number,
  options: { discardStdout?: boolean } = {},
) {
  const result = await banger(env, args, timeoutMs, options);
  if (result.code !== 0) {
    const why = result.timedOut
      ? `timed out after ${timeoutMs} ms`
      : `exited ${result.code ?? result.signal}`;
    throw new Error(
      `banger ${args.join(" ")} ${why}:\n${result.stderr.trim().split("\n").slice(-10).join("\n")}`,
    );
  }
  return result;
}

export interface Daemon {
  pid: number;
  /** A connected, handshaken client for the bench's own calls. */
  connect(): Promise<RpcClient>;
}

/**
 * Spawns bin/bangerd (inside the netns when there is one) detached, so a
 * Ctrl-C of the bench reaches only the bench, which then stops it in order.
 */
export async function startDaemon(env: BenchEnv, onPid: (pid: number) => void): Promise<Daemon> {
  const bangerd = join(env.root, "bin", "bangerd");
  const argv = env.netns ? ["ip", "netns", "exec", env.netns, bangerd] : [bangerd];
  const out = openSync(join(env.home, "bangerd.out"), "a", 0o600);
  let exitCode: number | null = null;
  let pid: number;
  try {
    const child = spawn(argv[0]!, argv.slice(1), {
      env: env.bangerEnv,
      detached: true,
      stdio: ["ignore", out, out],
    });
    if (child.pid === undefined) throw new Error(`could not spawn ${argv.join(" ")}`);
    pid = child.pid;
    onPid(pid);
    child.once("exit", (code) => {
      exitCode = code ?? -1;
    });
    child.unref();
  } finally {
    closeSync(out);
  }
  const connect = async () => {
    const client = await RpcClient.connect(env.layout.socketFile);
    await client.call("daemon.hello", { protocol: PROTOCOL_VERSION, build: BUILD_VERSION, client: "bench" });
    return client;
  };
  const deadline = Date.now() + 30_000;
  for (;;) {
    const client = await connect().catch(() => undefined);
    if (client) {
      client.close();
      break;
    }
    if (exitCode !== null || Date.now() > deadline) {
      const log = await readFile(join(env.home, "bangerd.out"), "utf8").catch(() => "");
      throw new Error(
        `bangerd ${exitCode !== null ? `exited ${exitCode}` : "did not open its socket in 30 s"}:\n${log.trim().slice(-1500)}`,
      );
    }
    await sleep(50);
  }
  const recorded = Number((await readFile(env.layout.pidFile, "utf8")).trim());
  if (recorded !== pid)
    throw new Error(`bangerd pid file says ${recorded}, but the bench started pid ${pid}`);
  return { pid, connect };
}

/**
 * Deletes every VM the daemon knows, asks it to stop (`banger daemon stop
 * --stop-vms`) and makes sure its pid and every QEMU pid it reported are gone.
 */
export async function stopDaemon(env: BenchEnv, daemon: Daemon, log: (line: string) => void): Promise<void> {
  const vmmPids = new Set<number>();
  if (pidAlive(daemon.pid)) {
    const client = await daemon.connect().catch(() => undefined);
    if (client) {
      try {
        const { vms } = await client.call("vm.list", {});
        for (const vm of vms) {
          if (vm.pid !== null) vmmPids.add(vm.pid);
          log(`deleting VM ${vm.name}`);
          await client.call("vm.delete", { name: vm.name, force: true }).catch((error: unknown) => {
            log(`could not delete VM ${vm.name}: ${String(error)}`);
          });
        }
      } finally {
        client.close();
      }
    }
    // Not tied to env.signal: this runs during an abort, too.
    const stopped = await run([join(env.root, "bin", "banger"), "daemon", "stop", "--stop-vms"], {
      env: env.bangerEnv,
      timeoutMs: 60_000,
    });
    if (stopped.code !== 0) log(`banger daemon stop exited ${stopped.code}: ${stopped.stderr.trim()}`);
    if (!(await waitPidGone(daemon.pid, 15_000))) {
      log(`bangerd pid ${daemon.pid} still alive; sending SIGTERM`);
      await stopPid(daemon.pid, 5000);
    }
  }
  for (const pid of vmmPids) {
    if (!pidAlive(pid)) continue;
    const cmdline = await readFile(`/proc/${pid}/cmdline`, "utf8").catch(() => "");
    if (cmdline.includes(env.home)) {
      log(`QEMU pid ${pid} outlived its VM; killing it`);
      await stopPid(pid, 2000);
    }
  }
}
