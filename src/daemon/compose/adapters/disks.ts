import { join } from "node:path";
import {
  diskHandleRecord,
  diskHandlesFrom,
  ROOT_DISK_FILES,
  rootDiskStrategyFor,
  STORED_DISK_LOOKUP,
} from "../../../core/disk/index.ts";
import {
  attachRootDisk,
  type CowStrategyProbe,
  copyDiskForSnapshot,
  createRootDisk,
  detachRootDisk,
  growRootDisk,
  removeRootDisk,
} from "../../../sys/disk/index.ts";
import type { Runner } from "../../../sys/runner/index.ts";
import type { VmDisks } from "../../vm/index.ts";

/**
 * Root disks: a qcow2 overlay for a VMM that opens qcow2; for raw-only VMMs
 * the strategy the state directory's filesystem supports (probed once, see
 * probeCowStrategy). The stored file's name (ROOT_DISK_FILES) says which
 * strategy made it.
 */
export function createVmDisks(options: {
  runner: Runner;
  cowStrategy: { get(): Promise<CowStrategyProbe> };
  exists(path: string): Promise<boolean>;
}): VmDisks {
  const { runner } = options;
  return {
    async create(o) {
      // Over a qcow2 base (a snapshot's disk) only a qcow2 overlay works.
      const formats = o.baseFormat === "qcow2" ? o.formats.filter((format) => format === "qcow2") : o.formats;
      const strategy = await rootDiskStrategyFor(
        formats,
        async () => (await options.cowStrategy.get()).strategy,
      );
      const target = join(o.vmDir, ROOT_DISK_FILES[strategy].file);
      const disk = await createRootDisk({
        strategy,
        base: o.base,
        baseFormat: o.baseFormat,
        target,
        sizeBytes: o.sizeBytes,
        runner,
        signal: o.signal,
      });
      return { strategy, file: target, format: disk.format };
    },
    async locate(vmDir) {
      for (const strategy of STORED_DISK_LOOKUP) {
        const { file: name, format } = ROOT_DISK_FILES[strategy];
        const file = join(vmDir, name);
        if (await options.exists(file)) return { strategy, file, format };
      }
      return undefined;
    },
    async attach(o) {
      const attached = await attachRootDisk({
        strategy: o.disk.strategy,
        base: o.base,
        target: o.disk.file,
        sizeBytes: o.sizeBytes,
        runner,
        signal: o.signal,
      });
      return { path: attached.path, handles: diskHandlesFrom(attached.path, attached.handles) };
    },
    detach: (handles) => detachRootDisk({ handles: diskHandleRecord(handles), runner }),
    remove: (disk) => removeRootDisk({ handles: { target: disk.file }, runner }),
    grow: (disk, sizeBytes) => growRootDisk({ strategy: disk.strategy, path: disk.file, sizeBytes, runner }),
    copyForSnapshot: (disk, dir, signal) =>
      copyDiskForSnapshot({ strategy: disk.strategy, file: disk.file, dir, runner, signal }),
  };
}
