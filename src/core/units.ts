/** Byte units, defined once. Binary multiples: a GiB is 1024 ** 3 bytes. */
export const KIB = 1024;
export const MIB = 1024 ** 2;
export const GIB = 1024 ** 3;

const DURATION_UNITS_MS: Readonly<Record<string, number>> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000 };

/** A duration such as 30s, 1.5m, 2h or 500ms (a bare number is seconds) in whole milliseconds; undefined unless > 0. */
export function parseDurationMs(value: string): number | undefined {
  const match = /^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$/.exec(value);
  const ms = match ? Math.round(Number(match[1]) * DURATION_UNITS_MS[match[2] ?? "s"]!) : Number.NaN;
  return ms > 0 ? ms : undefined;
}
