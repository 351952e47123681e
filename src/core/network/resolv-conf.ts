/** The upstream resolvers of a resolv.conf. */
import { isIpv4 } from "./ipv4.ts";

/**
 * The IPv4 `nameserver` addresses in order, without those in `exclude`
 * (banger's own listen addresses: forwarding to itself would loop).
 * resolv.conf's limit of three servers is applied after the exclusion.
 */
export function parseResolvConf(text: string, exclude: ReadonlySet<string> = new Set()): string[] {
  const servers: string[] = [];
  for (const line of text.split("\n")) {
    const match = /^\s*nameserver\s+(\S+)/.exec(line);
    const address = match?.[1];
    if (address !== undefined && isIpv4(address) && !exclude.has(address) && !servers.includes(address)) {
      servers.push(address);
    }
  }
  return servers.slice(0, 3);
}
