/**
 * `banger vm cp [-a] [NAME:]SRC [NAME:]DST` with docker cp's rules: a
 * directory copies recursively; `SRC/.` copies a directory's contents;
 * `-` is a tar on stdin (into the VM) or stdout (out of it); `-a` keeps
 * uid/gid. Bytes travel as one tar stream with backpressure; modes, times
 * and symlinks are kept. Local files are read and written as the user
 * running the CLI.
 */
import { lstat, mkdtemp, readdir, rename, rm, stat } from "node:fs/promises";
import { basename, dirname, join, resolve } from "node:path";
import { cancelledIfAborted } from "../../../core/async/index.ts";
import { BangerError, ErrorCode, VM_NAME_PATTERN } from "../../../protocol/index.ts";
import type { CliContext } from "../../context.ts";
import { type CommandSpec, success } from "../../spec.ts";
import { byteProgress, localSink, upload, writeDownloaded } from "../../streams.ts";
import { tarStream } from "../../workspace/host.ts";

interface Endpoint {
  vm: string | null;
  path: string;
}

/** `NAME:PATH` names a VM path when NAME is a VM name; a local path with a colon needs `./`. */
export function parseEndpoint(value: string): Endpoint {
  const colon = value.indexOf(":");
  if (colon > 0) {
    const vm = value.slice(0, colon);
    if (VM_NAME_PATTERN.test(vm)) return { vm, path: value.slice(colon + 1) };
  }
  return { vm: null, path: value };
}

interface CpArgs {
  src: string;
  dst: string;
  archive?: boolean;
}

export const cpSpec: CommandSpec<CpArgs> = {
  name: "cp <src> <dst>",
  describe: "copy files or directories between the host and a VM",
  examples: [
    "banger vm cp ./src box:/root/src          # a directory, recursively",
    "banger vm cp box:/var/log/app.log .       # into the current directory",
    "banger vm cp ./dist/. box:/srv/www        # the directory's contents",
    "tar -c . | banger vm cp - box:/root/in    # a tar on stdin, extracted in the VM",
    "banger vm cp box:/etc - | tar -t          # a tar on stdout",
  ],
  notes: "Exactly one side names a VM (NAME:PATH); write ./a:b for a local path with a colon.",
  options: [
    {
      flags: "-a, --archive",
      description: "keep uid/gid (the default gives the copies to the receiving user)",
    },
  ],
  async handler(ctx, args) {
    const src = parseEndpoint(args.src);
    const dst = parseEndpoint(args.dst);
    if ((src.vm === null) === (dst.vm === null)) {
      throw new BangerError(ErrorCode.INVALID_PARAMS, "exactly one of SRC and DST must be NAME:PATH", {
        hint: "e.g. banger vm cp ./file box:/root/ or banger vm cp box:/root/file .",
      });
    }
    const archive = args.archive === true;
    // Ctrl-C cancels the copy in the daemon; a copy out to a new path removes what it had written.
    const signal = ctx.interrupted();
    let kept: string | undefined;
    try {
      if (dst.vm !== null) {
        kept = `what reached ${dst.vm}:${absoluteGuestPath(dst.path)} stays there; copy again to replace it`;
        await copyIn(ctx, src.path, { vm: dst.vm, path: dst.path }, { archive, signal });
      } else {
        await copyOut(ctx, { vm: src.vm!, path: src.path }, dst.path, {
          archive,
          signal,
          merging: (dir) => {
            kept = `what reached ${dir} stays there (a copy into a directory merges, as docker cp does)`;
          },
        });
      }
    } catch (error) {
      throw cancelledIfAborted(error, signal, "copy", kept);
    }
    return success();
  },
};

interface CopyOptions {
  archive: boolean;
  signal: AbortSignal;
  /** Told when a copy out extracts straight into an existing directory (a cancel leaves what arrived). */
  merging?: (dir: string) => void;
}

