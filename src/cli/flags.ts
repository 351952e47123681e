/**
 * Parsing of flag values shared by commands: whole numbers, and sizes with
 * units in the style of docker (`--memory 1g`, `512m`, `2GiB`), each refusal
 * naming the flag and the value.
 */
import { parseDurationMs } from "../core/units.ts";
import { BangerError, ErrorCode } from "../protocol/index.ts";

export function parseInteger(flag: string, value: string): number {
  const parsed = Number(value);
  if (value.trim() === "" || !Number.isInteger(parsed))
    throw new BangerError(ErrorCode.INVALID_PARAMS, `${flag} must be a whole number, not '${value}'`, {
      hint: `give digits only, such as ${flag} 2`,
    });
  return parsed;
}

export function positiveInt(flag: string, value: string): number {
  const parsed = parseInteger(flag, value);
  if (parsed < 1)
    throw new BangerError(
      ErrorCode.INVALID_PARAMS,
      `${flag} must be a positive whole number, not '${value}'`,
      { hint: `give 1 or more, such as ${flag} 2` },
    );
  return parsed;
}

const UNIT_POWERS: Readonly<Record<string, number>> = { b: 0, k: 1, m: 2, g: 3, t: 4 };

/**
 * A size in `unit` (MiB or GiB, both binary): a bare number is already in
 * `unit`; k, m, g, t (with optional "i" and "b", any case) are binary
 * multiples, as docker reads them. The result must be a whole number of `unit`.
 */
export function parseSize(flag: string, value: string, unit: "MiB" | "GiB"): number {
  const match = /^\s*(\d+(?:\.\d+)?)\s*(?:([kmgtb])(?:i?b)?)?\s*$/i.exec(value);
  const refuse = (why: string) =>
    new BangerError(ErrorCode.INVALID_PARAMS, `${flag} ${why}, not '${value}'`, {
      hint: `e.g. ${flag} ${unit === "MiB" ? "2048, 512m or 2g" : "10, 10g or 10GiB"}`,
    });
  if (!match) throw refuse("must be a size such as 2g or 512m");
  const amount = Number(match[1]);
  if (match[2] === undefined) {
    if (!Number.isInteger(amount)) throw refuse(`must be a whole number of ${unit}`);
    return amount;
  }
  const bytes = amount * 1024 ** UNIT_POWERS[match[2].toLowerCase()]!;
  const inUnit = bytes / 1024 ** (unit === "MiB" ? 2 : 3);
  if (!Number.isInteger(inUnit)) throw refuse(`must be a whole number of ${unit}`);
  return inUnit;
}

/** A duration such as 30s, 1.5m, 2h or 500ms (a bare number is seconds), in whole milliseconds > 0. */
export function parseDuration(flag: string, value: string): number {
  const ms = parseDurationMs(value);
  if (ms === undefined) {
    throw new BangerError(
      ErrorCode.INVALID_PARAMS,
      `${flag} must be a duration such as 30s, 5m or 1h, not '${value}'`,
      {
        hint: "units: ms, s, m, h; a bare number is seconds",
      },
    );
  }
  return ms;
}
