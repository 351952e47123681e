/**
 * An image's run defaults (ENTRYPOINT, CMD, ENV, WORKDIR, USER) and docker's
 * rules for combining them with the command a user gives: the user's args
 * replace CMD and are appended to ENTRYPOINT; with no args, ENTRYPOINT then
 * CMD run; the image's ENV comes first and the user's `-e` override it.
 * Pure.
 */
import { BangerError, ErrorCode } from "../../protocol/index.ts";
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

export interface ExecRequest {
  argv: readonly string[];
  env?: readonly string[] | undefined;
  cwd?: string | undefined;
  user?: string | undefined;
  /** docker run: `argv` are arguments to ENTRYPOINT (they replace CMD); else (docker exec) the whole command. */
  entrypoint?: boolean | undefined;
}

/**
 * A command to run in a VM of an image with these defaults: no argv runs
 * ENTRYPOINT then CMD; the image's ENV comes before the caller's; WORKDIR
 * (else `/`, as docker has it) and USER apply when the caller names none
 * (USER `name:group` runs as `name`:
 * the guest agent sets the user's own groups). An argv that stays empty is
 * INVALID_PARAMS.
 */
export function applyRunDefaults(
  defaults: RunDefaults | undefined,
  request: ExecRequest,
): { argv: string[]; env: string[] | undefined; cwd: string | undefined; user: string | undefined } {
  const argv =
    defaults === undefined
      ? [...request.argv]
      : request.argv.length === 0 || request.entrypoint === true
        ? commandFor(defaults, request.argv)
        : [...request.argv];
  if (argv.length === 0) {
    throw new BangerError(
      ErrorCode.INVALID_PARAMS,
      defaults === undefined
        ? "no command given"
        : "no command given, and the image has no ENTRYPOINT or CMD",
      { hint: "give the command after `--`, e.g. `banger vm run -- uname -a`" },
    );
  }
  const env =
    defaults === undefined || defaults.env.length === 0 ? request.env : envFor(defaults, request.env ?? []);
  return {
    argv,
    env: env === undefined ? undefined : [...env],
    cwd: request.cwd ?? (defaults === undefined ? undefined : (defaults.workdir ?? "/")),
    user: request.user ?? (defaults?.user?.split(":")[0] || undefined),
  };
}