async function copyIn(
  ctx: CliContext,
  source: string,
  target: { vm: string; path: string },
  { archive, signal }: CopyOptions,
) {
  const guestPath = absoluteGuestPath(target.path);
  let stream: AsyncIterable<Buffer | string>;
  let done: Promise<void> = Promise.resolve();
  let kind: "file" | "dir" | "contents";
  let base = ".";
  let total: number | undefined;
  if (source === "-") {
    kind = "contents";
    stream = ctx.stdin;
  } else {
    const path = resolve(source);
    const info = await lstat(path).catch(() => {
      throw new BangerError(ErrorCode.INVALID_PARAMS, `${source}: no such file or directory`);
    });
    const contents = /\/\.$/.test(source) || source === ".";
    if (contents && !info.isDirectory())
      throw new BangerError(ErrorCode.INVALID_PARAMS, `${source}: not a directory`);
    kind = contents ? "contents" : info.isDirectory() ? "dir" : "file";
    base = contents ? "." : basename(path);
    total = await treeBytes(path);
    const tar = contents ? tarStream(path, ["."]) : tarStream(dirname(path), [base]);
    stream = tar.stdout;
    done = tar.done;
  }
  const client = await ctx.client();
  const call = client.start(
    "vm.cp.in",
    { name: target.vm, path: guestPath, source: kind, base, archive },
    { signal },
  );
  const progress = byteProgress(ctx.stderr, `copying to ${target.vm}:${guestPath}`, total);
  const [sent] = await Promise.all([upload(call, stream, (n) => progress.update(n)), call.result, done]);
  progress.finish(sent);
}

async function copyOut(
  ctx: CliContext,
  source: { vm: string; path: string },
  dest: string,
  { archive, signal, merging }: CopyOptions,
) {
  const guestPath = absoluteGuestPath(source.path);
  const client = await ctx.client();
  if (dest === "-") {
    await client.call(
      "vm.cp.out",
      { name: source.vm, path: guestPath },
      {
        signal,
        onStream: (ch, data) => (ch === "stdout" && data ? writeDownloaded(ctx.stdout, data) : undefined),
      },
    );
    return;
  }
  const target = resolve(dest);
  const into = await stat(target).then(
    (s) => s.isDirectory(),
    () => false,
  );
  if (!into && dest.endsWith("/"))
    throw new BangerError(ErrorCode.INVALID_PARAMS, `${dest}: no such directory`);
  const parent = into ? target : dirname(target);
  if (
    !(await stat(parent).then(
      (s) => s.isDirectory(),
      () => false,
    ))
  )
    throw new BangerError(ErrorCode.INVALID_PARAMS, `${parent}: no such directory`);
  // Into an existing directory: extract there (merging, as docker does). Otherwise build the
  // entry beside the target and rename it into place, so a failed copy leaves nothing behind.
  const scratch = into ? undefined : await mkdtemp(join(parent, ".banger-cp-"));
  if (into) merging?.(target);
  try {
    const owner =
      archive && process.getuid?.() === 0 ? ["--same-owner", "--numeric-owner"] : ["--no-same-owner"];
    const sink = localSink(["tar", "-x", "-p", ...owner, "-C", scratch ?? target]);
    const progress = byteProgress(ctx.stderr, `copying ${source.vm}:${guestPath}`);
    let received = 0;
    try {
      await client.call(
        "vm.cp.out",
        { name: source.vm, path: guestPath },
        {
          signal,
          onStream: (ch, data) => {
            if (ch !== "stdout" || !data) return;
            received += data.length;
            progress.update(received);
            return sink.write(data);
          },
        },
      );
    } catch (error) {
      sink.abort();
      throw error;
    }
    await sink.end();
    progress.finish(received);
    if (scratch === undefined) return;
    if (/\/\.$/.test(guestPath)) {
      await rename(scratch, target);
    } else {
      await rename(join(scratch, basename(guestPath.replace(/\/+$/, ""))), target);
    }
  } finally {
    if (scratch !== undefined) await rm(scratch, { recursive: true, force: true });
  }
}

function absoluteGuestPath(path: string): string {
  if (path.startsWith("/")) return path;
  return path === "" ? "/root" : `/root/${path}`;
}

/** Bytes of regular files under `path` (for the progress total); symlinks are not followed. */
async function treeBytes(path: string): Promise<number> {
  const info = await lstat(path);
  if (!info.isDirectory()) return info.isFile() ? info.size : 0;
  let total = 0;
  for (const entry of await readdir(path)) total += await treeBytes(join(path, entry));
  return total;
}
