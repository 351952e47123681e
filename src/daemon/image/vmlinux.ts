/**
 * An image's kernel as an ELF vmlinux (for Firecracker before 1.17):
 * extracted from its bzImage on first use and kept beside it. One
 * extraction per image at a time; the file is renamed into place, so
 * readers never see half of it.
 */
import type { Logger } from "../../core/log/index.ts";
import { imagePaths } from "../../core/paths/index.ts";
import type { ImageRecord } from "../../sys/store/index.ts";
import type { ImageFs } from "./store.ts";

export interface VmlinuxDeps {
  fs: Pick<ImageFs, "stat">;
  logger: Logger;
  /** Writes the ELF vmlinux inside a bzImage to `out` atomically (src/sys/kernel). */
  extractVmlinux(bzImage: string, out: string, signal?: AbortSignal): Promise<void>;
}

export function createVmlinuxCache(
  deps: VmlinuxDeps,
): (image: ImageRecord, options?: { signal?: AbortSignal | undefined }) => Promise<string> {
  const extractions = new Map<string, Promise<string>>();
  return async (image, options = {}) => {
    const out = imagePaths(image.dir).vmlinux;
    if (await deps.fs.stat(out)) return out;
    let running = extractions.get(image.id);
    if (!running) {
      running = deps
        .extractVmlinux(image.kernel, out, options.signal)
        .then(() => {
          deps.logger.info("extracted vmlinux", { image: image.name, out });
          return out;
        })
        .finally(() => extractions.delete(image.id));
      extractions.set(image.id, running);
    }
    return running;
  };
}
