/**
 * An image's run defaults (ENTRYPOINT, CMD, ENV, WORKDIR, USER) and docker's
 * rules for combining them with the command a user gives: the user's args
 * replace CMD and are appended to ENTRYPOINT; with no args, ENTRYPOINT then
 * CMD run; the image's ENV comes first and the user's `-e` override it.
 * Pure.
 */
import type { ImageConfig } from "./manifest.ts";

export interface RunDefaults {
  entrypoint: string[];
  cmd: string[];
  env: string[];
  workdir: string | undefined;
  user: string | undefined;
}

export function runDefaultsOf(config: ImageConfig): RunDefaults {
  const c = config.config ?? {};
  return {
    entrypoint: c.Entrypoint ?? [],
    cmd: c.Cmd ?? [],
    env: c.Env ?? [],
    workdir: c.WorkingDir || undefined,
    user: c.User || undefined,
  };
}

/** The argv to run: docker's ENTRYPOINT/CMD rule. Empty when neither the image nor the user names one. */
export function commandFor(defaults: RunDefaults, args: readonly string[]): string[] {
  if (args.length > 0) return [...defaults.entrypoint, ...args];
  return [...defaults.entrypoint, ...defaults.cmd];
}

/** The image's ENV with the user's `K=V` entries replacing same-named ones. */
export function envFor(defaults: RunDefaults, given: readonly string[]): string[] {
  const merged = new Map<string, string>();
  for (const entry of [...defaults.env, ...given]) {
    const eq = entry.indexOf("=");
    merged.set(eq === -1 ? entry : entry.slice(0, eq), entry);
  }
  return [...merged.values()];
}
