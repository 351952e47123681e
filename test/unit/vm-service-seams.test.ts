/**
 * The VM service's seams on the fake platform: a readiness check added to
 * the list runs in the boot's awaitGuest step (its failure fails the start,
 * unwinds it, and its hint leads the error's), and a guest channel given in
 * the deps carries every guest command instead of SSH.
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import type { GuestChannel, GuestReadiness, OpOptions } from "../../src/daemon/vm/index.ts";
import { createVmService, sshReadiness } from "../../src/daemon/vm/index.ts";
import { BangerError, ErrorCode } from "../../src/protocol/index.ts";
import { createFakeVmPlatform } from "../fakes/vm-platform/index.ts";
import { rejectsWithCode } from "../helpers/assert.ts";

const options = (): OpOptions => ({ signal: new AbortController().signal, progress: () => {} });

/** A readiness check that records the VMs it saw and fails while `failing` is set. */
function agentPing(seen: string[], state: { failing: boolean }): GuestReadiness {
  return {
    name: "agent-ping",
    hint: "the guest agent did not answer",
    announce: (vmName) => ({ step: "vm.agent", message: `waiting for ${vmName}'s agent` }),
    async wait(guest) {
      seen.push(guest.vm.name);
      if (state.failing) throw new BangerError(ErrorCode.GUEST_UNREACHABLE, "agent ping timed out");
    },
  };
}

describe("VM service seams", () => {
  it("runs an added readiness check after SSH's, and a failing one fails the start with its hint", async () => {
    const seen: string[] = [];
    const state = { failing: true };
    await using platform = createFakeVmPlatform();
    const service = createVmService({
      ...platform.deps,
      readiness: [...sshReadiness(platform.deps.guest), agentPing(seen, state)],
    });
    const steps: string[] = [];
    const failed = await rejectsWithCode(
      service.create({ name: "agent" }, { ...options(), progress: (event) => steps.push(event.step) }),
      ErrorCode.GUEST_UNREACHABLE,
      /agent ping timed out/,
    );
    assert.match(
      failed.hint ?? "",
      /^the guest agent did not answer; the VMM's own log is .*vmm\.log; the guest console is /,
    );
    assert.deepEqual(seen, ["agent"]);
    assert.ok(
      steps.indexOf("vm.ssh") < steps.indexOf("vm.agent"),
      `SSH's checks ran first: ${steps.join(", ")}`,
    );
    assert.deepEqual(platform.held(), [], "the failed create left nothing");
    state.failing = false;
    assert.equal((await service.create({ name: "agent" }, options())).state, "running");
  });

  it("sends exec through the channel given in the deps", async () => {
    await using platform = createFakeVmPlatform();
    const calls: string[] = [];
    const channel: GuestChannel = {
      async exec(target, exec) {
        calls.push(`exec ${target.vmId} ${exec.argv.join(" ")}`);
        return { exitCode: 0, signal: null };
      },
      async openTcp() {
        throw new BangerError(ErrorCode.GUEST_UNREACHABLE, "no tcp here");
      },
      async close(target) {
        calls.push(`close ${target.vmId}`);
      },
    };
    const service = createVmService({ ...platform.deps, channel });
    const vm = await service.create({ name: "chan" }, options());
    assert.deepEqual(await service.exec("chan", { argv: ["uname", "-a"] }), { exitCode: 0, signal: null });
    assert.deepEqual(
      calls,
      [`exec ${vm.id} true`, `exec ${vm.id} uname -a`],
      "readiness and exec used the channel",
    );
    assert.equal(platform.events.count("exec"), 0, "nothing went over the SSH fake");
    await service.stop("chan", options());
    assert.ok(calls.includes(`close ${vm.id}`), "stop closed the channel");
  });
});
