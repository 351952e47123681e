/**
 * A minimal ustar writer for small in-memory regular files (auth
 * material): names under 100 bytes, owner 0, the given mode.
 */
const BLOCK = 512;

export interface TarEntry {
  name: string;
  data: Uint8Array;
  mode: number;
}

export function tarArchive(entries: readonly TarEntry[], mtime = 0): Uint8Array {
  const blocks: Uint8Array[] = [];
  for (const entry of entries) {
    const name = new TextEncoder().encode(entry.name);
    if (name.length === 0 || name.length >= 100) throw new Error(`tar entry name too long: ${entry.name}`);
    const header = new Uint8Array(BLOCK);
    header.set(name, 0);
    writeOctal(header, 100, 8, entry.mode);
    writeOctal(header, 108, 8, 0);
    writeOctal(header, 116, 8, 0);
    writeOctal(header, 124, 12, entry.data.length);
    writeOctal(header, 136, 12, mtime);
    header.fill(0x20, 148, 156);
    header[156] = 0x30; // regular file
    header.set(new TextEncoder().encode("ustar\u000000"), 257);
    let sum = 0;
    for (const byte of header) sum += byte;
    writeOctal(header, 148, 7, sum);
    blocks.push(header, entry.data, new Uint8Array((BLOCK - (entry.data.length % BLOCK)) % BLOCK));
  }
  blocks.push(new Uint8Array(BLOCK * 2));
  const total = blocks.reduce((n, b) => n + b.length, 0);
  const out = new Uint8Array(total);
  let offset = 0;
  for (const block of blocks) {
    out.set(block, offset);
    offset += block.length;
  }
  return out;
}

function writeOctal(header: Uint8Array, offset: number, width: number, value: number): void {
  const text = value.toString(8).padStart(width - 1, "0");
  header.set(new TextEncoder().encode(text), offset);
  header[offset + width - 1] = 0;
}
