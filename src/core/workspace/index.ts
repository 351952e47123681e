/**
 * Workspaces, file copy and auth sync, the pure side: the guest shell
 * programs (scripts.ts), docker cp's destination rules (copy.ts), a
 * streaming tar writer (tar.ts), the default guest path and the parsing of
 * an export's `meta`.
 */

export {
  type AuthMaterial,
  type AuthRecord,
  authDigest,
  holdsMaterial,
  parseAuthRecord,
} from "./auth-record.ts";
export {
  baseOf,
  type CopySource,
  joinGuest,
  parentOf,
  planReceive,
  type ReceivePlan,
  receiveTarget,
} from "./copy.ts";
export {
  AUTH_SCRIPT,
  EXPORT_SCRIPT,
  gitConfigValue,
  PREPARE_SCRIPT,
  STAGE_SCRIPT,
  shellProgram,
  UNSTAGE_SCRIPT,
} from "./scripts.ts";

/**
 * In a VM's directory: its auth record (auth-record.ts): the guest paths
 * `vm auth sync` wrote, scrubbed by `image promote`, and the digest of what
 * it wrote. A snapshot keeps its source's copy, and its clones inherit it.
 */
export const AUTH_FILES_JSON = "auth-files.json";

/** Where a repository goes in the guest when `--path` is not given: /root/work/<dir name>. */
export function defaultGuestPath(hostRepoPath: string): string {
  const name = hostRepoPath.replace(/\/+$/, "").split("/").pop() || "repo";
  return `/root/work/${name}`;
}

export interface ExportMeta {
  head: string;
  /** The tree of the work tree as export saw it (HEAD's tree when clean). */
  tree: string;
  /** The commit an export carries: HEAD, or a commit of the uncommitted work on top of it. */
  tip: string;
  commits: number;
  dirty: boolean;
}

/** Parses the `meta` file an export writes; throws on anything missing. */
export function parseExportMeta(text: string): ExportMeta {
  const fields = new Map<string, string>();
  for (const line of text.split("\n")) {
    const space = line.indexOf(" ");
    if (space > 0) fields.set(line.slice(0, space), line.slice(space + 1).trim());
  }
  const need = (key: string) => {
    const value = fields.get(key);
    if (value === undefined || value === "") throw new Error(`export meta lacks '${key}'`);
    return value;
  };
  return {
    head: need("head"),
    tree: need("tree"),
    tip: need("tip"),
    commits: Number.parseInt(need("commits"), 10),
    dirty: need("dirty") === "1",
  };
}

/** True when the workspace holds work that is neither its base nor the last confirmed export. */
export function hasUnexportedWork(options: {
  base: string;
  state: ExportMeta;
  exported: { head: string; tree: string } | null;
}): boolean {
  const { base, state, exported } = options;
  if (state.head === base && !state.dirty) return false;
  if (exported && exported.head === state.head && exported.tree === state.tree) return false;
  return true;
}

export { TAR_END, type TarEntry, type TarHeader, tarArchive, tarHeader, tarPadding } from "./tar.ts";
