/** Readiness: the host key the guest printed on its console is pinned for this VM. */
import type { GuestAccess, GuestReadiness } from "../platform.ts";

export function pinnedHostKey(guest: GuestAccess): GuestReadiness {
  return {
    name: "pinned-host-key",
    hint: "banger-init prints the guest's host key on the console before sshd starts; the console should show it",
    wait: (ready) =>
      guest.pinHostKey({
        consoleLog: ready.paths.console,
        ip: ready.vm.guestIp,
        knownHostsFile: ready.paths.knownHosts,
      }),
  };
}
