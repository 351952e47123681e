/** Readiness: sshd in the guest answers with its banner. */
import type { GuestAccess, GuestReadiness } from "../platform.ts";

export function sshBanner(guest: GuestAccess): GuestReadiness {
  return {
    name: "ssh-banner",
    hint: "the guest's sshd never answered: read the console for a boot that stopped early",
    announce: (vmName) => ({ step: "vm.ssh", message: `waiting for ${vmName} to answer SSH` }),
    wait: (ready, signal) =>
      guest.waitForBanner({
        ip: ready.vm.guestIp,
        deadlineMs: ready.deadlineMs,
        signal,
        stillAlive: ready.stillAlive,
      }),
  };
}
