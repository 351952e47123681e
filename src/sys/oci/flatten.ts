/**
 * Applies image layers, in order, to a directory tree: whiteouts and opaque
 * directories per the OCI layer changeset rules, every write confined to
 * the tree (absolute names, `..`, and symlink or hardlink escapes are
 * refused naming the layer and the entry), with modes (setuid included),
 * owners, times, xattrs and device nodes kept. Each layer's compressed
 * digest and uncompressed diff_id are checked while it streams; the
 * compression is sniffed from the magic bytes (gzip, zstd or plain tar).
 * Runs as root (owners), in the pull worker process, never in the daemon.
 */
import { execFileSync } from "node:child_process";
import { createHash, type Hash } from "node:crypto";
import { createReadStream, lstatSync, readlinkSync } from "node:fs";
import { chmod, lchown, link, lstat, lutimes, mkdir, open, readdir, rm, symlink } from "node:fs/promises";
import { join } from "node:path";
import { PassThrough, Transform } from "node:stream";
import { pipeline } from "node:stream/promises";
import { createGunzip, createZstdDecompress } from "node:zlib";
import { type Header, extract as tarExtract } from "tar-stream";
import { classifyEntry, entryComponents, LayerEscapeError, resolveParents } from "../../core/oci/index.ts";
import { BangerError, ErrorCode } from "../../protocol/index.ts";

/** Bytes per read and per decompressed chunk: large, so a layer moves in few calls and few buffers. */
const LAYER_CHUNK = 1024 * 1024;

export interface LayerToApply {
  /** The layer blob (compressed or plain tar) in the cache. */
  file: string;
  /** Its compressed digest; checked again as `file` is read unless `digestChecked`. */
  digest: string;
  /**
   * The file's digest and size were checked by this process as it entered
   * the cache (a blob fetched by this pull), so reading it does not hash it
   * again. The diff_id is checked either way.
   */
  digestChecked?: boolean | undefined;
  /** The config's diff_id for it (sha256 of the plain tar), when known. */
  diffId: string | undefined;
}

/** Applies layers one by one; times of directories are set once at the end. */
export class TreeFlattener {
  private readonly tree: string;
  private readonly dirTimes = new Map<string, Date>();

  constructor(tree: string) {
    this.tree = tree;
  }

  async apply(layer: LayerToApply, index: number, signal?: AbortSignal): Promise<void> {
    const label = `layer ${index + 1} (${layer.digest.slice(0, 19)})`;
    const written = new Set<string>();
    const compressedHash = createHash("sha256");
    const plainHash = createHash("sha256");
    const extract = tarExtract();
    const feeding = pipeline(
      createReadStream(layer.file, { highWaterMark: LAYER_CHUNK }),
      layer.digestChecked ? new PassThrough({ highWaterMark: LAYER_CHUNK }) : hashing(compressedHash),
      decompressor(compressionOf(await readMagic(layer.file))),
      hashing(plainHash),
      tarEnd(),
      extract,
      { signal },
    );
    let entryName = "";
    try {
      for await (const entry of extract) {
        entryName = entry.header.name;
        await this.applyEntry(entry.header, entry, written);
        entry.resume();
      }
      await feeding;
    } catch (error) {
      extract.destroy();
      await feeding.catch(() => undefined);
      throw layerError(error, label, entryName);
    }
    const digest = layer.digestChecked ? layer.digest : `sha256:${compressedHash.digest("hex")}`;
    if (digest !== layer.digest) {
      throw new BangerError(ErrorCode.IMAGE_INVALID, `${label}: the blob's digest is ${digest}`, {
        hint: "the cached blob is corrupt; run `banger image prune` and pull again",
      });
    }
    const diffId = `sha256:${plainHash.digest("hex")}`;
    if (layer.diffId !== undefined && diffId !== layer.diffId) {
      throw new BangerError(
        ErrorCode.IMAGE_INVALID,
        `${label}: its uncompressed content has digest ${diffId}, the config's diff_id is ${layer.diffId}`,
        { hint: "the image's config does not match its layers; nothing was published" },
      );
    }
  }

