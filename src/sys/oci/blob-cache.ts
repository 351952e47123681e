/**
 * The blob cache: layer and config blobs by digest, shared by every image
 * (`<state>/blobs/sha256/<hex>`). A blob enters only after its digest and
 * size were checked, through a temporary file and a rename, so a reader
 * sees a whole verified blob or none. Concurrent fills of one digest are
 * harmless: each writes its own temporary file and the renames are atomic.
 */
import { randomBytes } from "node:crypto";
import { mkdir, readdir, rename, rm, stat } from "node:fs/promises";
import { join } from "node:path";

export interface CachedBlob {
  digest: string;
  size: number;
  /** Last modification, which is when it entered the cache. */
  mtimeMs: number;
}

export class BlobCache {
  readonly dir: string;

  constructor(dir: string) {
    this.dir = dir;
  }

  path(digest: string): string {
    const [algorithm, hex] = digest.split(":");
    return join(this.dir, algorithm as string, hex as string);
  }

  async has(digest: string, size: number): Promise<boolean> {
    const found = await stat(this.path(digest)).catch(() => undefined);
    return found?.isFile() === true && found.size === size;
  }

  /**
   * Makes sure the blob is cached: `fill` writes it to a temporary file
   * (and checks it); the file is then renamed into place. Returns whether
   * it was fetched.
   */
  async ensure(digest: string, size: number, fill: (file: string) => Promise<void>): Promise<boolean> {
    if (await this.has(digest, size)) return false;
    const tmpDir = join(this.dir, ".tmp");
    await mkdir(tmpDir, { recursive: true, mode: 0o700 });
    await mkdir(join(this.dir, "sha256"), { recursive: true, mode: 0o700 });
    const tmp = join(tmpDir, `${digest.replace(":", "-")}.${randomBytes(4).toString("hex")}`);
    try {
      await fill(tmp);
      await rename(tmp, this.path(digest));
    } finally {
      await rm(tmp, { force: true });
    }
    return true;
  }

  async list(): Promise<CachedBlob[]> {
    const dir = join(this.dir, "sha256");
    const names = await readdir(dir).catch(() => [] as string[]);
    const blobs: CachedBlob[] = [];
    for (const name of names) {
      const found = await stat(join(dir, name)).catch(() => undefined);
      if (found?.isFile()) blobs.push({ digest: `sha256:${name}`, size: found.size, mtimeMs: found.mtimeMs });
    }
    return blobs;
  }

  async remove(digest: string): Promise<void> {
    await rm(this.path(digest), { force: true });
  }

  /** Temporary files of fills that died with their process. */
  async clearDebris(): Promise<void> {
    await rm(join(this.dir, ".tmp"), { recursive: true, force: true });
  }
}
