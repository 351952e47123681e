/**
 * Row "rpc": `daemon.ping` round trips through RpcClient against the bench's
 * daemon, next to the same-sized JSON line through a bare echo server in its
 * own process. Both sides run in alternating blocks so drift hits both.
 * The client (this process), bangerd and the echo server are pinned to one
 * CPU for the row, as the dns row's are: unpinned, a round trip is two
 * cross-vCPU wakeups at 80–100 µs each on a small VM (150–200 µs a ping
 * against 60–70 µs pinned), and which side pays them is luck.
 */
import { spawn } from "node:child_process";
import { once } from "node:events";
import { connect, type Socket } from "node:net";
import { join } from "node:path";
import { performance } from "node:perf_hooks";
import { type BenchEnv, type Daemon, onPath } from "./env.ts";
import { pinToCpu, stopPid } from "./proc.ts";
import type { RowResult } from "./report.ts";
import { summarize } from "./stats.ts";

const CALLS = 2000;
/** The CPU client and servers share for the row. */
const CPU = "0";
const WARMUP = 200;
const BLOCK = 200;
/** Cap on the row's timed part; a slow host ends the loop early (noted). */
const BUDGET_MS = 60_000;

export const RPC_ROW = {
  id: "rpc",
  benchmark: "RPC ping round-trip (p50)",
  unit: "µs",
  goal: "≤1.5x",
} as const;

export async function benchRpc(options: {
  env: BenchEnv;
  daemon: Daemon;
  onPid: (pid: number) => void;
  log: (line: string) => void;
}): Promise<RowResult[]> {
  const { env, daemon } = options;
  const client = await daemon.connect();
  await using stack = new AsyncDisposableStack();
  stack.defer(() => client.close());
  const echo = await startEchoServer(env, options.onPid);
  stack.defer(() => echo.stop());
  const pinned = onPath("taskset") !== null;
  if (pinned) for (const pid of [process.pid, daemon.pid, echo.pid]) stack.defer(await pinToCpu(pid, CPU));

  const pingLine = (id: number) =>
    `${JSON.stringify({ jsonrpc: "2.0", id, method: "daemon.ping", params: {} })}\n`;
  const bangerOnce = async () => {
    const started = performance.now();
    await client.call("daemon.ping", {});
    return (performance.now() - started) * 1000;
  };
  let nextId = 1;
  const baselineOnce = async () => {
    const started = performance.now();
    JSON.parse(await echo.roundTrip(pingLine(nextId++)));
    return (performance.now() - started) * 1000;
  };

  for (let i = 0; i < WARMUP; i++) {
    await bangerOnce();
    await baselineOnce();
  }
  options.log(`rpc: ${CALLS} pings each, alternating blocks of ${BLOCK}`);
  const banger: number[] = [];
  const baseline: number[] = [];
  const started = Date.now();
  while (banger.length < CALLS && Date.now() - started < BUDGET_MS && !env.signal.aborted) {
    for (let i = 0; i < BLOCK; i++) banger.push(await bangerOnce());
    for (let i = 0; i < BLOCK; i++) baseline.push(await baselineOnce());
  }
  const notes = [
    `${banger.length} calls each; banger = RpcClient.call("daemon.ping") after daemon.hello, baseline = ${pingLine(0).length}-byte JSON line through a node:net echo server (own process)`,
    pinned
      ? `client, bangerd and the echo server pinned to CPU ${CPU} (see bench/row-rpc.ts)`
      : "unpinned (taskset is missing): cross-CPU wakeups make the ratio noisy",
  ];
  if (banger.length < CALLS) notes.push(`stopped early at the ${BUDGET_MS / 1000} s cap`);
  const bangerSummary = summarize(banger);
  const baselineSummary = summarize(baseline);
  return [
    {
      ...RPC_ROW,
      banger: bangerSummary,
      baseline: baselineSummary,
      statistic: "p50",
      single: false,
      skipped: null,
      notes,
    },
    {
      id: "rpc",
      benchmark: "RPC ping round-trip (p99 in p50 cols)",
      unit: "µs",
      goal: "-",
      banger: bangerSummary,
      baseline: baselineSummary,
      statistic: "p99",
      single: false,
      skipped: null,
      notes: [],
    },
  ];
}

interface EchoServer {
  pid: number;
  roundTrip(line: string): Promise<string>;
  stop(): Promise<void>;
}

async function startEchoServer(env: BenchEnv, onPid: (pid: number) => void): Promise<EchoServer> {
  const socketPath = join(env.home, "echo.sock");
  const child = spawn(env.node, [join(env.root, "bench", "echo-server.ts"), socketPath], {
    stdio: ["pipe", "pipe", "inherit"],
  });
  if (child.pid === undefined) throw new Error("could not spawn the echo server");
  const pid = child.pid;
  onPid(pid);
  const stop = async () => {
    child.stdin.end();
    await stopPid(pid, 2000);
  };
  try {
    const [first] = (await Promise.race([
      once(child.stdout, "data"),
      once(child, "exit").then(() => {
        throw new Error("the echo server exited before it was ready");
      }),
    ])) as [Buffer];
    if (!first.toString().startsWith("ready")) throw new Error(`echo server said: ${first.toString()}`);
    const socket = connect(socketPath);
    await once(socket, "connect");
    const reader = lineReader(socket);
    return {
      pid,
      roundTrip(line) {
        const reply = reader.next();
        socket.write(line);
        return reply;
      },
      async stop() {
        socket.destroy();
        await stop();
      },
    };
  } catch (error) {
    await stop();
    throw error;
  }
}

/** Resolves `next()` with each newline-terminated line, in order. */
function lineReader(socket: Socket): { next(): Promise<string> } {
  let buffer = "";
  const waiting: ((line: string) => void)[] = [];
  socket.setEncoding("utf8");
  socket.on("data", (chunk: string) => {
    buffer += chunk;
    let newline = buffer.indexOf("\n");
    while (newline !== -1) {
      waiting.shift()?.(buffer.slice(0, newline));
      buffer = buffer.slice(newline + 1);
      newline = buffer.indexOf("\n");
    }
  });
  return { next: () => new Promise<string>((resolve) => waiting.push(resolve)) };
}
