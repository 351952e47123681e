/**
 * What one tar entry of an image layer means for the tree it is applied to,
 * as pure functions: name normalisation (a leading `./` or `/` of the
 * archive root, never `..`), whiteouts (`.wh.NAME` removes NAME from lower
 * layers, `.wh..wh..opq` empties its directory of lower layers' entries),
 * and symlink resolution confined to the tree. Whiteouts follow the OCI
 * image spec's layer changeset rules.
 */

const WHITEOUT_PREFIX = ".wh.";
const OPAQUE_MARKER = ".wh..wh..opq";
const MAX_SYMLINK_HOPS = 40;

/** An entry that would reach outside the tree; the flattener names layer and entry. */
export class LayerEscapeError extends Error {
  readonly entry: string;
  constructor(entry: string, why: string) {
    super(`entry "${entry}" ${why}`);
    this.name = "LayerEscapeError";
    this.entry = entry;
  }
}

/**
 * Normalises an entry name to tree-relative components. `.`, `./` and empty
 * components drop; a leading `/` is an absolute name and refused, as is any
 * `..` component. The archive root itself gives [].
 */
export function entryComponents(name: string): string[] {
  if (name.startsWith("/")) throw new LayerEscapeError(name, "has an absolute name");
  if (name.includes("\0")) throw new LayerEscapeError(name, "has a NUL byte in its name");
  const parts: string[] = [];
  for (const part of name.split("/")) {
    if (part === "" || part === ".") continue;
    if (part === "..") throw new LayerEscapeError(name, 'has a ".." component');
    parts.push(part);
  }
  return parts;
}

export type EntryMeaning =
  | { kind: "root" }
  | { kind: "whiteout"; parent: string[]; name: string }
  | { kind: "opaque"; dir: string[] }
  | { kind: "node"; path: string[] };

export function classifyEntry(name: string): EntryMeaning {
  const parts = entryComponents(name);
  const base = parts.at(-1);
  if (base === undefined) return { kind: "root" };
  const parent = parts.slice(0, -1);
  if (base === OPAQUE_MARKER) return { kind: "opaque", dir: parent };
  if (base.startsWith(WHITEOUT_PREFIX)) {
    const target = base.slice(WHITEOUT_PREFIX.length);
    if (target === "" || target === "." || target === "..") {
      throw new LayerEscapeError(name, "is a whiteout of no valid name");
    }
    return { kind: "whiteout", parent, name: target };
  }
  return { kind: "node", path: parts };
}

/** Reads a tree-relative path's symlink target, or undefined when it is not a symlink (or missing). */
export type ReadLinkInTree = (relative: string) => string | undefined;

/**
 * Resolves the directories leading to a tree path the way a chroot at the
 * tree would, so writing the result never leaves the tree: absolute link
 * targets restart at the tree root; a relative target that climbs above the
 * root is an escape. The last component is not followed (an entry replaces
 * a symlink, it never writes through one).
 */
export function resolveParents(
  path: readonly string[],
  readLink: ReadLinkInTree,
  entryName: string,
): string[] {
  const base = path.at(-1);
  if (base === undefined) return [];
  return [...resolveDir(path.slice(0, -1), readLink, entryName), base];
}

function resolveDir(components: readonly string[], readLink: ReadLinkInTree, entryName: string): string[] {
  const resolved: string[] = [];
  const pending = [...components];
  let hops = 0;
  while (pending.length > 0) {
    const part = pending.shift() as string;
    if (part === "" || part === ".") continue;
    if (part === "..") {
      if (resolved.length === 0)
        throw new LayerEscapeError(entryName, "goes through a symlink that leads outside the tree");
      resolved.pop();
      continue;
    }
    const candidate = [...resolved, part];
    const target = readLink(candidate.join("/"));
    if (target === undefined) {
      resolved.push(part);
      continue;
    }
    hops += 1;
    if (hops > MAX_SYMLINK_HOPS) throw new LayerEscapeError(entryName, "goes through a symlink loop");
    if (target.startsWith("/")) resolved.length = 0;
    pending.unshift(...target.split("/"));
  }
  return resolved;
}
