/**
 * A warm pool on real guests, under both drivers (QEMU, and Firecracker
 * through the double): `[[pool]] count = 2` of the default
 * image fills at daemon start; two `vm run`s are served by its paused
 * members (each renamed, with the taker's hostname and DNS name) and the
 * pool refills; `vm ls` shows the taken VM and no member.
 */
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import { createE2eEnv, type E2eEnv, e2eSkipReason } from "../helpers/e2e.ts";
import { vmmConfig } from "./vm-suite.ts";

const skip = e2eSkipReason();
const FILL_TIMEOUT_MS = 300_000;

interface Pool {
  ready: number;
  target: number;
  members: { name: string; state: string; guestIp: string }[];
}

for (const vmm of ["qemu", "firecracker"] as const) definePoolSuite(vmm);

function definePoolSuite(vmm: "qemu" | "firecracker"): void {
  describe(`a warm pool on real guests (${vmm === "qemu" ? "QEMU" : "firecracker double"})`, { skip }, () => {
    let env: E2eEnv;
    before(() => {
      env = createE2eEnv({
        name: `pool-${vmm.slice(0, 2)}`,
        config: `${vmmConfig(vmm)}[[pool]]\ncount = 2\n`,
      });
    });
    after(async () => {
      await env?.dispose();
    });

    const pool = async (): Promise<Pool> => {
      const listed = await env.banger(["pool", "ls", "--json"]);
      assert.equal(listed.code, 0, listed.stderr);
      return (JSON.parse(listed.stdout) as Pool[])[0]!;
    };
    const untilReady = async (count: number): Promise<Pool> => {
      const deadline = Date.now() + FILL_TIMEOUT_MS;
      for (;;) {
        const current = await pool();
        if (current.ready >= count) return current;
        assert.ok(Date.now() < deadline, `the pool has ${current.ready} of ${count} ready`);
        await sleep(500);
      }
    };

    it("serves two vm runs from paused members, each with the taker's name, and refills", async () => {
      const full = await untilReady(2);
      assert.equal(full.target, 2);
      const memberIps = new Set(full.members.map((member) => member.guestIp));
      assert.ok(
        full.members.every((member) => member.name.startsWith("pool-default-") && member.state === "paused"),
      );

      const first = await env.banger(["vm", "run", "--name", "taken", "--", "hostname"]);
      assert.equal(first.code, 0, first.stderr);
      assert.equal(first.stdout.trim(), "taken");
      const taken = JSON.parse((await env.banger(["vm", "show", "taken", "--json"])).stdout);
      assert.ok(memberIps.has(taken.guestIp), "the VM is a former pool member");

      const second = await env.banger(["vm", "run", "--rm", "--", "getent", "hosts", "taken.vm"]);
      assert.equal(second.code, 0, second.stderr);
      assert.match(
        second.stdout,
        new RegExp(`^${taken.guestIp.replaceAll(".", "\\.")}\\s`),
        "the new name resolves",
      );

      const listed = JSON.parse((await env.banger(["vm", "ls", "--json"])).stdout) as { name: string }[];
      assert.deepEqual(
        listed.map((vm) => vm.name),
        ["taken"],
        "vm ls shows the taken VM and no pool member",
      );
      const refilled = await untilReady(2);
      for (const member of refilled.members)
        assert.ok(!memberIps.has(member.guestIp) || member.guestIp !== taken.guestIp);
    });
  });
}
