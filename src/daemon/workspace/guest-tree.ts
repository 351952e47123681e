/**
 * Tar streams into and out of a guest over the agent's file requests
 * (stat, list, read, write, mkdir, link, attributes), so `vm cp` needs no
 * program in the guest: shell-less images (scratch, distroless) copy like
 * any other. Backpressure holds end to end: an incoming entry is read only
 * as fast as the agent takes it, and outgoing bytes wait for `onData`.
 *
 * Kept: regular files, directories, symlinks and hard links (within the
 * tar), permission bits, mtimes (to the second), and with `archive` the
 * numeric uid/gid. Devices, FIFOs and sockets are skipped both ways.
 */
import type { Readable } from "node:stream";
import { pipeline } from "node:stream/promises";
import { type Header, extract as tarExtract } from "tar-stream";
import type { GuestAttrs, GuestEntry } from "../../core/agent/index.ts";
import {
  baseOf,
  type CopySource,
  joinGuest,
  parentOf,
  planReceive,
  receiveTarget,
  TAR_END,
  tarHeader,
  tarPadding,
} from "../../core/workspace/index.ts";
import { BangerError, ErrorCode } from "../../protocol/index.ts";
import type { GuestFiles } from "../vm/index.ts";

/** Extracts the tar `payload` at `dest` by docker cp's rules; returns the path the copy made. */
export async function receiveTar(options: {
  files: GuestFiles;
  dest: string;
  source: CopySource;
  base: string;
  archive: boolean;
  payload: Readable;
  signal: AbortSignal;
}): Promise<{ path: string }> {
  try {
    return await extractInto(options);
  } finally {
    // A copy refused or failed early has not read its payload; nobody will.
    if (!options.payload.readableEnded) options.payload.destroy();
  }
}

async function extractInto(options: Parameters<typeof receiveTar>[0]): Promise<{ path: string }> {
  const { files, dest } = options;
  const trimmed = dest.replace(/\/+$/, "") || "/";
  const destEntry = await files.stat(trimmed, { follow: true });
  const parent = destEntry ? undefined : await files.stat(parentOf(trimmed), { follow: true });
  const plan = planReceive({
    dest,
    destKind: destEntry === undefined ? "missing" : destEntry.kind === "dir" ? "dir" : "file",
    parentIsDir: parent?.kind === "dir",
    source: options.source,
    base: options.base,
  });
  if (options.source === "contents" && destEntry === undefined) await files.mkdir(plan.top, {});

  const extract = tarExtract();
  const feeding = pipeline(options.payload, extract, { signal: options.signal });
  feeding.catch(() => undefined);
  // Directories get their mtime last, deepest first: writing their children changes it.
  const directories: { path: string; attrs: GuestAttrs }[] = [];
  try {
    for await (const entry of extract) {
      const { header } = entry;
      const target = receiveTarget(plan, header.name);
      const attrs = entryAttrs(header, options.archive);
      if (target === undefined) {
        entry.resume();
        continue;
      }
      switch (header.type) {
        case "directory":
          await files.mkdir(target, { mode: attrs.mode, owner: attrs.owner });
          directories.push({ path: target, attrs });
          entry.resume();
          break;
        case "file":
        case "contiguous-file":
          await files.writeFile(
            target,
            attrs.mode ?? 0o644,
            entry as AsyncIterable<Buffer>,
            header.size ?? 0,
          );
          await files.setAttrs(target, attrs);
          break;
        case "symlink":
          await files.link(target, header.linkname ?? "", {
            hard: false,
            attrs: { owner: attrs.owner, mtime: attrs.mtime },
          });
          entry.resume();
          break;
        case "link": {
          const linked = receiveTarget(plan, header.linkname ?? "");
          if (linked === undefined)
            throw new BangerError(
              ErrorCode.INVALID_PARAMS,
              `tar entry ${JSON.stringify(header.name)} is a hard link outside the copy`,
              { hint: "make the tar with the linked file inside it, or with --hard-dereference" },
            );
          await files.link(target, linked, { hard: true, attrs: {} });
          entry.resume();
          break;
        }
        default:
          entry.resume();
      }
    }
    await feeding;
  } catch (error) {
    extract.destroy();
    if (options.signal.aborted) throw new BangerError(ErrorCode.CANCELLED, "the copy was cancelled");
    throw error;
  }
  for (const dir of directories.reverse()) await files.setAttrs(dir.path, dir.attrs);
  return { path: plan.finalPath };
}