  /** Sets directory times, deepest first, after the last layer. */
  async finish(): Promise<void> {
    const paths = [...this.dirTimes.keys()].sort((a, b) => b.length - a.length);
    for (const path of paths) {
      const time = this.dirTimes.get(path) as Date;
      await lutimes(join(this.tree, path), time, time).catch(() => undefined);
    }
  }

  private readLink = (relative: string): string | undefined => {
    try {
      return readlinkSync(join(this.tree, relative));
    } catch {
      return undefined;
    }
  };

  private async applyEntry(
    header: Header,
    body: AsyncIterable<unknown>,
    written: Set<string>,
  ): Promise<void> {
    const meaning = classifyEntry(header.name);
    if (meaning.kind === "root") return;
    if (meaning.kind === "whiteout") {
      const parent = resolveParents([...meaning.parent, meaning.name], this.readLink, header.name);
      await rm(join(this.tree, ...parent), { recursive: true, force: true });
      return;
    }
    if (meaning.kind === "opaque") {
      if (meaning.dir.length === 0) {
        await this.prune("", written);
        return;
      }
      const dir = resolveParents(meaning.dir, this.readLink, header.name).join("/");
      await this.prune(dir, written);
      return;
    }
    const relative = resolveParents(meaning.path, this.readLink, header.name);
    const path = join(this.tree, ...relative);
    const key = relative.join("/");
    await this.ensureParents(relative.slice(0, -1));
    const existing = await lstat(path).catch(() => undefined);
    const mode = (header.mode ?? 0o644) & 0o7777;
    switch (header.type) {
      case "directory":
        if (existing && !existing.isDirectory()) await rm(path, { recursive: true, force: true });
        if (!existing?.isDirectory()) await mkdir(path, { mode: 0o700 });
        break;
      case "file":
      case "contiguous-file":
        if (existing) await rm(path, { recursive: true, force: true });
        await writeFileFrom(body, path);
        break;
      case "symlink":
        if (existing) await rm(path, { recursive: true, force: true });
        await symlink(header.linkname ?? "", path);
        break;
      case "link": {
        const target = resolveParents(linkTarget(header), this.readLink, header.name);
        const targetPath = join(this.tree, ...target);
        const targetStat = await lstat(targetPath).catch(() => undefined);
        if (!targetStat || targetStat.isDirectory()) {
          throw new LayerEscapeError(
            header.name,
            `is a hardlink to "${header.linkname}", which is not a file in the tree`,
          );
        }
        if (targetPath === path) break;
        if (existing) await rm(path, { recursive: true, force: true });
        await link(targetPath, path);
        written.add(key);
        return;
      }
      case "character-device":
      case "block-device":
      case "fifo": {
        if (existing) await rm(path, { recursive: true, force: true });
        const kind =
          header.type === "fifo"
            ? ["p"]
            : [
                header.type === "character-device" ? "c" : "b",
                String(header.devmajor ?? 0),
                String(header.devminor ?? 0),
              ];
        execFileSync("mknod", ["-m", mode.toString(8), path, ...kind], {
          stdio: ["ignore", "ignore", "pipe"],
        });
        break;
      }
      default:
        return;
    }
    written.add(key);
    await lchown(path, header.uid ?? 0, header.gid ?? 0);
    if (header.type !== "symlink") await chmod(path, mode);
    const mtime = header.mtime ?? new Date(0);
    if (header.type === "directory") this.dirTimes.set(key, mtime);
    else await lutimes(path, mtime, mtime);
    setXattrs(path, header.pax as Record<string, string> | null | undefined);
  }

  /** Missing parents are made as root-owned 0755 directories, as docker does. */
  private async ensureParents(parents: readonly string[]): Promise<void> {
    let current = this.tree;
    for (const part of parents) {
      current = join(current, part);
      const stat = await lstat(current).catch(() => undefined);
      if (stat?.isDirectory()) continue;
      if (stat) await rm(current, { force: true });
      await mkdir(current, { mode: 0o755 });
    }
  }

