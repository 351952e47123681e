/**
 * The IPv4 addresses of this network namespace's interfaces, re-read at
 * most every `refreshMs`: a DNS query from one of them comes from a process
 * of this namespace (the host side, e.g. systemd-resolved asking the
 * gateway), never from outside.
 */
import { networkInterfaces } from "node:os";

export function localAddressCheck(options: { refreshMs?: number } = {}): (address: string) => boolean {
  let readAt = Number.NEGATIVE_INFINITY;
  let addresses = new Set<string>();
  return (address) => {
    const now = performance.now();
    if (now - readAt >= (options.refreshMs ?? 5000)) {
      addresses = new Set(
        Object.values(networkInterfaces())
          .flatMap((entries) => entries ?? [])
          .filter((entry) => entry.family === "IPv4")
          .map((entry) => entry.address),
      );
      readAt = now;
    }
    return addresses.has(address);
  };
}
