/**
 * Per-VM files on disk: the VM directory, its handles.json scratch file
 * (transient kernel handles that recovery reads back, so written with the
 * synced atomic writer), console logs.
 */

import { createReadStream } from "node:fs";
import { mkdir, open, readFile, rename, rm, stat } from "node:fs/promises";
import { dirname } from "node:path";
import { z } from "zod";
import { sleep } from "../../core/async/index.ts";
import type { VmHandles } from "../../core/vm/index.ts";
import { writeFileAtomic } from "../fs/index.ts";

const HandlesSchema = z.object({
  pid: z.number().int().nullable(),
  pidStartTicks: z.number().int().nullable(),
  tap: z.string().nullable(),
  controlSocket: z.string().nullable(),
  disk: z.string().nullable(),
  extra: z.record(z.string(), z.string()),
});

export interface VmFilesAdapter {
  makeDir(dir: string): Promise<void>;
  removeDir(dir: string): Promise<void>;
  readHandles(path: string): Promise<VmHandles | undefined>;
  writeHandles(path: string, handles: VmHandles): Promise<void>;
  removeFile(path: string): Promise<void>;
  rotate(path: string): Promise<void>;
  tail(path: string, bytes: number): Promise<string>;
  exists(path: string): Promise<boolean>;
  size(path: string): Promise<number>;
  stream(
    path: string,
    options: { offset: number; follow: boolean; signal: AbortSignal; onData(chunk: Buffer): Promise<void> },
  ): Promise<void>;
}

export function createVmFiles(): VmFilesAdapter {
  return {
    makeDir: async (dir) => void (await mkdir(dir, { recursive: true, mode: 0o700 })),
    removeDir: (dir) => rm(dir, { recursive: true, force: true }),
    async readHandles(path) {
      let text: string;
      try {
        text = await readFile(path, "utf8");
      } catch {
        return undefined;
      }
      try {
        return HandlesSchema.parse(JSON.parse(text));
      } catch {
        // A torn or foreign file holds no handle we can trust.
        return undefined;
      }
    },
    async writeHandles(path, handles) {
      await writeFileAtomic(path, `${JSON.stringify(handles, null, 2)}\n`, { mode: 0o600 });
    },
    removeFile: (path) => rm(path, { force: true }),
    async rotate(path) {
      await rename(path, `${path}.1`).catch(() => undefined);
    },
    async tail(path, bytes) {
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
    exists: (path) =>
      stat(path).then(
        () => true,
        () => false,
      ),
    size: async (path) => (await stat(path)).size,
    async stream(path, options) {
      let offset = options.offset;
      let gone = false;
      const pump = async () => {
        const size = await stat(path).then(
          (s) => s.size,
          async () => {
            // Between boots the file is briefly absent; without its directory the VM is gone.
            gone = !(await stat(dirname(path)).then(
              () => true,
              () => false,
            ));
            return offset;
          },
        );
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
