/**
 * `npm run bench`: banger next to a bare baseline doing the same work, in
 * one run, printed as a table (or JSON with --json). Nothing asserts on time.
 *
 * Environment: BENCH_ONLY=rpc,rpc-idle,dns,cli,create-parallel,reconcile,tap-pool,rss-stopped,vm-cold,vm-fc,vm-warm,vm-cat,
 * publish,rss,exec-stdin,disk-sparse,disk-qcow2,disk-reflink,disk-dm,image-pull,image-pull-shared,ws-prepare,cp-in
 * runs a subset.
 * Everything with bridges, taps or guests runs in a network namespace the
 * bench creates and deletes; every process it starts is ended by pid, and
 * its temp dir is removed, also on failure, Ctrl-C or the overall time cap.
 */
import { existsSync, readdirSync } from "node:fs";
import { mkdtemp, rm } from "node:fs/promises";
import { join, resolve } from "node:path";
import {
  type BenchEnv,
  createNetns,
  type Daemon,
  deleteNetns,
  IMAGE_CACHE,
  isRoot,
  makeEnv,
  onPath,
  startDaemon,
  stopDaemon,
} from "./env.ts";
import { pidAlive, stopPid } from "./proc.ts";
import { type RowResult, renderJson, renderTable, skippedRow } from "./report.ts";
import { benchCli, CLI_ROW } from "./row-cli.ts";
import {
  DISK_DM_ROW,
  DISK_QCOW2_ROW,
  DISK_REFLINK_ROW,
  DISK_ROWS,
  DISK_SPARSE_ROW,
  diskSkipReason,
  openDiskBench,
} from "./row-disk.ts";
import { benchDns, DNS_ROW, dnsSkipReason } from "./row-dns.ts";
import { benchVmFc, VM_FC_ROW, writeFirecrackerConfig } from "./row-firecracker.ts";
import { benchImageRows, IMAGE_PULL_ROW, IMAGE_SHARED_ROW, imageSkipReason } from "./row-image.ts";
import {
  benchCreateParallel,
  benchReconcile,
  benchRssStopped,
  CREATE_PARALLEL_ROW,
  RECONCILE_ROW,
  RSS_STOPPED_ROW,
} from "./row-lifecycle.ts";
import { benchExecStdin, benchRpcIdle, EXEC_STDIN_ROW, RPC_IDLE_ROW } from "./row-limits.ts";
import { benchVmOci, VM_OCI_ROW } from "./row-oci.ts";
import { benchPool, VM_POOL_ROW } from "./row-pool.ts";
import { benchPublish, PUBLISH_ROW } from "./row-ports.ts";
import { benchRpc, RPC_ROW } from "./row-rpc.ts";
import { benchSnapshotRows, VM_FORK_ROW, VM_SNAP_ROW, VM_SUSPEND_ROW } from "./row-snapshot.ts";
import { benchTapPool, TAP_POOL_ROW, tapPoolSkipReason } from "./row-tap-pool.ts";
import {
  benchRss,
  benchVmCold,
  benchVmWarm,
  prepareVms,
  RSS_ROW,
  startBaselineWorker,
  VM_CAT_ROW,
  VM_COLD_ROW,
  VM_WARM_ROW,
  type VmContext,
} from "./row-vm.ts";
import { benchWorkspaceRows, CP_IN_ROW, WS_PREPARE_ROW } from "./row-workspace.ts";
import type { VmWorker } from "./worker-client.ts";

const ROWS = [
  RPC_ROW,
  RPC_IDLE_ROW,
  DNS_ROW,
  CLI_ROW,
  CREATE_PARALLEL_ROW,
  RECONCILE_ROW,
  TAP_POOL_ROW,
  RSS_STOPPED_ROW,
  VM_COLD_ROW,
  VM_FC_ROW,
  VM_OCI_ROW,
  VM_WARM_ROW,
  VM_CAT_ROW,
  PUBLISH_ROW,
  RSS_ROW,
  EXEC_STDIN_ROW,
  DISK_SPARSE_ROW,
  DISK_QCOW2_ROW,
  DISK_REFLINK_ROW,
  DISK_DM_ROW,
  IMAGE_PULL_ROW,
  IMAGE_SHARED_ROW,
  WS_PREPARE_ROW,
  CP_IN_ROW,
  VM_SNAP_ROW,
  VM_FORK_ROW,
  VM_SUSPEND_ROW,
  VM_POOL_ROW,
] as const;
type RowId = (typeof ROWS)[number]["id"];
const VM_ROW_IDS: readonly RowId[] = [
  "vm-cold",
  "vm-fc",
  "vm-oci",
  "vm-warm",
  "vm-cat",
  "publish",
  "rss",
  "exec-stdin",
  "ws-prepare",
  "cp-in",
  "vm-snap",
  "vm-fork",
  "vm-suspend",
  "vm-pool",
];
/** The whole bench ends (cleaning up) after this long, whatever state it is in. */
const OVERALL_CAP_MS = 30 * 60_000;

