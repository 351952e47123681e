/**
 * The guest readiness checks a boot waits for, in order. A new check (a
 * guest agent's ping) is a file beside these plus one entry in the list the
 * composition root passes as `readiness`.
 */
import type { GuestAccess, GuestAgents, GuestChannel, GuestReadiness, VmFiles } from "../platform.ts";
import { agentReady } from "./agent-ready.ts";
import { pinnedHostKey } from "./pinned-host-key.ts";
import { sshBanner } from "./ssh-banner.ts";
import { sshOffered } from "./ssh-offered.ts";
import { sshTrue } from "./ssh-true.ts";

/** Today's checks: sshd answers, its host key is pinned from the console, a command runs. */
export function sshReadiness(guest: GuestAccess, channel: GuestChannel = guest): GuestReadiness[] {
  return [sshBanner(guest), pinnedHostKey(guest), sshTrue(channel)];
}

/** With the guest agent: its hello, then (on images with sshd) the pinned host key and the banner. */
export function agentReadiness(
  agents: GuestAgents,
  guest: GuestAccess,
  files: Pick<VmFiles, "tail">,
): GuestReadiness[] {
  return [agentReady(agents), sshOffered(guest, files)];
}

/**
 * What a clone restored from a snapshot waits for before its identity is
 * applied: the agent's hello alone (on its own channel, so it needs none of
 * the guest's network, which still has the source's address).
 */
export function agentRestoreReadiness(agents: GuestAgents): GuestReadiness[] {
  return [agentReady(agents)];
}
