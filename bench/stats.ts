/** Summary statistics of timing samples (nearest-rank percentiles). */

export interface Summary {
  n: number;
  min: number;
  p50: number;
  p99: number;
  max: number;
  mean: number;
}

/** Nearest-rank percentile of an ascending array; `q` in (0, 1]. */
function percentile(sorted: readonly number[], q: number): number {
  const rank = Math.max(1, Math.ceil(q * sorted.length));
  return sorted[rank - 1] ?? Number.NaN;
}

export function summarize(samples: readonly number[]): Summary {
  const sorted = [...samples].sort((a, b) => a - b);
  const total = sorted.reduce((sum, value) => sum + value, 0);
  return {
    n: sorted.length,
    min: sorted[0] ?? Number.NaN,
    p50: percentile(sorted, 0.5),
    p99: percentile(sorted, 0.99),
    max: sorted[sorted.length - 1] ?? Number.NaN,
    mean: sorted.length === 0 ? Number.NaN : total / sorted.length,
  };
}

/** The median of a few samples, for values sampled rather than timed (RSS). */
export function median(samples: readonly number[]): number {
  return percentile(
    [...samples].sort((a, b) => a - b),
    0.5,
  );
}

/**
 * Runs banger and the baseline in alternation, `runs` times each, stopping
 * early at the time budget or on abort. `stoppedEarly` says whether it did.
 */
export async function alternate(options: {
  runs: number;
  budgetMs: number;
  signal: AbortSignal;
  banger: () => Promise<number>;
  baseline: () => Promise<number>;
  afterEach?: (run: number, bangerMs: number, baselineMs: number) => void;
}): Promise<{ banger: number[]; baseline: number[]; stoppedEarly: boolean }> {
  const banger: number[] = [];
  const baseline: number[] = [];
  const started = Date.now();
  while (banger.length < options.runs && Date.now() - started < options.budgetMs && !options.signal.aborted) {
    const bangerMs = await options.banger();
    const baselineMs = await options.baseline();
    banger.push(bangerMs);
    baseline.push(baselineMs);
    options.afterEach?.(banger.length, bangerMs, baselineMs);
  }
  return { banger, baseline, stoppedEarly: banger.length < options.runs };
}