function log(line: string): void {
  process.stderr.write(`bench: ${line}\n`);
}

function selectedRows(): Set<RowId> {
  const only = process.env.BENCH_ONLY?.trim();
  if (!only) return new Set(ROWS.map((row) => row.id));
  const known = new Set<string>(ROWS.map((row) => row.id));
  const picked = only
    .split(",")
    .map((id) => id.trim())
    .filter(Boolean);
  const unknown = picked.filter((id) => !known.has(id));
  if (unknown.length > 0) {
    throw new Error(`BENCH_ONLY: unknown row ${unknown.join(", ")}; rows are ${[...known].join(", ")}`);
  }
  return new Set(picked as RowId[]);
}

/** Why the guest rows cannot run here, or null when they can. */
function vmSkipReason(): string | null {
  if (!isRoot()) return "needs root (netns, bridge, taps)";
  if (!onPath("qemu-system-x86_64")) return "qemu-system-x86_64 is not on PATH";
  if (!onPath("qemu-img")) return "qemu-img is not on PATH";
  if (!onPath("ssh")) return "ssh is not on PATH";
  const cached =
    existsSync(IMAGE_CACHE) &&
    readdirSync(IMAGE_CACHE).some((entry) => existsSync(join(IMAGE_CACHE, entry, "rootfs.ext4")));
  if (!cached) return `no built image in ${IMAGE_CACHE} (building one takes far longer than the bench)`;
  return null;
}

/** Runs one row; a failure becomes a row that says so, and the bench goes on. */
async function attempt(
  row: (typeof ROWS)[number],
  failures: string[],
  body: () => Promise<RowResult | RowResult[]>,
): Promise<RowResult[]> {
  if (failures.includes("interrupted")) return [skippedRow(row, "interrupted")];
  try {
    const result = await body();
    return Array.isArray(result) ? result : [result];
  } catch (error) {
    const message = error instanceof Error ? error.message : String(error);
    log(`${row.id} failed: ${message}`);
    failures.push(row.id);
    return [skippedRow(row, `failed: ${message.split("\n")[0]}`)];
  }
}

interface Session {
  env: BenchEnv;
  abort: AbortController;
  /** Every pid the bench started (directly or through its worker); swept at the end. */
  pids: Set<number>;
  cleanup: AsyncDisposableStack;
}

async function openSession(root: string, needsNetns: boolean): Promise<Session> {
  const cleanup = new AsyncDisposableStack();
  const abort = new AbortController();
  const pids = new Set<number>();
  try {
    const home = await mkdtemp("/tmp/bb-");
    cleanup.defer(() => rm(home, { recursive: true, force: true }));
    let netns: string | null = null;
    if (needsNetns) {
      netns = `banger-bench-${process.pid}`;
      await createNetns(netns);
      const name = netns;
      cleanup.defer(() => deleteNetns(name, log));
    }
    cleanup.defer(async () => {
      for (const pid of pids) {
        if (pidAlive(pid)) {
          log(`ending leftover pid ${pid}`);
          await stopPid(pid, 2000);
        }
      }
    });
    return { env: makeEnv({ root, home, netns, signal: abort.signal }), abort, pids, cleanup };
  } catch (error) {
    await cleanup.disposeAsync();
    throw error;
  }
}

