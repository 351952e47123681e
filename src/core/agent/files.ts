/**
 * The tree requests' payloads (protocol 2; guest/agent/protocol.h and
 * files.c are the agent's half): STAT and LIST answer with entry records,
 * MKDIR, LINK and SETATTR carry an attributes block. With READ and WRITE
 * they let the host copy whole trees without any program in the guest.
 *
 * Entry record: `u32 st_mode | u32 uid | u32 gid | u64 size | i64 mtime
 * seconds | u32 nanoseconds | u16 name length | u16 link length | name |
 * symlink target`. Attributes: `u32 flags | u32 mode | u32 uid | u32 gid |
 * i64 mtime seconds | u32 nanoseconds`.
 */
import { BangerError, ErrorCode } from "../../protocol/index.ts";

const ENTRY_FIXED = 36;
const ATTRS_BYTES = 28;
const S_IFMT = 0o170000;
const S_IFREG = 0o100000;
const S_IFDIR = 0o040000;
const S_IFLNK = 0o120000;

const StatFlag = { follow: 1 } as const;
const AttrFlag = { mode: 1, owner: 2, mtime: 4, hard: 8 } as const;

export type GuestEntryKind = "file" | "dir" | "symlink" | "other";

/** A guest file's metadata as STAT and LIST report it. */
export interface GuestEntry {
  /** The child's name (LIST); empty for STAT. */
  name: string;
  kind: GuestEntryKind;
  /** Permission bits (0o7777). */
  mode: number;
  uid: number;
  gid: number;
  size: number;
  /** Modification time, seconds and nanoseconds since the epoch. */
  mtime: { seconds: number; nanos: number };
  /** A symlink's target; empty for anything else. */
  link: string;
}

/** What MKDIR, LINK and SETATTR set; an absent field is left as it is. */
export interface GuestAttrs {
  mode?: number | undefined;
  owner?: { uid: number; gid: number } | undefined;
  mtime?: { seconds: number; nanos: number } | undefined;
}

/** Decodes the entry records of a STAT or LIST answer (the DATA payloads concatenated). */
export function decodeEntries(data: Buffer): GuestEntry[] {
  const entries: GuestEntry[] = [];
  let at = 0;
  while (at < data.length) {
    if (data.length - at < ENTRY_FIXED) throw malformed("a truncated entry record");
    const nameLength = data.readUInt16BE(at + 32);
    const linkLength = data.readUInt16BE(at + 34);
    const end = at + ENTRY_FIXED + nameLength + linkLength;
    if (end > data.length) throw malformed("an entry record longer than its answer");
    const stMode = data.readUInt32BE(at);
    entries.push({
      name: data.toString("utf8", at + ENTRY_FIXED, at + ENTRY_FIXED + nameLength),
      kind: kindOf(stMode),
      mode: stMode & 0o7777,
      uid: data.readUInt32BE(at + 4),
      gid: data.readUInt32BE(at + 8),
      size: Number(data.readBigUInt64BE(at + 12)),
      mtime: { seconds: Number(data.readBigInt64BE(at + 20)), nanos: data.readUInt32BE(at + 28) },
      link: data.toString("utf8", at + ENTRY_FIXED + nameLength, end),
    });
    at = end;
  }
  return entries;
}

function kindOf(stMode: number): GuestEntryKind {
  switch (stMode & S_IFMT) {
    case S_IFREG:
      return "file";
    case S_IFDIR:
      return "dir";
    case S_IFLNK:
      return "symlink";
    default:
      return "other";
  }
}

/** The STAT payload. */
export function encodeStat(path: string, options: { follow: boolean }): Buffer {
  return Buffer.concat([u32be(options.follow ? StatFlag.follow : 0), pathBytes(path)]);
}

/** The LIST payload. */
export function encodeList(path: string): Buffer {
  return pathBytes(path);
}

/** The MKDIR and SETATTR payload. */
export function encodeAttrsRequest(path: string, attrs: GuestAttrs): Buffer {
  return Buffer.concat([encodeAttrs(attrs, 0), pathBytes(path)]);
}

/** The LINK payload: a symlink at `path` pointing at `target`, or with `hard` a hard link to `target`. */
export function encodeLink(
  path: string,
  target: string,
  options: { hard: boolean; attrs: GuestAttrs },
): Buffer {
  return Buffer.concat([
    encodeAttrs(options.attrs, options.hard ? AttrFlag.hard : 0),
    pathBytes(path),
    Buffer.from([0]),
    pathBytes(target),
  ]);
}

function encodeAttrs(attrs: GuestAttrs, extraFlags: number): Buffer {
  const b = Buffer.alloc(ATTRS_BYTES);
  let flags = extraFlags;
  if (attrs.mode !== undefined) {
    flags |= AttrFlag.mode;
    b.writeUInt32BE(attrs.mode & 0o7777, 4);
  }
  if (attrs.owner) {
    flags |= AttrFlag.owner;
    b.writeUInt32BE(attrs.owner.uid >>> 0, 8);
    b.writeUInt32BE(attrs.owner.gid >>> 0, 12);
  }
  if (attrs.mtime) {
    flags |= AttrFlag.mtime;
    b.writeBigInt64BE(BigInt(Math.trunc(attrs.mtime.seconds)), 16);
    b.writeUInt32BE(Math.min(999_999_999, Math.max(0, Math.trunc(attrs.mtime.nanos))), 24);
  }
  b.writeUInt32BE(flags, 0);
  return b;
}

/** A path for a request: not empty, no NUL, under 4096 bytes (the agent's limit). */
function pathBytes(path: string): Buffer {
  const bytes = Buffer.from(path, "utf8");
  if (bytes.length === 0 || bytes.length >= 4096 || bytes.includes(0)) {
    throw new BangerError(
      ErrorCode.INVALID_PARAMS,
      `guest path ${JSON.stringify(path)} is empty, too long or holds a NUL`,
      {
        hint: "pass an absolute guest path under 4096 bytes",
      },
    );
  }
  return bytes;
}

function u32be(value: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt32BE(value >>> 0, 0);
  return b;
}

function malformed(what: string): BangerError {
  return new BangerError(ErrorCode.GUEST_UNREACHABLE, `the guest agent sent ${what}`, {
    hint: "`banger vm restart NAME` restarts the agent",
  });
}
