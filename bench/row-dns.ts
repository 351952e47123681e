/**
 * Row "dns": `NAME.vm` A queries to banger's DNS server (the bench daemon's,
 * on 127.0.0.1:53 in the bench namespace), next to dnsmasq answering the
 * same name from a hosts file on 127.0.0.2:53 in the same namespace. One
 * client process (bench/dns-client.ts) alternates blocks between the two;
 * the p50 row and a p99 row are reported.
 */
import { spawn } from "node:child_process";
import { writeFile } from "node:fs/promises";
import { join } from "node:path";
import { type BenchEnv, bangerChecked, onPath } from "./env.ts";
import { run, stopPid } from "./proc.ts";
import { pairedRow, type RowResult } from "./report.ts";

export const DNS_ROW = {
  id: "dns",
  benchmark: "DNS name.vm query (p50)",
  unit: "µs",
  goal: "≤1.5x",
} as const;

const QUERIES = 2000;
const BLOCK = 200;

export function dnsSkipReason(env: BenchEnv): string | null {
  if (env.netns === null) return "needs root (the daemon's DNS runs in the bench namespace)";
  if (!onPath("dnsmasq")) return "dnsmasq is not installed (Debian package dnsmasq-base)";
  return null;
}

export async function benchDns(options: {
  env: BenchEnv;
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
  await run(["ip", "-n", netns, "addr", "add", "127.0.0.2/8", "dev", "lo"], { timeoutMs: 5000 });
  const dnsmasq = spawn(
    "ip",
    [
      "netns",
      "exec",
      netns,
      "dnsmasq",
      "--keep-in-foreground",
      "--no-resolv",
      "--no-hosts",
      `--addn-hosts=${hosts}`,
      "--listen-address=127.0.0.2",
      "--bind-interfaces",
      "--port=53",
      "--conf-file=/dev/null",
      "--pid-file=",
      "--user=root",
      "--cache-size=1000",
    ],
    { stdio: "ignore" },
  );
  if (dnsmasq.pid !== undefined) options.onPid(dnsmasq.pid);
  stack.defer(async () => {
    if (dnsmasq.pid !== undefined) await stopPid(dnsmasq.pid, 2000);
  });
  await new Promise((resolve) => setTimeout(resolve, 500));
  options.log(`dns: ${QUERIES} queries each for bench-dns.vm, alternating blocks of ${BLOCK}`);
  const result = await run(
    [
      "ip",
      "netns",
      "exec",
      netns,
      env.node,
      join(env.root, "bench", "dns-client.ts"),
      "bench-dns.vm",
      "127.0.0.1",
      "127.0.0.2",
      String(QUERIES),
      String(BLOCK),
    ],
    { timeoutMs: 120_000 },
  );
  if (result.code !== 0) throw new Error(`dns client failed: ${result.stderr.trim().split("\n").at(-1)}`);
  const samples = JSON.parse(result.stdout) as { a: number[]; b: number[] };
  const notes = [
    `${samples.a.length} UDP queries each from one client process; banger = bangerd's DNS server (zone snapshot of the store's VMs), baseline = dnsmasq --addn-hosts with the same name, both in the bench namespace`,
  ];
  const p50 = pairedRow(DNS_ROW, { banger: samples.a, baseline: samples.b }, notes);
  const p99: RowResult = {
    ...p50,
    benchmark: "DNS name.vm query (p99 in p50 cols)",
    goal: "-",
    statistic: "p99",
    notes: [],
  };
  return [p50, p99];
}
