/** Readiness: the guest agent said hello on its channel (and the guest clock is set from the host's). */
import type { GuestAgents, GuestReadiness } from "../platform.ts";

export function agentReady(agents: GuestAgents): GuestReadiness {
  return {
    name: "agent-ready",
    hint: "the guest agent never answered: read the console for a boot that stopped early, or a missing /.banger/agent",
    announce: (vmName) => ({ step: "vm.agent", message: `waiting for ${vmName}'s guest agent` }),
    async wait(ready, signal) {
      await agents.connect(ready.vm.id, ready.target.agent, {
        deadlineMs: Date.now() + ready.deadlineMs,
        signal,
        stillAlive: ready.stillAlive,
      });
    },
  };
}
