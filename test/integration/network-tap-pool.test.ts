/**
 * The TAP pool with real `ip` in a network namespace this test creates and
 * deletes: pool taps are attached to the bridge and down, a claim renames
 * one to the VM's tap name and sets it up, a new daemon's pool adopts what
 * the last one left, and teardown leaves no pool tap behind.
 */
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { after, before, describe, it } from "node:test";
import { silentLogger } from "../../src/core/log/index.ts";
import { type IpLinkInfo, parseIpJson } from "../../src/core/network/index.ts";
import { createTapPool, type TapPool } from "../../src/daemon/network/index.ts";
import { createHostNetwork, type HostNetwork } from "../../src/sys/network/index.ts";
import { createProcessRunner, type Runner } from "../../src/sys/runner/index.ts";

const namespace = `banger-test-${randomBytes(4).toString("hex")}`;
const host = createProcessRunner();
const inNamespace: Runner = {
  run: (argv, options) => host.run(["ip", "netns", "exec", namespace, ...argv], options),
};

async function taps(): Promise<Map<string, IpLinkInfo>> {
  const result = await host.run(["ip", "-n", namespace, "-j", "link", "show", "type", "tun"]);
  return new Map(parseIpJson(result.stdout).map((entry) => [entry.ifname, entry]));
}

describe("the TAP pool in a namespace", () => {
  let network: HostNetwork;
  const pools: TapPool[] = [];
  const newPool = (running: () => boolean = () => false) => {
    const pool = createTapPool({
      size: 2,
      host: network,
      anyVm: () => true,
      anyVmRunning: running,
      logger: silentLogger,
    });
    pools.push(pool);
    return pool;
  };

  before(async () => {
    await host.run(["ip", "netns", "add", namespace]);
    network = createHostNetwork({
      runner: inNamespace,
      logger: silentLogger,
      bridge: "bgtest0",
      subnet: "10.77.0.0/24",
    });
  });

  after(async () => {
    for (const pool of pools) await pool.idle();
    await host.run(["ip", "netns", "del", namespace], { allowFailure: true });
  });

  it("fills with attached, down taps and hands one out renamed and up", async () => {
    const pool = newPool();
    await pool.ensure(new AbortController().signal);
    await pool.idle();
    let found = await taps();
    assert.deepEqual([...found.keys()].sort(), ["bgp-0", "bgp-1"]);
    for (const tap of found.values()) {
      assert.equal(tap.master, "bgtest0");
      assert.ok(!tap.flags?.includes("UP"), `${tap.ifname} is down`);
    }

    await pool.createTap("bgr-pooltest1");
    found = await taps();
    const claimed = found.get("bgr-pooltest1");
    assert.equal(claimed?.master, "bgtest0");
    assert.ok(claimed?.flags?.includes("UP"));
    assert.ok(!found.has("bgp-0"), "bgp-0 became the VM's tap");
    await pool.idle();
    assert.deepEqual([...(await taps()).keys()].sort(), ["bgp-0", "bgp-1", "bgr-pooltest1"]);
    await network.deleteTap("bgr-pooltest1");
  });

  it("replaces a leftover device of the VM's tap name when claiming", async () => {
    const pool = pools[0] as TapPool;
    await host.run(["ip", "-n", namespace, "tuntap", "add", "dev", "bgr-pooltest2", "mode", "tap"]);
    await pool.createTap("bgr-pooltest2");
    const claimed = (await taps()).get("bgr-pooltest2");
    assert.equal(claimed?.master, "bgtest0", "the leftover (no master) was replaced by the pool tap");
    await pool.idle();
    await network.deleteTap("bgr-pooltest2");
  });

  it("a new daemon's pool adopts the taps left while VMs ran, and teardown removes them", async () => {
    await (pools[0] as TapPool).teardown();
    assert.deepEqual(
      [...(await taps()).keys()],
      [],
      "no VM runs: the first pool's teardown removed its taps",
    );

    const first = newPool(() => true);
    await first.ensure(new AbortController().signal);
    await first.idle();
    await first.teardown();
    const left = [...(await taps()).keys()].sort();
    assert.deepEqual(left, ["bgp-0", "bgp-1"], "kept for the next daemon while VMs run");
    // A pool tap someone set up is not one banger would hand out.
    await host.run(["ip", "-n", namespace, "link", "set", "dev", "bgp-1", "up"]);

    const second = newPool();
    await second.ensure(new AbortController().signal);
    await second.idle();
    const found = await taps();
    assert.deepEqual([...found.keys()].sort(), ["bgp-0", "bgp-1"]);
    assert.ok(!found.get("bgp-1")?.flags?.includes("UP"), "bgp-1 was removed and made afresh");
    await second.teardown();
    assert.deepEqual([...(await taps()).keys()], [], "no tap left");
  });
});