/**
 * Writes `path` as a tar to `onData`: one entry named after its last
 * component (a symlink is copied as a link), or, for a path ending in
 * '/.', the directory's contents.
 */
export async function sendTar(options: {
  files: GuestFiles;
  path: string;
  onData(chunk: Buffer): void | Promise<void>;
  signal: AbortSignal;
}): Promise<{ bytes: number }> {
  const { files, signal } = options;
  let bytes = 0;
  const emit = async (chunk: Uint8Array) => {
    if (signal.aborted) throw new BangerError(ErrorCode.CANCELLED, "the copy was cancelled");
    bytes += chunk.length;
    await options.onData(Buffer.from(chunk.buffer, chunk.byteOffset, chunk.length));
  };

  const sendFile = async (path: string, name: string, entry: GuestEntry) => {
    await emit(tarHeader({ ...headerOf(entry, name), size: entry.size }));
    // The header promised entry.size bytes: a file that grew is cut there, one that shrank is padded.
    let sent = 0;
    await files.readFile(path, async (chunk) => {
      const room = entry.size - sent;
      if (room <= 0) return;
      const part = chunk.length > room ? chunk.subarray(0, room) : chunk;
      sent += part.length;
      await emit(part);
    });
    if (sent < entry.size) await emit(new Uint8Array(entry.size - sent));
    await emit(tarPadding(entry.size));
  };

  const send = async (path: string, name: string, entry: GuestEntry): Promise<void> => {
    switch (entry.kind) {
      case "file":
        return sendFile(path, name, entry);
      case "symlink":
        return void (await emit(tarHeader({ ...headerOf(entry, name), link: entry.link })));
      case "dir": {
        await emit(tarHeader(headerOf(entry, name)));
        const children = await files.list(path);
        children.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
        for (const child of children)
          await send(
            joinGuest(path, child.name),
            name === "." ? `./${child.name}` : `${name}/${child.name}`,
            child,
          );
        return;
      }
      default:
        return;
    }
  };

  const contents = /\/\.$/.test(options.path);
  const path = contents ? options.path.slice(0, -2) || "/" : options.path.replace(/\/+$/, "") || "/";
  const top = await files.stat(path, { follow: contents });
  if (!top) throw new BangerError(ErrorCode.INVALID_PARAMS, `${options.path}: no such file or directory`);
  if (contents && top.kind !== "dir")
    throw new BangerError(ErrorCode.INVALID_PARAMS, `${options.path}: not a directory`);
  await send(path, contents ? "." : baseOf(path) === "/" ? "." : baseOf(path), top);
  await emit(TAR_END);
  return { bytes };
}

function headerOf(entry: GuestEntry, name: string) {
  return {
    name,
    type:
      entry.kind === "dir"
        ? ("dir" as const)
        : entry.kind === "symlink"
          ? ("symlink" as const)
          : ("file" as const),
    mode: entry.mode,
    uid: entry.uid,
    gid: entry.gid,
    mtime: entry.mtime.seconds,
  };
}

/** A tar header's mode and mtime, and its owner when `archive` keeps it. */
function entryAttrs(header: Header, archive: boolean): GuestAttrs {
  const mtime = header.mtime ? header.mtime.getTime() : undefined;
  return {
    mode: (header.mode ?? 0o644) & 0o7777,
    owner: archive ? { uid: header.uid ?? 0, gid: header.gid ?? 0 } : undefined,
    mtime:
      mtime === undefined ? undefined : { seconds: Math.floor(mtime / 1000), nanos: (mtime % 1000) * 1e6 },
  };
}