async function runRows(session: Session, selected: Set<RowId>, failures: string[]): Promise<RowResult[]> {
  const { env, cleanup } = session;
  const onPid = (pid: number) => session.pids.add(pid);
  const results: RowResult[] = [];
  const vmSkip = vmSkipReason();
  const wantsVms = VM_ROW_IDS.some((id) => selected.has(id)) && vmSkip === null;

  let daemon: Daemon | undefined;
  const wantsDns = selected.has("dns") && dnsSkipReason(env) === null && vmSkip === null;
  if (selected.has("rpc") || selected.has("rpc-idle") || wantsVms || wantsDns) {
    // Only the binary: vmm.default stays "auto", so VMs that do not ask for a driver get QEMU as before.
    if (wantsVms && selected.has("vm-fc")) await writeFirecrackerConfig(env);
    log(`starting bangerd (BANGER_HOME=${env.home}${env.netns ? `, netns ${env.netns}` : ""})`);
    daemon = await startDaemon(env, onPid);
    const started = daemon;
    cleanup.defer(() => stopDaemon(env, started, log));
    log(`bangerd pid ${daemon.pid}`);
  }

  if (selected.has("rpc") && daemon) {
    const running = daemon;
    results.push(...(await attempt(RPC_ROW, failures, () => benchRpc({ env, daemon: running, onPid, log }))));
  }
  if (selected.has("rpc-idle") && daemon) {
    const running = daemon;
    results.push(
      ...(await attempt(RPC_IDLE_ROW, failures, () => benchRpcIdle({ env, daemon: running, log }))),
    );
  }
  if (selected.has("dns")) {
    const running = daemon;
    const skip = dnsSkipReason(env) ?? vmSkip;
    results.push(
      ...(skip !== null || !running
        ? [skippedRow(DNS_ROW, skip ?? "no daemon")]
        : await attempt(DNS_ROW, failures, () => benchDns({ env, daemon: running, log, onPid }))),
    );
  }
  if (selected.has("cli")) results.push(...(await attempt(CLI_ROW, failures, () => benchCli({ env, log }))));
  const lifecycle = { env, log, onPid };
  if (selected.has("create-parallel")) {
    results.push(...(await attempt(CREATE_PARALLEL_ROW, failures, () => benchCreateParallel(lifecycle))));
  }
  if (selected.has("reconcile")) {
    results.push(...(await attempt(RECONCILE_ROW, failures, () => benchReconcile(lifecycle))));
  }
  if (selected.has("tap-pool")) {
    const skip = tapPoolSkipReason();
    results.push(
      ...(skip !== null
        ? [skippedRow(TAP_POOL_ROW, skip)]
        : await attempt(TAP_POOL_ROW, failures, () => benchTapPool({ env, log }))),
    );
  }
  if (selected.has("rss-stopped")) {
    results.push(...(await attempt(RSS_STOPPED_ROW, failures, () => benchRssStopped(lifecycle))));
  }
  results.push(...(await runDiskRows(session, selected, failures)));
  results.push(...(await runImageRows(session, selected, failures)));

  const vmRows = ROWS.filter((row) => VM_ROW_IDS.includes(row.id) && selected.has(row.id));
  if (vmRows.length === 0) return results;
  if (vmSkip !== null || !daemon) {
    for (const row of vmRows) results.push(skippedRow(row, vmSkip ?? "no daemon"));
    return results;
  }
  // By name, as the daemon's default config spawns it, so both argv match word for word.
  const qemuBinary = "qemu-system-x86_64";
  let ctx: VmContext;
  try {
    ctx = await prepareVms({ env, daemon, log, onPid, qemuBinary });
  } catch (error) {
    const message = error instanceof Error ? error.message : String(error);
    log(`VM warm-up failed: ${message}`);
    for (const row of vmRows) {
      failures.push(row.id);
      results.push(skippedRow(row, `failed: warm-up VM: ${message.split("\n")[0]}`));
    }
    return results;
  }
  // First among the guest rows: its untimed warm-up makes the daemon probe the double once, so the
  // rows after it pay nothing for the extra config key.
  if (selected.has("vm-fc")) results.push(...(await attempt(VM_FC_ROW, failures, () => benchVmFc(ctx))));
  if (selected.has("vm-oci")) results.push(...(await attempt(VM_OCI_ROW, failures, () => benchVmOci(ctx))));
  let worker: VmWorker | undefined;
  const wantsWorkspace = selected.has("ws-prepare") || selected.has("cp-in");
  const needsWorker =
    selected.has("vm-cold") || selected.has("vm-warm") || selected.has("vm-cat") || wantsWorkspace;
  if (needsWorker) {
    worker = await startBaselineWorker(ctx);
    const started = worker;
    cleanup.defer(() => started.stop());
  }
  if (selected.has("vm-cold") && worker) {
    const w = worker;
    results.push(...(await attempt(VM_COLD_ROW, failures, () => benchVmCold(ctx, w))));
  }
  if ((selected.has("vm-warm") || selected.has("vm-cat")) && worker) {
    const w = worker;
    results.push(...(await attempt(VM_WARM_ROW, failures, () => benchVmWarm(ctx, w))));
  }
  if (selected.has("publish")) {
    results.push(...(await attempt(PUBLISH_ROW, failures, () => benchPublish(ctx))));
  }
  if (selected.has("rss")) results.push(...(await attempt(RSS_ROW, failures, () => benchRss(ctx))));
  if (selected.has("exec-stdin"))
    results.push(...(await attempt(EXEC_STDIN_ROW, failures, () => benchExecStdin(ctx))));
  if (selected.has("vm-snap") || selected.has("vm-fork") || selected.has("vm-suspend")) {
    const first = selected.has("vm-snap")
      ? VM_SNAP_ROW
      : selected.has("vm-fork")
        ? VM_FORK_ROW
        : VM_SUSPEND_ROW;
    results.push(...(await attempt(first, failures, () => benchSnapshotRows(ctx, selected))));
  }
  if (selected.has("vm-pool")) {
    const root = env.root;
    results.push(
      ...(await attempt(VM_POOL_ROW, failures, async () => [
        await benchPool({ root, signal: env.signal, log, onPid: (pid) => ctx.onPid(pid) }),
      ])),
    );
  }
  // Last: the longest guest rows; a full run that reaches the overall cap loses only these.
  if (wantsWorkspace && worker) {
    const w = worker;
    const first = selected.has("ws-prepare") ? WS_PREPARE_ROW : CP_IN_ROW;
    results.push(...(await attempt(first, failures, () => benchWorkspaceRows(ctx, w, selected))));
  }
  return results;
}

