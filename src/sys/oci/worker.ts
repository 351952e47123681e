/**
 * The image worker: one process per pull or import, so that hostile image
 * content is parsed outside the daemon, the daemon's event loop never
 * waits on a tree being written, and, under BANGER_NETNS, registry traffic
 * leaves from the host's network namespace (the daemon starts it through
 * nsenter). It reads one request as JSON on stdin, fetches the image into
 * the blob cache, flattens it into `<staging>/tree`, writes
 * `<staging>/rootfs.ext4`, removes the tree, and writes JSON lines to
 * stdout: progress events, then one result or one error.
 */
import { execFile } from "node:child_process";
import { lstat, mkdir, readdir, rm } from "node:fs/promises";
import { join } from "node:path";
import { performance } from "node:perf_hooks";
import { promisify } from "node:util";
import {
  type Credentials,
  parsePlatform,
  parseReference,
  planRootfsMkfs,
  type TreeUsage,
} from "../../core/oci/index.ts";
import { BangerError, ErrorCode, type ProgressStep } from "../../protocol/index.ts";
import { openLocalImage } from "./archive.ts";
import { BlobCache } from "./blob-cache.ts";
import { type PulledImage, pullIntoTree, registryReader } from "./pull.ts";
import { RegistryClient } from "./registry.ts";

export type WorkerSource =
  | {
      kind: "registry";
      reference: string;
      credentials?: Credentials | undefined;
      insecureRegistries: string[];
    }
  | { kind: "archive"; path: string; tag?: string | undefined };

export interface WorkerRequest {
  source: WorkerSource;
  platform: string;
  blobsDir: string;
  /** An empty directory of the daemon's staging area; the worker writes only under it. */
  stagingDir: string;
}

export interface WorkerResult extends PulledImage {
  rootfs: string;
  rootfsBytes: number;
  suggestedName: string | undefined;
}

export type WorkerLine =
  | { progress: { step: ProgressStep; message: string; current?: number; total?: number } }
  | { result: WorkerResult }
  | { error: { code: string; message: string; hint?: string | undefined } };

const execFileAsync = promisify(execFile);

async function treeUsage(root: string): Promise<TreeUsage> {
  let bytes = 0;
  let inodes = 0;
  const walk = async (dir: string): Promise<void> => {
    for (const entry of await readdir(dir, { withFileTypes: true })) {
      inodes += 1;
      const path = join(dir, entry.name);
      if (entry.isDirectory()) {
        bytes += 4096;
        await walk(path);
      } else if (entry.isFile()) {
        bytes += Math.ceil((await lstat(path)).size / 4096) * 4096;
      }
    }
  };
  await walk(root);
  return { bytes, inodes };
}

type ProgressEvent = { step: ProgressStep; message: string; current?: number; total?: number };

/** Least time between two progress lines of one step (byte counts change on every chunk). */
const PROGRESS_INTERVAL_MS = 100;

/**
 * Passes a step's first and last events and any other at most every
 * PROGRESS_INTERVAL_MS: a line per network chunk would cost the worker and
 * the daemon more than the pull's own hashing.
 */
export function throttledProgress(
  emit: (event: ProgressEvent) => void,
  now: () => number = () => performance.now(),
): (event: ProgressEvent) => void {
  let lastStep: ProgressStep | undefined;
  let lastAt = Number.NEGATIVE_INFINITY;
  return (event) => {
    const at = now();
    const final = event.current !== undefined && event.current === event.total;
    if (event.step === lastStep && !final && at - lastAt < PROGRESS_INTERVAL_MS) return;
    lastStep = event.step;
    lastAt = at;
    emit(event);
  };
}

export async function runWorker(
  request: WorkerRequest,
  emit: (line: WorkerLine) => void,
  signal?: AbortSignal,
): Promise<void> {
  const tree = join(request.stagingDir, "tree");
  await mkdir(tree, { mode: 0o755 });
  const progress = throttledProgress((event) => emit({ progress: event }));
  let pulled: PulledImage;
  let suggestedName: string | undefined;
  const cache = new BlobCache(request.blobsDir);
  const platform = parsePlatform(request.platform);
  if (request.source.kind === "registry") {
    const ref = parseReference(request.source.reference);
    const client = new RegistryClient({
      registry: ref.registry,
      credentials: request.source.credentials,
      insecureRegistries: request.source.insecureRegistries,
      signal,
    });
    progress({ step: "image.pull.resolve", message: `resolving ${request.source.reference}` });
    pulled = await pullIntoTree({
      reader: registryReader(client, ref, request.source.reference),
      platform,
      cache,
      tree,
      progress,
      signal,
    });
  } else {
    const scratch = join(request.stagingDir, "archive");
    await mkdir(scratch);
    progress({ step: "image.import.read", message: `reading ${request.source.path}` });
    const local = await openLocalImage(request.source.path, scratch, { tag: request.source.tag, signal });
    suggestedName = local.suggestedName;
    pulled = await pullIntoTree({ reader: local.reader, platform, cache, tree, progress, signal });
    await rm(scratch, { recursive: true, force: true });
  }
  progress({ step: "image.pull.rootfs", message: "writing the ext4 root filesystem" });
  const rootfs = join(request.stagingDir, "rootfs.ext4");
  const usage = await treeUsage(tree);
  try {
    const [command, ...args] = planRootfsMkfs({ tree, out: rootfs, usage });
    await execFileAsync(command as string, args, { signal });
  } catch (error) {
    const stderr = (error as { stderr?: string }).stderr ?? (error as Error).message;
    throw new BangerError(
      ErrorCode.IMAGE_PULL_FAILED,
      `mkfs.ext4 failed: ${stderr.trim().split("\n").slice(-3).join(" ")}`,
    );
  }
  await rm(tree, { recursive: true, force: true });
  const rootfsBytes = (await lstat(rootfs)).size;
  emit({ result: { ...pulled, rootfs, rootfsBytes, suggestedName } });
}

function errorLine(error: unknown): WorkerLine {
  if (error instanceof BangerError)
    return { error: { code: error.code, message: error.message, hint: error.hint } };
  const message = error instanceof Error ? error.message : String(error);
  return { error: { code: ErrorCode.INTERNAL, message: `image worker: ${message}` } };
}

async function main(): Promise<void> {
  const chunks: Buffer[] = [];
  for await (const chunk of process.stdin) chunks.push(chunk as Buffer);
  const emit = (line: WorkerLine): void => void process.stdout.write(`${JSON.stringify(line)}\n`);
  const controller = new AbortController();
  process.once("SIGTERM", () => controller.abort());
  try {
    await runWorker(
      JSON.parse(Buffer.concat(chunks).toString("utf8")) as WorkerRequest,
      emit,
      controller.signal,
    );
  } catch (error) {
    emit(errorLine(error));
    process.exitCode = 1;
  }
}

if (import.meta.main) await main();
