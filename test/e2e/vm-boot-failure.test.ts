/**
 * A guest that never boots (its initramfs init does not exist, so the
 * kernel cannot mount a root and panics; `root=` would not do, because
 * Firecracker appends its own): create fails with a clear error carrying
 * the console tail, and nothing is left behind, with either driver.
 */
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { createE2eEnv, type E2eEnv, e2eSkipReason } from "../helpers/e2e.ts";
import { vmmConfig } from "./vm-suite.ts";

for (const vmm of ["qemu", "firecracker"] as const) {
  describe(`a guest that never boots (${vmm})`, { skip: e2eSkipReason() }, () => {
    let env: E2eEnv;
    before(() => {
      env = createE2eEnv({
        name: `noboot-${vmm.slice(0, 2)}`,
        config: `[vm]\nboot_timeout_s = 60\nkernel_args = ["rdinit=/no-such-init"]\n${vmmConfig(vmm)}`,
      });
    });
    after(async () => {
      await env?.dispose();
    });

    it("fails with a clear error and the console tail, and leaks nothing", async () => {
      const run = await env.banger(["vm", "run", "--name", "broken", "--", "true"]);
      assert.notEqual(run.code, 0);
      assert.match(run.stderr, /VM 'broken' failed to start/);
      assert.match(run.stderr, /console tail/);
      assert.match(run.stderr, /the VMM exited before the guest agent answered/);
      assert.match(run.stderr, /hint: .*banger vm logs broken/);
      assert.deepEqual(JSON.parse((await env.banger(["vm", "ls", "--json"])).stdout), []);
      assert.deepEqual(env.taps(), []);
      assert.deepEqual(env.qemuPids(), []);
      assert.deepEqual(env.vmDirs(), []);
    });
  });
}
