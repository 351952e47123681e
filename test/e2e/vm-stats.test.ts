/**
 * `vm stats` and `vm health` on a real guest under QEMU (TCG): plausible
 * host and guest numbers while it runs, a failing health check named after
 * a kill, disk bytes still reported for the stopped VM, nothing left behind.
 */
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { createE2eEnv, type E2eEnv, e2eSkipReason } from "../helpers/e2e.ts";

const skip = e2eSkipReason();
const MIB = 1024 * 1024;
const GIB = 1024 * MIB;
/** exitStatusFor[GUEST_UNREACHABLE]: the status `vm health` exits with when a check fails. */
const UNHEALTHY_STATUS = 7;

describe("vm stats and vm health on a real guest (QEMU)", { skip }, () => {
  let env: E2eEnv;
  before(() => {
    env = createE2eEnv({ name: "stats" });
  });
  after(async () => {
    await env?.dispose();
  });

  it("reports plausible VMM, disk and guest numbers for a running VM", async () => {
    const created = await env.banger(["vm", "create", "gauge", "--json"]);
    assert.equal(created.code, 0, created.stderr);
    const info = JSON.parse(created.stdout);

    const run = await env.banger(["vm", "stats", "gauge", "--json"]);
    assert.equal(run.code, 0, run.stderr);
    const stats = JSON.parse(run.stdout);
    assert.equal(stats.name, "gauge");
    assert.equal(stats.state, "running");

    assert.equal(stats.vmmUnavailable, null);
    assert.equal(stats.vmm.pid, info.pid);
    assert.ok(stats.vmm.rssBytes > 16 * MIB, `vmm rss ${stats.vmm.rssBytes}`);
    assert.equal(typeof stats.vmm.cpuPercent, "number");
    assert.ok(stats.vmm.cpuPercent >= 0, `cpu ${stats.vmm.cpuPercent}`);
    assert.ok(stats.vmm.sampleMs > 0);

    assert.equal(stats.diskUnavailable, null);
    assert.ok(stats.disk.path.endsWith("root.qcow2"), stats.disk.path);
    assert.ok(stats.disk.allocatedBytes > 0, `disk allocated ${stats.disk.allocatedBytes}`);
    assert.ok(stats.disk.apparentBytes > 0);

    assert.equal(stats.guestUnavailable, null, stats.guestUnavailable);
    const guest = stats.guest;
    assert.ok(guest.uptimeSeconds > 0, `uptime ${guest.uptimeSeconds}`);
    assert.ok(guest.memoryTotalBytes > 0);
    assert.ok(guest.memoryTotalBytes <= info.memoryMib * MIB, `guest memory ${guest.memoryTotalBytes}`);
    assert.ok(guest.memoryAvailableBytes > 0 && guest.memoryAvailableBytes <= guest.memoryTotalBytes);
    assert.ok(guest.rootfsUsedBytes > 0, `rootfs used ${guest.rootfsUsedBytes}`);
    assert.ok(guest.rootfsSizeBytes > guest.rootfsUsedBytes);
    assert.ok(guest.rootfsSizeBytes <= info.diskGib * GIB, `rootfs size ${guest.rootfsSizeBytes}`);

    const human = await env.banger(["vm", "stats", "gauge"]);
    assert.equal(human.code, 0, human.stderr);
    assert.match(human.stdout, /^vmm rss\s+\d/m);
    assert.match(human.stdout, /^guest memory\s+.* available of /m);
  });

  it("vm health passes every check while the guest answers", async () => {
    const human = await env.banger(["vm", "health", "gauge"]);
    assert.equal(human.code, 0, human.stderr);
    assert.match(human.stdout, /^agent\s+ok\s/m);
    const json = await env.banger(["vm", "health", "gauge", "--json"]);
    assert.equal(json.code, 0, json.stderr);
    const health = JSON.parse(json.stdout);
    assert.equal(health.healthy, true);
    assert.deepEqual(
      health.checks.map((check: { name: string; ok: boolean }) => [check.name, check.ok]),
      [
        ["vmm", true],
        ["agent", true],
        ["ssh-banner", true],
      ],
    );
  });

  it("after a kill, health fails naming the vmm check and stats still reports disk bytes", async () => {
    const kill = await env.banger(["vm", "kill", "gauge"]);
    assert.equal(kill.code, 0, kill.stderr);

    const human = await env.banger(["vm", "health", "gauge"]);
    assert.equal(human.code, UNHEALTHY_STATUS, human.stderr);
    assert.match(human.stderr, /not healthy: vmm, agent, ssh-banner failed \(vmm: /);
    assert.match(human.stdout, /^vmm\s+fail\s/m);
    const json = await env.banger(["vm", "health", "gauge", "--json"]);
    assert.equal(json.code, UNHEALTHY_STATUS);
    const health = JSON.parse(json.stdout);
    assert.equal(health.healthy, false);
    assert.deepEqual(health.checks[0], {
      name: "vmm",
      ok: false,
      detail: "the VMM process is not running (the VM is stopped)",
    });

    const run = await env.banger(["vm", "stats", "gauge", "--json"]);
    assert.equal(run.code, 0, run.stderr);
    const stats = JSON.parse(run.stdout);
    assert.equal(stats.state, "stopped");
    assert.ok(stats.disk.allocatedBytes > 0);
    assert.equal(stats.vmm, null);
    assert.match(stats.vmmUnavailable, /not running/);
    assert.equal(stats.guest, null);
    assert.match(stats.guestUnavailable, /not running/);
  });

  it("answers VM_NOT_FOUND for an unknown VM, then deletes the VM and leaves nothing behind", async () => {
    const missing = await env.banger(["vm", "stats", "nope"]);
    assert.equal(missing.code, 4);
    assert.match(missing.stderr, /no VM named 'nope'/);

    const del = await env.banger(["vm", "delete", "gauge"]);
    assert.equal(del.code, 0, del.stderr);
    assert.deepEqual(JSON.parse((await env.banger(["vm", "ls", "--json"])).stdout), []);
    assert.deepEqual(env.taps(), []);
    assert.deepEqual(env.qemuPids(), []);
    assert.deepEqual(env.vmDirs(), []);
  });
});
