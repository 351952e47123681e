/**
 * Row "dns": `NAME.vm` A queries to banger's DNS server (the bench daemon's,
 * on 127.0.0.1:53 in the bench namespace), next to dnsmasq answering the
 * same name from a hosts file on 127.0.0.2:53 in the same namespace. One
 * client process (bench/dns-client.ts) takes turns in blocks between them
 * and a third server, bench/dns-floor.ts (bare node:dgram sending the same
 * reply without reading the query: Node's own cost, given in the notes);
 * the p50 row and a p99 row are reported.
 *
 * The client, dnsmasq, the floor and every thread of bangerd run on one CPU
 * for the row (bangerd's affinity is restored after it). A query is one
 * wakeup of the server and one of the client; on a small VM a wakeup that
 * lands on another, idle vCPU costs 80-100 µs (the hypervisor wakes it),
 * ten times the work, and which process the scheduler sends there is luck
 * (poll-woken dnsmasq tends to stay on the client's CPU, epoll-woken Node
 * does not), so unpinned the ratio jumped between 1.9x and 8.5x from run to
 * run. Pinned, the row compares the work each server does per query.
 */
import { spawn } from "node:child_process";
import { writeFile } from "node:fs/promises";
import { join } from "node:path";
import { type BenchEnv, bangerChecked, type Daemon, onPath } from "./env.ts";
import { pinToCpu, run, stopPid } from "./proc.ts";
import { pairedRow, type RowResult } from "./report.ts";
import { summarize } from "./stats.ts";

export const DNS_ROW = {
  id: "dns",
  benchmark: "DNS name.vm query (p50)",
  unit: "µs",
  goal: "≤1.5x",
} as const;

const QUERIES = 5000;
const BLOCK = 100;
/** The CPU the row's processes share. */
const CPU = "0";
const BANGER = "127.0.0.1";
const DNSMASQ = "127.0.0.2";
const FLOOR = "127.0.0.3";

export function dnsSkipReason(env: BenchEnv): string | null {
  if (env.netns === null) return "needs root (the daemon's DNS runs in the bench namespace)";
  if (!onPath("dnsmasq")) return "dnsmasq is not installed (Debian package dnsmasq-base)";
  if (!onPath("taskset")) return "taskset is not installed (Debian package util-linux)";
  return null;
}

export async function benchDns(options: {
  env: BenchEnv;
  daemon: Daemon;
  log: (line: string) => void;
  onPid: (pid: number) => void;
}): Promise<RowResult[]> {
  const { env } = options;
  const netns = env.netns as string;
  // A stopped VM is enough: its name is in the zone from create to delete.
  const created = await bangerChecked(env, ["vm", "create", "bench-dns", "--no-start", "--json"], 300_000);
  const { guestIp } = JSON.parse(created.stdout) as { guestIp: string };
  await using stack = new AsyncDisposableStack();
  stack.defer(async () => void (await bangerChecked(env, ["vm", "delete", "--force", "bench-dns"], 60_000)));
  const hosts = join(env.home, "dns-bench.hosts");
  await writeFile(hosts, `${guestIp} bench-dns.vm\n`);
  for (const address of [DNSMASQ, FLOOR]) {
    await run(["ip", "-n", netns, "addr", "add", `${address}/8`, "dev", "lo"], { timeoutMs: 5000 });
  }
  stack.defer(await pinToCpu(options.daemon.pid, CPU));
  /** argv run in the bench namespace on the row's CPU. */
  const pinned = (...argv: string[]) => ["netns", "exec", netns, "taskset", "-c", CPU, ...argv];
  const dnsmasq = spawn(
    "ip",
    pinned(
      "dnsmasq",
      "--keep-in-foreground",
      "--no-resolv",
      "--no-hosts",
      `--addn-hosts=${hosts}`,
      `--listen-address=${DNSMASQ}`,
      "--bind-interfaces",
      "--port=53",
      "--conf-file=/dev/null",
      "--pid-file=",
      "--user=root",
      "--cache-size=1000",
    ),
    { stdio: "ignore" },
  );
  if (dnsmasq.pid !== undefined) options.onPid(dnsmasq.pid);
  stack.defer(async () => {
    if (dnsmasq.pid !== undefined) await stopPid(dnsmasq.pid, 2000);
  });
  const floor = spawn("ip", pinned(env.node, join(env.root, "bench", "dns-floor.ts"), FLOOR, guestIp), {
    stdio: ["pipe", "pipe", "ignore"],
  });
  if (floor.pid !== undefined) options.onPid(floor.pid);
  stack.defer(async () => {
    floor.stdin.end();
    if (floor.pid !== undefined) await stopPid(floor.pid, 2000);
  });
  await new Promise((resolve) => floor.stdout.once("data", resolve));
  await new Promise((resolve) => setTimeout(resolve, 500));
  options.log(
    `dns: ${QUERIES} queries each for bench-dns.vm, taking turns in blocks of ${BLOCK}, all on CPU ${CPU}`,
  );
  const result = await run(
    [
      "ip",
      ...pinned(
        env.node,
        join(env.root, "bench", "dns-client.ts"),
        "bench-dns.vm",
        String(QUERIES),
        String(BLOCK),
        BANGER,
        DNSMASQ,
        FLOOR,
      ),
    ],
    { timeoutMs: 120_000 },
  );
  if (result.code !== 0) throw new Error(`dns client failed: ${result.stderr.trim().split("\n").at(-1)}`);
  const samples = JSON.parse(result.stdout) as Record<string, number[]>;
  const [banger, baseline, bare] = [BANGER, DNSMASQ, FLOOR].map((host) => summarize(samples[host] ?? []));
  const ratio = (value: number, of: number) => `${(value / of).toFixed(2)}x`;
  const notes = [
    `${banger?.n} UDP queries each from one client process; banger = bangerd's DNS server (zone snapshot of the store's VMs), baseline = dnsmasq --addn-hosts with the same name, both in the bench namespace; client, servers and bangerd pinned to CPU ${CPU} (see bench/row-dns.ts)`,
    `floor: a bare node:dgram server sending the same reply without reading the query (bench/dns-floor.ts) took p50 ${bare?.p50.toFixed(1)} µs (${ratio(bare?.p50 ?? 0, baseline?.p50 ?? 1)} dnsmasq), p99 ${bare?.p99.toFixed(1)} µs; banger p50 is ${ratio(banger?.p50 ?? 0, bare?.p50 ?? 1)} the floor`,
  ];
  const p50 = pairedRow(DNS_ROW, { banger: samples[BANGER] ?? [], baseline: samples[DNSMASQ] ?? [] }, notes);
  const p99: RowResult = {
    ...p50,
    benchmark: "DNS name.vm query (p99 in p50 cols)",
    goal: "-",
    statistic: "p99",
    notes: [],
  };
  return [p50, p99];
}