  /** An opaque directory keeps only what this layer wrote into it. */
  private async prune(dir: string, written: Set<string>): Promise<void> {
    const absolute = join(this.tree, dir);
    const names = await readdir(absolute).catch(() => [] as string[]);
    for (const name of names) {
      const child = dir === "" ? name : `${dir}/${name}`;
      if (!written.has(child)) {
        await rm(join(absolute, name), { recursive: true, force: true });
        continue;
      }
      if (lstatSync(join(absolute, name)).isDirectory()) await this.prune(child, written);
    }
  }
}

function linkTarget(header: Header): string[] {
  try {
    return entryComponents(header.linkname ?? "");
  } catch {
    throw new LayerEscapeError(
      header.name,
      `is a hardlink to "${header.linkname}", which is outside the tree`,
    );
  }
}

async function writeFileFrom(body: AsyncIterable<unknown>, path: string): Promise<void> {
  const handle = await open(path, "wx", 0o600);
  try {
    for await (const chunk of body) await handle.write(chunk as Buffer);
  } finally {
    await handle.close();
  }
}

function setXattrs(path: string, pax: Record<string, string> | null | undefined): void {
  if (!pax) return;
  for (const [key, value] of Object.entries(pax)) {
    if (!key.startsWith("SCHILY.xattr.")) continue;
    const name = key.slice("SCHILY.xattr.".length);
    // tar-stream decodes PAX records as UTF-8: values that are not valid UTF-8 do not survive intact.
    const hex = Buffer.from(value, "utf8").toString("hex");
    execFileSync("setfattr", ["-h", "-n", name, "-v", `0x${hex}`, path], {
      stdio: ["ignore", "ignore", "pipe"],
    });
  }
}

async function readMagic(file: string): Promise<Buffer> {
  const handle = await open(file, "r");
  try {
    const buffer = Buffer.alloc(4);
    const { bytesRead } = await handle.read(buffer, 0, 4, 0);
    return buffer.subarray(0, bytesRead);
  } finally {
    await handle.close();
  }
}

type Compression = "gzip" | "zstd" | "none";

function compressionOf(magic: Buffer): Compression {
  if (magic[0] === 0x1f && magic[1] === 0x8b) return "gzip";
  if (magic.equals(Buffer.from([0x28, 0xb5, 0x2f, 0xfd]))) return "zstd";
  return "none";
}

function decompressor(compression: Compression): NodeJS.ReadWriteStream {
  if (compression === "gzip") return createGunzip({ chunkSize: LAYER_CHUNK });
  if (compression === "zstd") return createZstdDecompress({ chunkSize: LAYER_CHUNK });
  return new PassThrough({ highWaterMark: LAYER_CHUNK });
}

/**
 * Completes a tar that stops right after its last file's data (old umoci
 * and stacker layers have neither the padding nor the end-of-archive
 * blocks): pads to a block and adds two zero blocks, which a complete tar
 * ignores. The diff_id is hashed before this.
 */
function tarEnd(): Transform {
  let length = 0;
  return new Transform({
    transform(chunk: Buffer, _encoding, done) {
      length += chunk.length;
      done(null, chunk);
    },
    flush(done) {
      done(null, Buffer.alloc(((512 - (length % 512)) % 512) + 1024));
    },
  });
}

function hashing(hash: Hash): Transform {
  return new Transform({
    transform(chunk: Buffer, _encoding, done) {
      hash.update(chunk);
      done(null, chunk);
    },
  });
}

function layerError(error: unknown, label: string, entry: string): Error {
  if (error instanceof BangerError) return error;
  if (error instanceof LayerEscapeError) {
    return new BangerError(ErrorCode.IMAGE_INVALID, `${label}: ${error.message}`, {
      hint: "the image tries to write outside its own tree; banger refuses it and published nothing",
    });
  }
  const message = error instanceof Error ? error.message : String(error);
  return new BangerError(
    ErrorCode.IMAGE_INVALID,
    `${label}${entry ? `, entry "${entry}"` : ""}: ${message}`,
    { hint: "the layer is not a valid tar archive of a filesystem; nothing was published" },
  );
}
