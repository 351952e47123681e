/**
 * Egress policy text (`--egress`, config `network.egress`): `allow`, `deny`,
 * or comma-separated DNS names where `*.suffix` stands for any name under
 * the suffix (not the suffix itself).
 */
import { BangerError, ErrorCode } from "../../protocol/index.ts";
import type { EgressPolicy } from "./nft-plans.ts";

const NAME = /^(\*\.)?[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?(\.[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?)*$/;

export function parseEgressPolicy(text: string): EgressPolicy {
  const value = text.trim().toLowerCase();
  if (value === "allow" || value === "deny") return { mode: value };
  const domains = value
    .split(",")
    .map((part) => part.trim().replace(/\.$/, ""))
    .filter((part) => part !== "");
  const bad = domains.find((domain) => !NAME.test(domain) || domain.length > 253);
  if (domains.length === 0 || bad !== undefined) {
    throw new BangerError(
      ErrorCode.INVALID_PARAMS,
      `egress '${text}': ${bad === undefined ? "no name given" : `'${bad}' is not a DNS name`}`,
      { hint: "use allow, deny, or names such as example.com,*.debian.org" },
    );
  }
  return { mode: "list", domains: [...new Set(domains)] };
}

export function formatEgressPolicy(policy: EgressPolicy): string {
  return policy.mode === "list" ? policy.domains.join(",") : policy.mode;
}

/**
 * True when the policy lets a VM resolve `name` through the upstream
 * resolvers. `deny` resolves nothing there: a forwarded query is itself
 * traffic leaving the host, with a name the guest chose (banger's own zone
 * is answered before any policy is asked).
 */
export function nameAllowed(policy: EgressPolicy, name: string): boolean {
  if (policy.mode === "allow") return true;
  if (policy.mode === "deny") return false;
  const wanted = name.toLowerCase().replace(/\.$/, "");
  return policy.domains.some((domain) =>
    domain.startsWith("*.") ? wanted.endsWith(domain.slice(1)) : wanted === domain,
  );
}
