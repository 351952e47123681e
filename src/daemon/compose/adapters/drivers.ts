import type { Config } from "../../../core/config/index.ts";
import type { VmmDriver } from "../../../core/vmm/contract.ts";
import { BangerError, ErrorCode, type VmmKind } from "../../../protocol/index.ts";
import type { FirecrackerDriver } from "../../../sys/firecracker/index.ts";
import type { VmmDrivers } from "../../vm/index.ts";

/**
 * Driver choice: an explicit `firecracker` needs a working binary (its
 * `--version` probe); `auto` also needs KVM, else it falls back to QEMU,
 * which runs everywhere. `get` always answers, so VMs made earlier can be
 * stopped and killed even when the binary has gone since.
 */
export function createDrivers(options: {
  config: Config;
  qemu: VmmDriver;
  firecracker: FirecrackerDriver;
  kvmUsable(): Promise<boolean>;
}): VmmDrivers {
  const binary = options.config.vmm.firecracker_binary;
  const firecrackerProblem = async (): Promise<BangerError | undefined> => {
    try {
      await options.firecracker.probe();
      return undefined;
    } catch (error) {
      if (error instanceof BangerError && error.code !== ErrorCode.TOOL_MISSING) return error;
      return new BangerError(ErrorCode.TOOL_MISSING, `firecracker ('${binary}') is not available`, {
        hint: "install a firecracker release binary (>= 1.8) on PATH or set vmm.firecracker_binary; it needs KVM. Or use --vmm qemu",
        cause: error,
      });
    }
  };
  return {
    get: (kind: VmmKind) => (kind === "qemu" ? options.qemu : options.firecracker),
    async choose(requested) {
      if (requested === "qemu") return "qemu";
      const problem = await firecrackerProblem();
      if (requested === "firecracker") {
        if (problem) throw problem;
        return "firecracker";
      }
      return !problem && (await options.kvmUsable()) ? "firecracker" : "qemu";
    },
  };
}
