import { join } from "node:path";
import type { RootDiskStrategy } from "../../../core/disk/index.ts";
import {
  attachRootDisk,
  type CowStrategyProbe,
  createRootDisk,
  detachRootDisk,
  growRootDisk,
  removeRootDisk,
} from "../../../sys/disk/index.ts";
import type { Runner } from "../../../sys/runner/index.ts";
import type { VmDisks } from "../../vm/index.ts";

/**
 * Root disks: a qcow2 overlay for QEMU; for raw-only VMMs the strategy the
 * state directory's filesystem supports (probed once, see probeCowStrategy).
 * The stored file's name says which strategy made it.
 */
export function createVmDisks(options: {
  runner: Runner;
  cowStrategy: { get(): Promise<CowStrategyProbe> };
  exists(path: string): Promise<boolean>;
}): VmDisks {
  const { runner } = options;
  const fileFor = (vmDir: string, strategy: RootDiskStrategy) =>
    strategy === "qcow2-overlay"
      ? join(vmDir, "root.qcow2")
      : strategy === "dm-snapshot"
        ? join(vmDir, "root.cow")
        : join(vmDir, "root.raw");
  const candidates = [
    { name: "root.qcow2", strategy: "qcow2-overlay", format: "qcow2" },
    { name: "root.cow", strategy: "dm-snapshot", format: "raw" },
    { name: "root.raw", strategy: "sparse-copy", format: "raw" },
  ] as const;
  return {
    async create(o) {
      const strategy = o.vmm === "qemu" ? "qcow2-overlay" : (await options.cowStrategy.get()).strategy;
      const disk = await createRootDisk({
        strategy,
        base: o.base,
        target: fileFor(o.vmDir, strategy),
        sizeBytes: o.sizeBytes,
        runner,
        signal: o.signal,
      });
      return { strategy, file: disk.handles.target ?? fileFor(o.vmDir, strategy), format: disk.format };
    },
    async locate(vmDir) {
      for (const candidate of candidates) {
        const file = join(vmDir, candidate.name);
        if (await options.exists(file))
          return { strategy: candidate.strategy, file, format: candidate.format };
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
      return { path: attached.path, handles: attached.handles };
    },
    detach: (handles) => detachRootDisk({ handles, runner }),
    remove: (disk) => removeRootDisk({ handles: { target: disk.file }, runner }),
    grow: (disk, sizeBytes) => growRootDisk({ strategy: disk.strategy, path: disk.file, sizeBytes, runner }),
  };
}
