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
 * (else `/`, as docker has it) and USER apply when the caller names none.
 * The user is passed on whole (`user[:group]`, see checkUserSpec); the guest
 * agent resolves names in the guest's own /etc/passwd and /etc/group. An
 * argv that stays empty is INVALID_PARAMS.
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
    user:
      request.user !== undefined
        ? checkUserSpec(request.user, "--user")
        : defaults?.user === undefined
          ? undefined
          : checkUserSpec(defaults.user, "the image's USER"),
  };
}

export interface UserSpec {
  /** A user name, or a uid when all digits. */
  user: string;
  /** A group name or gid; undefined means the user's own groups (docker's rule). */
  group: string | undefined;
}

/** A passwd or group name as Debian and busybox accept them (no colon, no space, no leading '-'). */
const NAME = /^[A-Za-z0-9_.][A-Za-z0-9_.@$-]{0,255}$/;
const ID = /^\d+$/;
const MAX_ID = 2 ** 32 - 2;

/**
 * docker's `user[:group]`: each part a name (looked up in the guest's
 * /etc/passwd or /etc/group) or a number. With a group, the process gets
 * that group only; without, the user's primary and supplementary groups.
 * A malformed spec is INVALID_PARAMS naming `source` and the culprit.
 */
export function parseUserSpec(spec: string, source = "--user"): UserSpec {
  const parts = spec.split(":");
  const bad = (why: string) =>
    new BangerError(ErrorCode.INVALID_PARAMS, `${source} '${spec}' is not a user: ${why}`, {
      hint: "give `user`, `user:group`, `uid` or `uid:gid`, e.g. `-u www-data`, `-u 1000:1000`",
    });
  if (parts.length > 2) throw bad("it has more than one ':'");
  const [user = "", group] = parts;
  for (const [label, part] of [
    ["user", user],
    ["group", group],
  ] as const) {
    if (part === undefined) continue;
    if (part === "") throw bad(`the ${label} is empty`);
    if (ID.test(part)) {
      if (part.length > 10 || Number(part) > MAX_ID) throw bad(`${label} id ${part} is out of range`);
    } else if (!NAME.test(part)) {
      throw bad(`'${part}' is not a valid ${label} name`);
    }
  }
  return { user, group };
}

/** The spec unchanged, once parseUserSpec accepts it. */
function checkUserSpec(spec: string, source: string): string {
  parseUserSpec(spec, source);
  return spec;
}
