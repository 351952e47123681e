/**
 * Row "cli": cold start of `bin/banger --version` (the esbuild bundle under
 * the package's Node) next to `node -e 0` with the same Node binary,
 * alternating runs.
 */
import { existsSync } from "node:fs";
import { join } from "node:path";
import type { BenchEnv } from "./env.ts";
import { runChecked } from "./proc.ts";
import { pairedRow, type RowResult } from "./report.ts";
import { alternate } from "./stats.ts";

const RUNS = 15;
const WARMUP = 2;
const BUDGET_MS = 60_000;

export const CLI_ROW = {
  id: "cli",
  benchmark: "CLI cold start (--version)",
  unit: "ms",
  goal: "≤2.5x",
} as const;

export async function benchCli(options: { env: BenchEnv; log: (line: string) => void }): Promise<RowResult> {
  const { env } = options;
  const bundle = join(env.root, "dist", "banger.mjs");
  if (!existsSync(bundle)) {
    options.log("cli: dist/banger.mjs is missing; building it (npm run build)");
    await runChecked([env.node, join(env.root, "scripts", "build-cli.mjs")], { timeoutMs: 120_000 });
  }
  const bangerArgv = [join(env.root, "bin", "banger"), "--version"];
  const baselineArgv = [env.node, "-e", "0"];
  const timed = async (argv: string[]) =>
    (await runChecked(argv, { env: env.bangerEnv, timeoutMs: 30_000, signal: env.signal })).ms;
  for (let i = 0; i < WARMUP; i++) {
    await timed(bangerArgv);
    await timed(baselineArgv);
  }
  options.log(`cli: ${RUNS} runs each, alternating`);
  const samples = await alternate({
    runs: RUNS,
    budgetMs: BUDGET_MS,
    signal: env.signal,
    banger: () => timed(bangerArgv),
    baseline: () => timed(baselineArgv),
  });
  const notes = [`${samples.banger.length} runs each; spawn to exit; baseline = ${env.node} -e 0`];
  if (samples.stoppedEarly) notes.push(`stopped early at the ${BUDGET_MS / 1000} s cap`);
  return pairedRow(CLI_ROW, samples, notes);
}
