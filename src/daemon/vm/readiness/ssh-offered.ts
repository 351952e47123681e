/**
 * Readiness on images with sshd: when the guest printed a host key on its
 * console (banger-init does so only where sshd exists), pin it and wait for
 * the banner, so `vm ssh` works once the VM is running. An image without
 * sshd passes at once. No SSH handshake is part of it.
 */
import { HOST_KEY_MARKER } from "../../../core/ssh/index.ts";
import type { GuestAccess, GuestReadiness, VmFiles } from "../platform.ts";

export function sshOffered(guest: GuestAccess, files: Pick<VmFiles, "tail">): GuestReadiness {
  return {
    name: "ssh-offered",
    hint: "the guest printed a host key but its sshd never answered: read the console",
    async wait(ready, signal) {
      const consoleText = await files.tail(ready.paths.console, 64 * 1024);
      if (!consoleText.includes(HOST_KEY_MARKER)) return;
      await guest.pinHostKey({
        consoleLog: ready.paths.console,
        ip: ready.vm.guestIp,
        knownHostsFile: ready.paths.knownHosts,
      });
      await guest.waitForBanner({
        ip: ready.vm.guestIp,
        deadlineMs: ready.deadlineMs,
        signal,
        stillAlive: ready.stillAlive,
      });
    },
  };
}
