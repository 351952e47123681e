/**
 * The daemon's limits under load (issue 13):
 * - "rpc-idle": `daemon.ping` p50 with 1000 idle connections open (banger
 *   column) against the same pings with none (baseline column), in
 *   alternating blocks against the one bench daemon.
 * - "exec-stdin": the daemon's RSS growth while one client pipes 1 GiB
 *   (BENCH_STDIN_MIB) through `vm.exec` stdin into `cat > /dev/null` in a
 *   guest; a single value against the 64 MiB goal.
 */
import { connect, type Socket } from "node:net";
import { performance } from "node:perf_hooks";
import { setTimeout as sleep } from "node:timers/promises";
import { type BenchEnv, bangerChecked, type Daemon } from "./env.ts";
import { readRssKiB } from "./proc.ts";
import { pairedRow, type RowResult } from "./report.ts";
import type { VmContext } from "./row-vm.ts";
import { median, summarize } from "./stats.ts";

export const RPC_IDLE_ROW = {
  id: "rpc-idle",
  benchmark: "RPC ping p50, 1000 idle conns vs none",
  unit: "µs",
  goal: "≤1.2x",
} as const;

export const EXEC_STDIN_ROW = {
  id: "exec-stdin",
  benchmark: "daemon RSS growth, 1 GiB exec stdin",
  unit: "MiB",
  goal: "≤64",
} as const;

const IDLE_CONNECTIONS = 1000;
const CALLS = 1000;
const BLOCK = 100;

export async function benchRpcIdle(options: {
  env: BenchEnv;
  daemon: Daemon;
  log: (line: string) => void;
}): Promise<RowResult> {
  const client = await options.daemon.connect();
  const idle: Socket[] = [];
  try {
    const once = async () => {
      const started = performance.now();
      await client.call("daemon.ping", {});
      return (performance.now() - started) * 1000;
    };
    for (let i = 0; i < 200; i++) await once();
    const withIdle: number[] = [];
    const without: number[] = [];
    options.log(`rpc-idle: ${CALLS} pings each, with ${IDLE_CONNECTIONS} idle connections and without`);
    while (withIdle.length < CALLS && !options.env.signal.aborted) {
      for (let i = 0; i < BLOCK; i++) without.push(await once());
      await openIdle(options.env.layout.socketFile, idle, IDLE_CONNECTIONS);
      for (let i = 0; i < BLOCK; i++) withIdle.push(await once());
      for (const socket of idle.splice(0)) socket.destroy();
      await sleep(50);
    }
    return pairedRow(RPC_IDLE_ROW, { banger: withIdle, baseline: without }, [
      `banger = daemon.ping with ${IDLE_CONNECTIONS} connected idle sockets (no hello), baseline = the same pings with none; alternating blocks of ${BLOCK}`,
    ]);
  } finally {
    for (const socket of idle) socket.destroy();
    client.close();
  }
}

/** Opens `count` connections, 50 at a time, retrying the ones a full listen backlog refuses (EAGAIN). */
async function openIdle(path: string, into: Socket[], count: number): Promise<void> {
  const openOne = async (): Promise<void> => {
    for (;;) {
      const socket = connect(path);
      const error = await new Promise<NodeJS.ErrnoException | undefined>((resolve) => {
        socket.once("connect", () => resolve(undefined));
        socket.once("error", resolve);
      });
      if (!error) {
        into.push(socket);
        return;
      }
      socket.destroy();
      if (error.code !== "EAGAIN") throw error;
      await sleep(5);
    }
  };
  for (let opened = 0; opened < count; opened += 50) {
    await Promise.all(Array.from({ length: Math.min(50, count - opened) }, openOne));
  }
}

export async function benchExecStdin(ctx: VmContext): Promise<RowResult> {
  const mib = Number(process.env.BENCH_STDIN_MIB ?? 1024);
  const name = "bench-stdin";
  const pid = ctx.daemon.pid;
  await using stack = new AsyncDisposableStack();
  ctx.log(`exec-stdin: creating VM ${name}`);
  await bangerChecked(ctx.env, ["vm", "create", name], 180_000);
  stack.defer(async () => {
    await bangerChecked(ctx.env, ["vm", "delete", "--force", name], 60_000);
  });
  const before = median(await samples(pid, 5));
  const client = await ctx.daemon.connect();
  stack.defer(() => client.close());
  let peak = before;
  const sampler = setInterval(() => {
    void readRssKiB(pid).then((kib) => {
      peak = Math.max(peak, kib);
    });
  }, 100);
  stack.defer(() => clearInterval(sampler));
  ctx.log(`exec-stdin: piping ${mib} MiB into cat in the guest`);
  const started = performance.now();
  const call = client.start("vm.exec", { name, argv: ["sh", "-c", "cat > /dev/null"], stdin: true });
  const block = Buffer.alloc(1024 * 1024, 0x79);
  for (let sent = 0; sent < mib && !ctx.env.signal.aborted; sent++) await call.write("stdin", block);
  call.end("stdin");
  const result = await call.result;
  const seconds = (performance.now() - started) / 1000;
  if (result.exitCode !== 0) throw new Error(`cat in the guest exited with ${result.exitCode}`);
  const growthMiB = (peak - before) / 1024;
  return {
    ...EXEC_STDIN_ROW,
    banger: summarize([growthMiB]),
    baseline: null,
    statistic: "p50",
    single: true,
    skipped: null,
    notes: [
      `bangerd VmRSS ${(before / 1024).toFixed(1)} MiB before, peak ${(peak / 1024).toFixed(1)} MiB while ${mib} MiB went through exec stdin in ${seconds.toFixed(1)} s (${(mib / seconds).toFixed(1)} MiB/s)`,
    ],
  };
}

async function samples(pid: number, count: number): Promise<number[]> {
  const values: number[] = [];
  for (let i = 0; i < count; i++) {
    values.push(await readRssKiB(pid));
    await sleep(200);
  }
  return values;
}
