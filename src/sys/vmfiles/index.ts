/**
 * Per-VM files on disk: the VM directory, its handles.json scratch file
 * (transient kernel handles that recovery reads back, so written with the
 * synced atomic writer), console logs.
 */
import { createReadStream } from "node:fs";
import { open } from "node:fs/promises";
import { dirname } from "node:path";
import { z } from "zod";
import { sleep } from "../../core/async/index.ts";
import { diskHandlesFrom } from "../../core/disk/index.ts";
import type { VmHandles } from "../../core/vm/index.ts";
import { createNodeFs, type Fs, writeFileAtomic } from "../fs/index.ts";

const DiskHandlesSchema = z.discriminatedUnion("strategy", [
  z.object({
    strategy: z.literal("dm-snapshot"),
    dmName: z.string(),
    baseLoop: z.string(),
    cowLoop: z.string(),
    dmOrigin: z.string().optional(),
  }),
  z.object({ strategy: z.literal("file"), path: z.string() }),
]);

const HandlesSchema = z.object({
  pid: z.number().int().nullable(),
  pidStartTicks: z.number().int().nullable(),
  tap: z.string().nullable(),
  controlSocket: z.string().nullable(),
  disk: DiskHandlesSchema.nullable(),
});

/** handles.json as daemons before typed disk handles wrote it: the attached path, and dm devices in `extra`. */
const UntypedHandlesSchema = HandlesSchema.extend({
  disk: z.string().nullable(),
  extra: z.record(z.string(), z.string()),
});

/** Reads either shape of handles.json; undefined for anything else. */
function parseHandles(json: unknown): VmHandles | undefined {
  const typed = HandlesSchema.safeParse(json);
  if (typed.success) return typed.data;
  const untyped = UntypedHandlesSchema.safeParse(json);
  if (!untyped.success) return undefined;
  const { extra, disk, ...rest } = untyped.data;
  return {
    ...rest,
    disk: disk === null && extra.dmName === undefined ? null : diskHandlesFrom(disk ?? "", extra),
  };
}

/**
 * Implements the VM service's `VmFiles` port (declared in
 * daemon/vm/platform.ts) on the `Fs` seam; only the ranged reads of a
 * console (tail, stream) go to node:fs directly, as Fs has none.
 */
export function createVmFiles(fs: Fs = createNodeFs()) {
  return {
    makeDir: (dir: string): Promise<void> => fs.mkdir(dir, { mode: 0o700 }),
    removeDir: (dir: string): Promise<void> => fs.rm(dir),
    async readHandles(path: string): Promise<VmHandles | undefined> {
      let text: string;
      try {
        text = (await fs.readFile(path)).toString("utf8");
      } catch {
        return undefined;
      }
      try {
        return parseHandles(JSON.parse(text));
      } catch {
        // A torn or foreign file holds no handle we can trust.
        return undefined;
      }
    },
    async writeHandles(path: string, handles: VmHandles): Promise<void> {
      await writeFileAtomic(path, `${JSON.stringify(handles, null, 2)}\n`, { mode: 0o600 });
    },
    removeFile: (path: string): Promise<void> => fs.rm(path),
    rename: (from: string, to: string): Promise<void> => fs.rename(from, to),
    async writeJson(path: string, value: unknown): Promise<void> {
      await writeFileAtomic(path, `${JSON.stringify(value, null, 2)}\n`, { mode: 0o600 });
    },
    async rotate(path: string): Promise<void> {
      await fs.rename(path, `${path}.1`).catch(() => undefined);
    },
    async tail(path: string, bytes: number): Promise<string> {
      const handle = await open(path, "r");
      try {
        const { size } = await handle.stat();
        const length = Math.min(size, bytes);
        const buffer = Buffer.alloc(length);
        await handle.read(buffer, 0, length, size - length);
        return buffer.toString("utf8");
      } finally {
        await handle.close();
      }
    },
    exists: async (path: string): Promise<boolean> =>
      (await fs.stat(path).catch(() => undefined)) !== undefined,
    size: async (path: string): Promise<number> => (await fs.stat(path))?.size ?? 0,
    async stream(
      path: string,
      options: { offset: number; follow: boolean; signal: AbortSignal; onData(chunk: Buffer): Promise<void> },
    ): Promise<void> {
      let offset = options.offset;
      let gone = false;
      const pump = async () => {
        const found = await fs.stat(path).catch(() => undefined);
        // Between boots the file is briefly absent; without its directory the VM is gone.
        if (!found) gone = (await fs.stat(dirname(path)).catch(() => undefined)) === undefined;
        const size = found?.size ?? offset;
        if (size < offset) offset = 0;
        if (size === offset) return;
        const reader = createReadStream(path, { start: offset, end: size - 1 });
        for await (const chunk of reader) {
          await options.onData(chunk as Buffer);
          offset += (chunk as Buffer).length;
        }
      };
      await pump();
      while (options.follow && !options.signal.aborted && !gone) {
        await sleep(200);
        await pump();
      }
    },
  };
}
