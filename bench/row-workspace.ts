/**
 * The workspace rows, on one running VM with the worker's ControlMaster to
 * it (all inside the bench's network namespace):
 * - "ws-prepare": `banger vm workspace prepare` of a repository with 100 MiB
 *   of tracked files next to `git archive HEAD | ssh -S CONTROL tar -x`;
 * - "cp-in": `banger vm cp` of a 100 MiB file into the guest next to `scp`
 *   over the same ControlMaster.
 * Each run writes to a fresh guest path; the VM is deleted at the end.
 */
import { writeFile } from "node:fs/promises";
import { join } from "node:path";
import type { VmInfo } from "../src/protocol/index.ts";
import { bangerChecked } from "./env.ts";
import { runChecked } from "./proc.ts";
import { pairedRow, type RowResult } from "./report.ts";
import type { VmContext } from "./row-vm.ts";
import { alternate } from "./stats.ts";
import type { VmWorker } from "./worker-client.ts";

export const WS_PREPARE_ROW = {
  id: "ws-prepare",
  benchmark: "workspace prepare, 100 MiB repo",
  unit: "ms",
  goal: "≤1.0x",
} as const;
export const CP_IN_ROW = {
  id: "cp-in",
  benchmark: "vm cp of 100 MiB into the guest",
  unit: "ms",
  goal: "≤1.0x",
} as const;

const RUNS = 3;
const BUDGET_MS = 240_000;
const TIMEOUT_MS = 300_000;
const FILES = 100;
const MIB = 1024 * 1024;
const ARCHIVE_SCRIPT = 'git -C "$1" archive HEAD | ssh $SSH $GUEST "mkdir -p $2 && tar -x -C $2"';
const SCP_SCRIPT = 'scp -q $SSH "$1" "$GUEST:$2"';

export async function benchWorkspaceRows(
  ctx: VmContext,
  worker: VmWorker,
  wanted: ReadonlySet<string>,
): Promise<RowResult[]> {
  const name = "bench-ws";
  ctx.log(`ws: creating VM ${name} and a ${FILES} MiB repository (not timed)`);
  const vm = JSON.parse(
    (await bangerChecked(ctx.env, ["vm", "create", name, "--disk", "4", "--json"], TIMEOUT_MS)).stdout,
  ) as VmInfo;
  await using stack = new AsyncDisposableStack();
  stack.defer(async () => {
    await bangerChecked(ctx.env, ["vm", "delete", "--force", name], 60_000);
  });
  await worker.request(
    { op: "master-open", ip: vm.guestIp, knownHostsFile: join(vm.dir, "known_hosts") },
    30_000,
  );
  stack.defer(async () => {
    await worker.request({ op: "master-close" }, 30_000);
  });
  const repo = join(ctx.env.home, "ws-repo");
  await runChecked(["git", "init", "-q", repo], { timeoutMs: 10_000 });
  for (let i = 0; i < FILES; i++) {
    await runChecked(["sh", "-c", 'head -c 1048576 /dev/urandom >"$1"', "bench", join(repo, `f${i}.bin`)], {
      timeoutMs: 10_000,
    });
  }
  await writeFile(join(repo, "README"), "bench\n");
  const git = ["git", "-C", repo, "-c", "user.name=bench", "-c", "user.email=bench@localhost"];
  await runChecked([...git, "add", "."], { timeoutMs: 60_000 });
  await runChecked([...git, "commit", "-q", "-m", "bench"], { timeoutMs: 60_000 });
  const results: RowResult[] = [];
  const sshNote = `baseline over ssh -S CONTROL -o ControlMaster=no root@${vm.guestIp}, spawned inside the netns`;

  /** Alternates banger and the baseline, each run writing to guest path number `run`. */
  const paired = async (
    row: typeof WS_PREPARE_ROW | typeof CP_IN_ROW,
    bangerArgs: (run: number) => string[],
    baseline: { script: string; args: (run: number) => string[] },
    note: string,
  ) => {
    let run = 0;
    const samples = await alternate({
      runs: RUNS,
      budgetMs: BUDGET_MS,
      signal: ctx.env.signal,
      banger: async () => {
        run += 1;
        return (await bangerChecked(ctx.env, bangerArgs(run), TIMEOUT_MS)).ms;
      },
      baseline: async () =>
        (
          await worker.request(
            { op: "mux-shell", script: baseline.script, args: baseline.args(run) },
            TIMEOUT_MS,
          )
        ).ms as number,
      afterEach: (i, b, a) =>
        ctx.log(`${row.id}: run ${i}: banger ${Math.round(b)} ms, baseline ${Math.round(a)} ms`),
    });
    results.push(pairedRow(row, samples, [`${samples.banger.length} runs each; ${note}; ${sshNote}`]));
  };

  if (wanted.has(WS_PREPARE_ROW.id)) {
    await paired(
      WS_PREPARE_ROW,
      (run) => ["vm", "workspace", "prepare", name, "--repo", repo, "--path", `/root/ws/p${run}`],
      { script: ARCHIVE_SCRIPT, args: (run) => [repo, `/root/ws/a${run}`] },
      `${FILES} files of 1 MiB random, one commit; banger = CLI spawn to exit (pack, stream, agent writes the pack from a lane, checkout); baseline = git archive HEAD | ssh tar -x`,
    );
  }
  if (wanted.has(CP_IN_ROW.id)) {
    const file = join(ctx.env.home, "cp.bin");
    await runChecked(["sh", "-c", 'head -c $2 /dev/urandom >"$1"', "bench", file, String(100 * MIB)], {
      timeoutMs: 30_000,
    });
    await paired(
      CP_IN_ROW,
      (run) => ["vm", "cp", file, `${name}:/root/cp${run}`],
      { script: SCP_SCRIPT, args: (run) => [file, `/root/scp${run}`] },
      "one 100 MiB random file; banger = CLI spawn to exit (tar stream to the daemon, agent writes from a lane); baseline = scp",
    );
  }
  return results;
}
