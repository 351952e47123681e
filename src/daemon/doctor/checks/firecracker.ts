import { errorMessage } from "../../../core/async/index.ts";
import type { Config } from "../../../core/config/index.ts";
import { capabilitiesFor, parseFirecrackerVersion } from "../../../core/firecracker/index.ts";
import { BangerError, ErrorCode } from "../../../protocol/index.ts";
import type { Runner } from "../../../sys/runner/index.ts";
import type { HostCheck } from "./check.ts";

/** Is the firecracker binary there, which version, what it can do. Optional, so a problem only warns. */
export function firecrackerCheck(deps: { config: Config; runner: Runner }): HostCheck {
  return {
    name: "firecracker",
    async run() {
      const binary = deps.config.vmm.firecracker_binary;
      try {
        const version = await deps.runner.run([binary, "--version"], { timeoutMs: 10_000 });
        const parsed = parseFirecrackerVersion(version.stdout);
        const has = Object.entries(capabilitiesFor(parsed))
          .filter(([, on]) => on)
          .map(([name]) => name);
        return {
          name: "firecracker",
          status: "ok",
          detail: `${binary} is Firecracker v${parsed.text} (${has.join(", ") || "no optional features"}); it needs KVM`,
        };
      } catch (error) {
        const missing = error instanceof BangerError && error.code === ErrorCode.TOOL_MISSING;
        return {
          name: "firecracker",
          status: "warn",
          detail: missing
            ? `${binary} is not installed: VMs use the QEMU driver`
            : `${binary} is not usable: ${errorMessage(error)}`,
          hint: "optional: install a Firecracker release (>= 1.8) on a KVM host for --vmm firecracker",
        };
      }
    },
  };
}
