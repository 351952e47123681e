/**
 * Splits a byte stream into newline-terminated frames, refusing any frame
 * longer than the cap (the caller then closes the connection).
 */
export class LineSplitter {
  #pending: Buffer[] = [];
  #pendingBytes = 0;
  readonly maxFrameBytes: number;

  constructor(maxFrameBytes: number) {
    this.maxFrameBytes = maxFrameBytes;
  }

  /** Bytes of the unfinished frame held now. */
  get pendingBytes(): number {
    return this.#pendingBytes;
  }

  /** Drops the unfinished frame. */
  reset(): void {
    this.#pending = [];
    this.#pendingBytes = 0;
  }

  /** Returns complete lines, or "oversize" once a frame exceeds the cap. */
  push(chunk: Buffer): string[] | "oversize" {
    const lines: string[] = [];
    let start = 0;
    for (let index = chunk.indexOf(10); index !== -1; index = chunk.indexOf(10, start)) {
      const piece = chunk.subarray(start, index);
      if (this.#pendingBytes + piece.length > this.maxFrameBytes) return "oversize";
      this.#pending.push(piece);
      lines.push(Buffer.concat(this.#pending).toString("utf8"));
      this.#pending = [];
      this.#pendingBytes = 0;
      start = index + 1;
    }
    const rest = chunk.subarray(start);
    if (rest.length > 0) {
      this.#pendingBytes += rest.length;
      if (this.#pendingBytes > this.maxFrameBytes) return "oversize";
      this.#pending.push(Buffer.from(rest));
    }
    return lines;
  }
}
