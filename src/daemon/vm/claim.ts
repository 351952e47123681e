/**
 * Taking a warm pool member for a create (`claimLocked`, under the member's
 * lock): the paused member is renamed to the taker's name (under the
 * reservation mutex, which also guards every create's name check), resumed
 * (its clock set from the host), and given the new hostname through the
 * guest channel. Its address, MAC, machine-id and host key are already its
 * own: it was booted, or restored with its own identity, when the pool
 * filled.
 */
import { hostnameStep } from "../../core/snapshot/index.ts";
import { type VmRecord, validateVmName } from "../../core/vm/index.ts";
import { BangerError, ErrorCode } from "../../protocol/index.ts";
import type { OpOptions, VmContext } from "./context.ts";
import { runGuestStep } from "./restore.ts";
import { pauseOrResume } from "./stop.ts";

export async function claimLocked(
  ctx: VmContext,
  member: VmRecord,
  name: string | undefined,
  options: OpOptions,
): Promise<VmRecord> {
  const { deps } = ctx;
  if (member.state !== "paused" || !(await ctx.isAlive(member))) {
    throw new BangerError(
      ErrorCode.BAD_STATE,
      `pool member '${member.name}' is not ready (it is ${member.state})`,
    );
  }
  if (name !== undefined) validateVmName(name);
  const renamed = await deps.reservation.run(() => {
    const chosen = name ?? `vm-${deps.newId().slice(0, 6)}`;
    if (deps.store.getVmByName(chosen)) {
      throw new BangerError(ErrorCode.NAME_TAKEN, `a VM named '${chosen}' already exists`);
    }
    const updatedAt = deps.now().toISOString();
    deps.store.renameVm(member.id, chosen, updatedAt);
    return { ...member, name: chosen, updatedAt };
  });
  options.progress({ step: "vm.identity", message: `taking a warm VM from the pool as ${renamed.name}` });
  const running = await pauseOrResume(ctx, renamed, "resume");
  await runGuestStep(ctx, ctx.target(running), hostnameStep(running.name), options.signal);
  options.progress({
    step: "vm.ready",
    message: `${running.name} is running (${running.guestIp})`,
    status: "done",
  });
  return running;
}