/** The image-* rows: one registry and one pair of images for both. */
async function runImageRows(
  session: Session,
  selected: Set<RowId>,
  failures: string[],
): Promise<RowResult[]> {
  const rows = [IMAGE_PULL_ROW, IMAGE_SHARED_ROW].filter((row) => selected.has(row.id));
  if (rows.length === 0) return [];
  const skip = imageSkipReason();
  if (skip !== null) return rows.map((row) => skippedRow(row, skip));
  const first = rows[0] as (typeof rows)[number];
  return attempt(first, failures, () =>
    benchImageRows({ env: session.env, log }, new Set(rows.map((row) => row.id))),
  );
}

/** The disk-* rows: one shared base (and XFS mount), removed when the rows are done or the bench ends. */
async function runDiskRows(session: Session, selected: Set<RowId>, failures: string[]): Promise<RowResult[]> {
  const rows = DISK_ROWS.filter((row) => selected.has(row.id));
  if (rows.length === 0) return [];
  const results: RowResult[] = [];
  await using disks = openDiskBench({ env: session.env, log, onPid: (pid) => session.pids.add(pid) });
  if (!session.cleanup.disposed) session.cleanup.defer(() => disks.close());
  for (const row of rows) {
    const skip = await diskSkipReason(row.id);
    if (skip !== null) {
      results.push(skippedRow(row, skip));
      continue;
    }
    results.push(...(await attempt(row, failures, () => disks.run(row.id))));
  }
  return results;
}

async function main(): Promise<number> {
  const json = process.argv.includes("--json");
  const selected = selectedRows();
  const root = resolve(import.meta.dirname, "..");
  // As root the daemon always runs in the bench's netns: at start-up it reconciles network
  // devices (it deletes `bgr-*` taps no VM of its own holds), and the host namespace's devices
  // are not the bench's business. rss-stopped starts daemons of its own.
  const needsDaemon =
    selected.has("rpc") ||
    selected.has("dns") ||
    selected.has("rss-stopped") ||
    (VM_ROW_IDS.some((id) => selected.has(id)) && vmSkipReason() === null);
  const needsNetns = isRoot() && needsDaemon;
  const session = await openSession(root, needsNetns);
  const failures: string[] = [];
  let cleaning: Promise<void> | undefined;
  const cleanUp = () => {
    cleaning ??= session.cleanup
      .disposeAsync()
      .catch((error: unknown) => log(`cleanup failed: ${String(error)}`));
    return cleaning;
  };
  const abort = (why: string, code: number) => {
    log(`${why}; cleaning up`);
    failures.push("interrupted");
    session.abort.abort(new Error(why));
    void cleanUp().finally(() => process.exit(code));
  };
  const onSigint = () => abort("interrupted", 130);
  const onSigterm = () => abort("terminated", 143);
  process.once("SIGINT", onSigint);
  process.once("SIGTERM", onSigterm);
  const cap = setTimeout(
    () => abort(`still running after ${OVERALL_CAP_MS / 60_000} min`, 1),
    OVERALL_CAP_MS,
  );
  cap.unref();

  const started = Date.now();
  let results: RowResult[];
  try {
    results = await runRows(session, selected, failures);
  } finally {
    await cleanUp();
    clearTimeout(cap);
  }
  const order = new Map<string, number>(ROWS.map((row, index) => [row.id, index]));
  results.sort((a, b) => (order.get(a.id) ?? 0) - (order.get(b.id) ?? 0));
  const meta = {
    node: process.versions.node,
    startedAt: new Date(started).toISOString(),
    durationS: Math.round((Date.now() - started) / 1000),
  };
  if (json) process.stdout.write(`${renderJson(results, meta)}\n`);
  else process.stdout.write(`${renderTable(results)}\n\n(${meta.durationS} s, Node ${meta.node})\n`);
  return failures.length > 0 ? 1 : 0;
}

process.exitCode = await main().catch((error: unknown) => {
  log(error instanceof Error ? (error.stack ?? error.message) : String(error));
  return 1;
});
