/**
 * A size-capped append-only file: once the next write would take it past
 * `maxBytes`, the file is copied to `name.1` (older copies shift up to
 * `name.N`, the oldest dropped) and truncated in place. Truncating instead of
 * renaming keeps every other descriptor on the file valid: the CLI hands an
 * autostarted daemon its stderr as an O_APPEND descriptor on the same log.
 * Writes are synchronous, so a crash loses nothing already written. The live
 * file exceeds the cap by at most one write.
 */
import {
  closeSync,
  copyFileSync,
  fstatSync,
  ftruncateSync,
  mkdirSync,
  openSync,
  renameSync,
  writeSync,
} from "node:fs";
import { dirname } from "node:path";

export interface RotatingFileOptions {
  path: string;
  maxBytes: number;
  /** Rotated copies kept besides the live file. */
  files: number;
  mode?: number | undefined;
}

export class RotatingFile {
  readonly path: string;
  readonly #maxBytes: number;
  readonly #files: number;
  #fd: number | undefined;
  /** Bytes in the live file as far as this writer knows (others may append too). */
  #size: number;

  constructor(options: RotatingFileOptions) {
    this.path = options.path;
    this.#maxBytes = options.maxBytes;
    this.#files = options.files;
    mkdirSync(dirname(options.path), { recursive: true, mode: 0o700 });
    this.#fd = openSync(options.path, "a", options.mode ?? 0o600);
    this.#size = fstatSync(this.#fd).size;
  }

  write(data: string | Uint8Array): void {
    if (this.#fd === undefined) return;
    const bytes = typeof data === "string" ? Buffer.from(data, "utf8") : data;
    if (this.#size + bytes.length > this.#maxBytes) {
      this.#size = fstatSync(this.#fd).size;
      if (this.#size > 0 && this.#size + bytes.length > this.#maxBytes) this.#rotate();
    }
    let offset = 0;
    while (offset < bytes.length) offset += writeSync(this.#fd, bytes, offset);
    this.#size += bytes.length;
  }

  close(): void {
    if (this.#fd === undefined) return;
    closeSync(this.#fd);
    this.#fd = undefined;
  }

  #rotate(): void {
    for (let generation = this.#files - 1; generation >= 1; generation--) {
      try {
        renameSync(`${this.path}.${generation}`, `${this.path}.${generation + 1}`);
      } catch {
        // That generation does not exist yet.
      }
    }
    copyFileSync(this.path, `${this.path}.1`);
    ftruncateSync(this.#fd!, 0);
    this.#size = 0;
  }
}
