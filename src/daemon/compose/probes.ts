/**
 * Host probes the daemon asks more than once, as named objects: the VM
 * service, the drivers and `banger doctor` all read the same answer.
 */
import { mkdir } from "node:fs/promises";
import { join } from "node:path";
import type { Config } from "../../core/config/index.ts";
import type { Layout } from "../../core/paths/index.ts";
import { type CowStrategyProbe, probeCowStrategy } from "../../sys/disk/index.ts";
import type { Runner } from "../../sys/runner/index.ts";
import type { Store } from "../../sys/store/index.ts";
import { type AccelChoice, chooseAccel } from "../../sys/vmm/index.ts";

/**
 * Which raw copy-on-write strategy the state directory's filesystem
 * supports: probed on first use, then the same answer (or the same failure)
 * for the daemon's lifetime.
 */
export function createCowStrategyProbe(layout: Layout, runner: Runner): { get(): Promise<CowStrategyProbe> } {
  let answer: Promise<CowStrategyProbe> | undefined;
  return {
    get() {
      answer ??= mkdir(layout.vmsDir, { recursive: true }).then(() =>
        probeCowStrategy(layout.vmsDir, { runner }),
      );
      return answer;
    },
  };
}

/**
 * QEMU's accelerator: KVM only where a probe boot of the first image's
 * kernel proves it works (cached on disk per kernel and binary by
 * chooseAccel); TCG before there is any image.
 */
export function createAccelProbe(options: {
  config: Config;
  layout: Layout;
  runner: Runner;
  store: Pick<Store, "listImages">;
}): { get(): Promise<AccelChoice> } {
  const { config } = options;
  return {
    get() {
      // OCI images keep no kernel of their own.
      const kernel = options.store.listImages().find((image) => image.kernel !== "")?.kernel;
      if (!kernel)
        return Promise.resolve({
          accel: "tcg",
          configured: config.vmm.accel,
          reason: "no image yet",
          cached: false,
        });
      return chooseAccel({
        configured: config.vmm.accel,
        kernel,
        binary: config.vmm.qemu_binary,
        cacheFile: join(options.layout.cacheDir, "accel.json"),
        runner: options.runner,
      });
    },
  };
}
