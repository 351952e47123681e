/** Readiness: `true` runs in the guest over the channel, authenticated against the pinned host key. */
import { BangerError, ErrorCode } from "../../../protocol/index.ts";
import type { GuestChannel, GuestReadiness } from "../platform.ts";

export function sshTrue(channel: GuestChannel): GuestReadiness {
  return {
    name: "ssh-true",
    hint: "the guest answers SSH but refused the daemon's key or its host key changed",
    async wait(ready, signal) {
      const check = await channel.exec(ready.target, { argv: ["true"], signal });
      if (check.exitCode !== 0) {
        throw new BangerError(
          ErrorCode.GUEST_UNREACHABLE,
          `SSH to ${ready.vm.name} with its pinned host key failed (exit ${check.exitCode})`,
        );
      }
    },
  };
}
