/**
 * The guest channel over banger's guest agent: every exec (the user's, the
 * stats probe, health) runs through the VM's agent session, supervised by
 * exec.ts; file requests (`vm cp`) go to the same session; TCP connections
 * (`vm proxy`) go straight to the guest's address.
 * Closing the channel (stop, kill, reap) ends the session, so an exec in
 * flight ends with VM_STOPPED.
 */
import { BangerError, ErrorCode } from "../../protocol/index.ts";
import { superviseExec } from "./exec.ts";
import type { GuestAccess, GuestAgents, GuestChannel } from "./platform.ts";

export function agentChannel(
  agents: GuestAgents,
  guest: Pick<GuestAccess, "openTcp" | "close">,
): GuestChannel {
  return {
    async exec(target, exec) {
      const proc = await agents.exec(target.vmId, target.agent, {
        argv: exec.argv,
        env: exec.env,
        cwd: exec.cwd,
        user: exec.user,
        tty: exec.tty,
        detach: exec.detach,
        stdin: exec.detach ? undefined : exec.stdin,
        onStdout: exec.detach ? undefined : exec.onStdout,
        onStderr: exec.detach ? undefined : exec.onStderr,
      });
      return superviseExec(proc, exec);
    },
    openTcp: (target, port, signal) => guest.openTcp(target, port, signal),
    // Large writes may take a lane over the guest's network, as proxied connections do.
    files: (target) => agents.files(target.vmId, target.agent, { laneHost: target.ip }),
    async close(target) {
      agents.close(
        target.vmId,
        new BangerError(ErrorCode.VM_STOPPED, `VM '${target.vmName}' stopped while the command was running`, {
          hint: `start it again with \`banger vm start ${target.vmName}\``,
        }),
      );
      await guest.close(target);
    },
  };
}
