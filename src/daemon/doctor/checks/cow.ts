import type { CowStrategyProbe } from "../../../sys/disk/index.ts";
import type { HostCheck } from "./check.ts";

/** Which raw copy-on-write strategy Firecracker disks get here, and why; a full copy warns. */
export function cowStrategyCheck(cowStrategy: { get(): Promise<CowStrategyProbe> }): HostCheck {
  return {
    name: "cow-strategy",
    async run() {
      let probe: CowStrategyProbe;
      try {
        probe = await cowStrategy.get();
      } catch (error) {
        return { name: "cow-strategy", status: "fail", detail: `cannot probe: ${String(error)}` };
      }
      return {
        name: "cow-strategy",
        status: probe.strategy === "sparse-copy" ? "warn" : "ok",
        detail: `raw root disks use ${probe.strategy}: ${probe.reason}`,
        ...(probe.strategy === "sparse-copy"
          ? {
              hint: "each Firecracker VM copies the whole base image; put the state directory on XFS or btrfs for instant reflink copies",
            }
          : {}),
      };
    },
  };
}
