/**
 * `vm cp` into a guest, the pure side: where each entry of the incoming tar
 * lands, by docker cp's rules.
 * - DEST is an existing directory: the entry lands inside it (a directory's
 *   contents, `SRC/.` or a tar on stdin, merge into it);
 * - DEST does not exist: the entry becomes DEST (its parent must exist; a
 *   trailing '/' on DEST needs a directory source);
 * - DEST is a file: only a file replaces it.
 */
import { BangerError, ErrorCode } from "../../protocol/index.ts";
import { entryComponents as layerComponents } from "../oci/index.ts";

/** What the tar holds: one entry named `base` (`file` or `dir`), or a directory's entries (`contents`). */
export type CopySource = "file" | "dir" | "contents";

export interface ReceivePlan {
  /** Where an entry named `base` (or, for contents, the tar's root) lands. */
  top: string;
  /** The tar's first component that maps onto `top`; null when the whole tar lands under `top`. */
  base: string | null;
  /** The path the copy made, as the CLI reports it. */
  finalPath: string;
}

export function planReceive(options: {
  dest: string;
  destKind: "dir" | "file" | "missing";
  parentIsDir: boolean;
  source: CopySource;
  base: string;
}): ReceivePlan {
  const { dest, destKind, source } = options;
  const trimmed = dest.replace(/\/+$/, "") || "/";
  if (destKind === "dir") {
    if (source === "contents") return { top: trimmed, base: null, finalPath: dest };
    return {
      top: joinGuest(trimmed, options.base),
      base: options.base,
      finalPath: joinGuest(dest, options.base),
    };
  }
  if (destKind === "file" && source !== "file")
    throw invalid(`cannot copy a directory onto ${dest}, which is not a directory`);
  if (dest.endsWith("/") && source === "file") throw invalid(`${dest} is not a directory`);
  if (destKind === "missing" && !options.parentIsDir)
    throw invalid(`${parentOf(trimmed)}: no such directory`);
  return { top: trimmed, base: source === "contents" ? null : options.base, finalPath: trimmed };
}

/**
 * The guest path of a tar entry under `plan`; undefined for an entry outside
 * what the copy names. A name leaving the tar's root ('..') is refused.
 */
export function receiveTarget(plan: ReceivePlan, entryName: string): string | undefined {
  const parts = entryComponents(entryName);
  if (plan.base === null) return parts.length === 0 ? plan.top : joinGuest(plan.top, parts.join("/"));
  const baseParts = entryComponents(plan.base);
  if (baseParts.length === 0 || baseParts.some((part, i) => parts[i] !== part)) return undefined;
  const rest = parts.slice(baseParts.length);
  return rest.length === 0 ? plan.top : joinGuest(plan.top, rest.join("/"));
}

/** A tar entry name as components: leading '/' (as tar does) and '.' dropped; '..' and NUL refused. */
function entryComponents(name: string): string[] {
  try {
    return layerComponents(name.replace(/^\/+/, ""));
  } catch (error) {
    throw invalid(`tar ${(error as Error).message}`, "tar entries may not hold '..' components or NUL bytes");
  }
}

/** The parent directory of an absolute guest path ('/' for '/'). */
export function parentOf(path: string): string {
  const at = path.replace(/\/+$/, "").lastIndexOf("/");
  return at <= 0 ? "/" : path.slice(0, at);
}

/** The last component of a guest path ('/' for '/'). */
export function baseOf(path: string): string {
  const trimmed = path.replace(/\/+$/, "");
  return trimmed === "" ? "/" : trimmed.slice(trimmed.lastIndexOf("/") + 1);
}

export function joinGuest(dir: string, name: string): string {
  return dir.endsWith("/") ? `${dir}${name}` : `${dir}/${name}`;
}

function invalid(message: string, hint = "check the guest path with `banger vm exec NAME -- ls -la PATH`") {
  return new BangerError(ErrorCode.INVALID_PARAMS, message, { hint });
}
