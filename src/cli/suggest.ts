/**
 * "Did you mean": for a VM name the daemon does not know, the closest name
 * it does know becomes the error's hint.
 */
import { BangerError, ErrorCode } from "../protocol/index.ts";
import type { CliContext } from "./context.ts";

/** The candidate closest to `word` by edit distance, if it is close enough to be a typo. */
function closest(word: string, candidates: readonly string[]): string | undefined {
  const limit = Math.max(1, Math.floor(word.length / 3));
  let best: { name: string; distance: number } | undefined;
  for (const name of candidates) {
    const distance = name.startsWith(word) && word.length >= 2 ? 1 : editDistance(word, name);
    if (distance <= limit && (!best || distance < best.distance)) best = { name, distance };
  }
  return best?.name;
}

/** Levenshtein distance, with a swap of two neighbours counted as one edit. */
function editDistance(a: string, b: string): number {
  const rows = Array.from({ length: a.length + 1 }, (_, i) => [i, ...Array<number>(b.length).fill(0)]);
  for (let j = 1; j <= b.length; j++) rows[0]![j] = j;
  for (let i = 1; i <= a.length; i++) {
    for (let j = 1; j <= b.length; j++) {
      const cost = a[i - 1] === b[j - 1] ? 0 : 1;
      let value = Math.min(rows[i - 1]![j]! + 1, rows[i]![j - 1]! + 1, rows[i - 1]![j - 1]! + cost);
      if (i > 1 && j > 1 && a[i - 1] === b[j - 2] && a[i - 2] === b[j - 1])
        value = Math.min(value, rows[i - 2]![j - 2]! + 1);
      rows[i]![j] = value;
    }
  }
  return rows[a.length]![b.length]!;
}

const NOT_FOUND_NAME = /no VM named '([^']*)'/;

/** `error` with "did you mean" as its hint when it is an unknown VM name close to a known one. */
export async function suggestVmName(ctx: Pick<CliContext, "client">, error: unknown): Promise<unknown> {
  if (!(error instanceof BangerError) || error.code !== ErrorCode.VM_NOT_FOUND) return error;
  const wanted =
    typeof error.data?.name === "string" ? error.data.name : NOT_FOUND_NAME.exec(error.message)?.[1];
  if (wanted === undefined) return error;
  try {
    const { vms } = await (await ctx.client()).call("vm.list", {});
    const guess = closest(
      wanted,
      vms.map((vm) => vm.name),
    );
    if (guess === undefined) return error;
    return new BangerError(error.code, error.message, {
      hint: `did you mean '${guess}'? (\`banger vm list\` shows every VM)`,
      data: error.data,
    });
  } catch {
    return error;
  }
}
