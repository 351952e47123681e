/** Benchmark rows and their rendering: a plain-text table or JSON. */
import { type Summary, summarize } from "./stats.ts";

export type Unit = "µs" | "ms" | "MiB";

export interface RowResult {
  /** The id BENCH_ONLY selects by. */
  id: string;
  benchmark: string;
  unit: Unit;
  goal: string;
  banger: Summary | null;
  baseline: Summary | null;
  /** The statistic shown in the p50 columns and used for the ratio; p50 unless a row says otherwise. */
  statistic: "p50" | "p99";
  /** A single measured value rather than a distribution: the max column shows "-". */
  single: boolean;
  /** Set when the row did not run, with the reason. */
  skipped: string | null;
  notes: string[];
}

export function skippedRow(base: Pick<RowResult, "id" | "benchmark" | "unit" | "goal">, reason: string) {
  return {
    ...base,
    banger: null,
    baseline: null,
    statistic: "p50",
    single: false,
    skipped: reason,
    notes: [],
  } satisfies RowResult;
}

export const TABLE_HEADER = [
  "benchmark",
  "banger p50",
  "banger max",
  "baseline p50",
  "baseline max",
  "ratio (p50)",
  "goal",
] as const;

export function ratioOf(row: RowResult): number | null {
  if (!row.banger || !row.baseline) return null;
  const top = row.banger[row.statistic];
  const bottom = row.baseline[row.statistic];
  return bottom > 0 ? top / bottom : null;
}

function formatValue(value: number | undefined, unit: Unit): string {
  if (value === undefined || Number.isNaN(value)) return "-";
  if (unit === "MiB") return `${value.toFixed(2)} MiB`;
  if (unit === "µs") return `${value < 100 ? value.toFixed(1) : Math.round(value)} µs`;
  if (value >= 1000) return `${(value / 1000).toFixed(2)} s`;
  return `${value < 10 ? value.toFixed(2) : value < 100 ? value.toFixed(1) : Math.round(value)} ms`;
}

function cells(row: RowResult): string[] {
  if (row.skipped !== null) return [row.benchmark, "skipped (see notes)", "-", "-", "-", "-", row.goal];
  const stat = row.statistic;
  const ratio = ratioOf(row);
  const max = (summary: Summary | null) =>
    row.single || !summary ? "-" : formatValue(summary.max, row.unit);
  return [
    row.benchmark,
    formatValue(row.banger?.[stat], row.unit),
    max(row.banger),
    formatValue(row.baseline?.[stat], row.unit),
    max(row.baseline),
    ratio === null ? "-" : `${ratio.toFixed(2)}x`,
    row.goal,
  ];
}

/** A Markdown-compatible pipe table, followed by each row's notes. */
export function renderTable(rows: readonly RowResult[]): string {
  const body = rows.map(cells);
  const widths = TABLE_HEADER.map((title, column) =>
    Math.max(title.length, ...body.map((line) => (line[column] ?? "").length)),
  );
  const line = (values: readonly string[]) =>
    `| ${values.map((value, column) => value.padEnd(widths[column] ?? 0)).join(" | ")} |`;
  const rule = `|${widths.map((width) => "-".repeat(width + 2)).join("|")}|`;
  const notes = rows.flatMap((row) =>
    [...(row.skipped === null ? [] : [`skipped: ${row.skipped}`]), ...row.notes].map(
      (note) => `- ${row.id}: ${note}`,
    ),
  );
  return [line(TABLE_HEADER), rule, ...body.map(line), ...(notes.length > 0 ? ["", ...notes] : [])].join(
    "\n",
  );
}

export function renderJson(rows: readonly RowResult[], meta: Record<string, unknown>): string {
  return JSON.stringify({ ...meta, rows: rows.map((row) => ({ ...row, ratio: ratioOf(row) })) }, null, 2);
}

/** A row comparing banger's samples with the baseline's, both summarised. */
export function pairedRow(
  base: Pick<RowResult, "id" | "benchmark" | "unit" | "goal">,
  samples: { banger: readonly number[]; baseline: readonly number[] },
  notes: string[],
): RowResult {
  return {
    ...base,
    banger: summarize(samples.banger),
    baseline: summarize(samples.baseline),
    statistic: "p50",
    single: false,
    skipped: null,
    notes,
  };
}
