/**
 * A streaming ustar writer: one header per entry (with a PAX extended
 * header first when a name, link target, size or id does not fit ustar),
 * the data written by the caller, then `tarPadding`; `TAR_END` closes the
 * archive. `tarArchive` builds a whole archive of small in-memory files
 * (auth material).
 */
const BLOCK = 512;
const USTAR_NAME = 100;
const USTAR_PREFIX = 155;
const MAX_OCTAL_11 = 0o77777777777;
const MAX_OCTAL_7 = 0o7777777;
const TYPE_FLAG = { file: 0x30, symlink: 0x32, dir: 0x35, pax: 0x78 } as const;

export interface TarHeader {
  name: string;
  type: "file" | "dir" | "symlink";
  /** Bytes of data that follow (files only). */
  size?: number | undefined;
  mode: number;
  uid?: number | undefined;
  gid?: number | undefined;
  /** Seconds since the epoch. */
  mtime?: number | undefined;
  /** A symlink's target. */
  link?: string | undefined;
}

export interface TarEntry {
  name: string;
  data: Uint8Array;
  mode: number;
}

/** Two zero blocks: the end of an archive. */
export const TAR_END: Uint8Array = new Uint8Array(BLOCK * 2);

/** The zero bytes that follow `size` bytes of data to the next block. */
export function tarPadding(size: number): Uint8Array {
  return new Uint8Array((BLOCK - (size % BLOCK)) % BLOCK);
}

/** The header block(s) of one entry. Directory names get their trailing '/'. */
export function tarHeader(entry: TarHeader): Uint8Array {
  const encoder = new TextEncoder();
  const name = entry.type === "dir" && !entry.name.endsWith("/") ? `${entry.name}/` : entry.name;
  const size = entry.type === "file" ? (entry.size ?? 0) : 0;
  const uid = entry.uid ?? 0;
  const gid = entry.gid ?? 0;
  const link = entry.link ?? "";
  const pax: [string, string][] = [];
  const split = splitUstarName(encoder.encode(name));
  if (!split) pax.push(["path", name]);
  if (encoder.encode(link).length > USTAR_NAME) pax.push(["linkpath", link]);
  if (size > MAX_OCTAL_11) pax.push(["size", String(size)]);
  if (uid > MAX_OCTAL_7) pax.push(["uid", String(uid)]);
  if (gid > MAX_OCTAL_7) pax.push(["gid", String(gid)]);
  const header = ustarBlock({
    name: split ?? { prefix: new Uint8Array(0), name: encoder.encode(safeName(name)) },
    type: TYPE_FLAG[entry.type],
    mode: entry.mode & 0o7777,
    uid: uid > MAX_OCTAL_7 ? 0 : uid,
    gid: gid > MAX_OCTAL_7 ? 0 : gid,
    size: size > MAX_OCTAL_11 ? 0 : size,
    mtime: Math.max(0, Math.min(MAX_OCTAL_11, Math.trunc(entry.mtime ?? 0))),
    link: encoder.encode(link).length > USTAR_NAME ? new Uint8Array(0) : encoder.encode(link),
  });
  if (pax.length === 0) return header;
  const records = encoder.encode(pax.map(([key, value]) => paxRecord(key, value)).join(""));
  const paxHeader = ustarBlock({
    name: { prefix: new Uint8Array(0), name: encoder.encode("PaxHeader") },
    type: TYPE_FLAG.pax,
    mode: 0o644,
    uid: 0,
    gid: 0,
    size: records.length,
    mtime: 0,
    link: new Uint8Array(0),
  });
  return concat([paxHeader, records, tarPadding(records.length), header]);
}

/** A whole archive of small in-memory regular files, owner 0, the given modes. */
export function tarArchive(entries: readonly TarEntry[], mtime = 0): Uint8Array {
  const blocks: Uint8Array[] = [];
  for (const entry of entries) {
    if (entry.name.length === 0) throw new Error("tar entry name is empty");
    blocks.push(
      tarHeader({ name: entry.name, type: "file", size: entry.data.length, mode: entry.mode, mtime }),
      entry.data,
      tarPadding(entry.data.length),
    );
  }
  blocks.push(TAR_END);
  return concat(blocks);
}

/** `LEN key=value\n`, where LEN counts the whole record, itself included. */
function paxRecord(key: string, value: string): string {
  const body = ` ${key}=${value}\n`;
  const bodyBytes = new TextEncoder().encode(body).length;
  let length = bodyBytes + 1;
  while (String(length).length + bodyBytes !== length) length = String(length).length + bodyBytes;
  return `${length}${body}`;
}

/** Splits a name into ustar's prefix and name fields, or undefined when it does not fit. */
function splitUstarName(bytes: Uint8Array): { prefix: Uint8Array; name: Uint8Array } | undefined {
  if (bytes.length <= USTAR_NAME) return { prefix: new Uint8Array(0), name: bytes };
  for (let at = bytes.length - 1; at > 0; at--) {
    if (bytes[at] !== 0x2f) continue;
    if (at <= USTAR_PREFIX && bytes.length - at - 1 <= USTAR_NAME && bytes.length - at - 1 > 0)
      return { prefix: bytes.subarray(0, at), name: bytes.subarray(at + 1) };
  }
  return undefined;
}

/** The ustar name field's fallback when a PAX path carries the real name: its last 99 bytes' worth. */
function safeName(name: string): string {
  return name.slice(-(USTAR_NAME - 1));
}

function ustarBlock(fields: {
  name: { prefix: Uint8Array; name: Uint8Array };
  type: number;
  mode: number;
  uid: number;
  gid: number;
  size: number;
  mtime: number;
  link: Uint8Array;
}): Uint8Array {
  const header = new Uint8Array(BLOCK);
  header.set(fields.name.name.subarray(0, USTAR_NAME), 0);
  writeOctal(header, 100, 8, fields.mode);
  writeOctal(header, 108, 8, fields.uid);
  writeOctal(header, 116, 8, fields.gid);
  writeOctal(header, 124, 12, fields.size);
  writeOctal(header, 136, 12, fields.mtime);
  header.fill(0x20, 148, 156);
  header[156] = fields.type;
  header.set(fields.link.subarray(0, USTAR_NAME), 157);
  header.set(new TextEncoder().encode("ustar\u000000"), 257);
  header.set(fields.name.prefix.subarray(0, USTAR_PREFIX), 345);
  let sum = 0;
  for (const byte of header) sum += byte;
  writeOctal(header, 148, 7, sum);
  return header;
}

function writeOctal(header: Uint8Array, offset: number, width: number, value: number): void {
  const text = value.toString(8).padStart(width - 1, "0");
  header.set(new TextEncoder().encode(text), offset);
  header[offset + width - 1] = 0;
}

function concat(parts: readonly Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, part) => n + part.length, 0));
  let offset = 0;
  for (const part of parts) {
    out.set(part, offset);
    offset += part.length;
  }
  return out;
}
