/**
 * The filesystem seam: the few file operations services need, behind an
 * interface so unit tests can inject failures. Whole-tree removal of build
 * trees goes through the Runner (`rm --one-file-system`), not through here.
 * `readDiskUsage` tells a file's allocated bytes from its apparent size.
 * `writeFileAtomic` is the one writer for files that recovery reads back.
 */
import { randomBytes } from "node:crypto";
import { constants } from "node:fs";
import * as fsp from "node:fs/promises";
import { dirname } from "node:path";

interface FileStat {
  /** Apparent size in bytes. */
  size: number;
  isDirectory: boolean;
}

export interface Fs {
  /** Creates the directory and its parents; no error if it exists. */
  mkdir(path: string, options?: { mode?: number }): Promise<void>;
  /** Removes a file or a directory tree; no error if it is absent. */
  rm(path: string): Promise<void>;
  /** rename(2): atomic within one filesystem; fails if `to` is a non-empty directory. */
  rename(from: string, to: string): Promise<void>;
  /** undefined when the path does not exist (or a parent is not a directory). */
  stat(path: string): Promise<FileStat | undefined>;
  /** Entry names, unsorted; [] when the directory does not exist. */
  readdir(path: string): Promise<string[]>;
  readFile(path: string): Promise<Buffer>;
  /** `writeFileAtomic` below; mode 0644 unless given. */
  writeFileAtomic(path: string, data: string | Uint8Array, options?: { mode?: number }): Promise<void>;
}

export function createNodeFs(): Fs {
  return {
    async mkdir(path, options = {}) {
      await fsp.mkdir(path, {
        recursive: true,
        ...(options.mode === undefined ? {} : { mode: options.mode }),
      });
    },
    async rm(path) {
      await fsp.rm(path, { recursive: true, force: true });
    },
    async rename(from, to) {
      await fsp.rename(from, to);
    },
    async stat(path) {
      try {
        const stats = await fsp.stat(path);
        return { size: stats.size, isDirectory: stats.isDirectory() };
      } catch (error) {
        if (isNotFound(error)) return undefined;
        throw error;
      }
    },
    async readdir(path) {
      try {
        return await fsp.readdir(path);
      } catch (error) {
        if (isNotFound(error)) return [];
        throw error;
      }
    },
    readFile(path) {
      return fsp.readFile(path);
    },
    writeFileAtomic(path, data, options = {}) {
      return writeFileAtomic(path, data, { mode: options.mode ?? 0o644 });
    },
  };
}

/**
 * Replaces `path` with `data` so that a reader (after a crash too) sees the
 * old content or the new, never a torn file: writes a sibling temporary
 * file, fsyncs it, renames it over `path`, then fsyncs the directory so the
 * rename itself is durable. On failure the temporary file is removed and
 * `path` is left as it was. `mode` applies to the new file (default 0600).
 */
export async function writeFileAtomic(
  path: string,
  data: string | Uint8Array,
  options: { mode?: number } = {},
): Promise<void> {
  const temporary = `${path}.tmp-${process.pid}-${randomBytes(4).toString("hex")}`;
  try {
    const handle = await fsp.open(
      temporary,
      constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL,
      options.mode ?? 0o600,
    );
    try {
      await handle.writeFile(data);
      await handle.sync();
    } finally {
      await handle.close();
    }
    await fsp.rename(temporary, path);
  } catch (error) {
    await fsp.rm(temporary, { force: true });
    throw error;
  }
  await syncDirectory(dirname(path));
}

async function syncDirectory(dir: string): Promise<void> {
  const handle = await fsp.open(dir, constants.O_RDONLY | constants.O_DIRECTORY);
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
}

export interface DiskUsage {
  /** Bytes the file occupies on the host's disk (st_blocks * 512); less than apparent when sparse. */
  allocatedBytes: number;
  /** The file's length (st_size). */
  apparentBytes: number;
}

/** Allocated and apparent size of a file (a VM's root disk), or undefined when it does not exist. */
export async function readDiskUsage(path: string): Promise<DiskUsage | undefined> {
  try {
    const stats = await fsp.stat(path);
    return { allocatedBytes: stats.blocks * 512, apparentBytes: stats.size };
  } catch (error) {
    if (isNotFound(error)) return undefined;
    throw error;
  }
}

function isNotFound(error: unknown): boolean {
  const code = (error as NodeJS.ErrnoException | undefined)?.code;
  return code === "ENOENT" || code === "ENOTDIR";
}
