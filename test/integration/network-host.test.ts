/**
 * Real `ip` against a network namespace this test creates and deletes; the
 * host namespace is never touched.
 */
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { after, before, describe, it } from "node:test";
import { silentLogger } from "../../src/core/log/index.ts";
import { parseIpJson } from "../../src/core/network/index.ts";
import { createHostNetwork, type HostNetwork } from "../../src/sys/network/index.ts";
import { createProcessRunner, type Runner } from "../../src/sys/runner/index.ts";

const namespace = `banger-test-${randomBytes(4).toString("hex")}`;
const host = createProcessRunner();

/** Runs every command inside the test namespace and records what ran. */
function netnsRunner(inner: Runner, ns: string) {
  const commands: string[] = [];
  const runner: Runner = {
    run(argv, options) {
      commands.push(argv.join(" "));
      return inner.run(["ip", "netns", "exec", ns, ...argv], options);
    },
  };
  return { runner, commands };
}

async function links(): Promise<{ ifname: string; master?: string; flags?: string[] }[]> {
  const result = await host.run(["ip", "-n", namespace, "-j", "link", "show"]);
  return parseIpJson(result.stdout);
}

const isMutating = (command: string) => !command.includes(" show");

describe("host network in a namespace", () => {
  let recorded: ReturnType<typeof netnsRunner>;
  let network: HostNetwork;

  before(async () => {
    await host.run(["ip", "netns", "add", namespace]);
    recorded = netnsRunner(host, namespace);
    network = createHostNetwork({
      runner: recorded.runner,
      logger: silentLogger,
      bridge: "bgtest0",
      subnet: "10.77.0.0/24",
    });
  });

  after(async () => {
    await host.run(["ip", "netns", "del", namespace], { allowFailure: true });
  });

  it("ensureBridge builds the bridge once and is a read-only no-op the second time", async () => {
    await network.ensureBridge();
    const shown = await host.run(["ip", "-n", namespace, "-j", "-d", "addr", "show", "dev", "bgtest0"]);
    const [bridge] = parseIpJson(shown.stdout);
    assert.equal(bridge?.linkinfo?.info_kind, "bridge");
    assert.ok(bridge?.flags?.includes("UP"));
    assert.ok(bridge?.addr_info?.some((entry) => entry.local === "10.77.0.1" && entry.prefixlen === 24));
    assert.equal(recorded.commands.filter(isMutating).length, 3);

    const before = recorded.commands.length;
    await network.ensureBridge();
    const second = recorded.commands.slice(before);
    assert.deepEqual(second.filter(isMutating), [], `second call ran: ${second.join("; ")}`);
  });

  it("ensureBridge repairs a bridge that lost its address and went down", async () => {
    await host.run(["ip", "-n", namespace, "addr", "flush", "dev", "bgtest0"]);
    await host.run(["ip", "-n", namespace, "link", "set", "dev", "bgtest0", "down"]);
    const before = recorded.commands.length;
    await network.ensureBridge();
    assert.deepEqual(recorded.commands.slice(before).filter(isMutating), [
      "ip addr add 10.77.0.1/24 dev bgtest0",
      "ip link set dev bgtest0 up",
    ]);
  });

  it("creates taps on the bridge, recreates a leftover and deletes them", async () => {
    await network.createTap("bgr-aaaa");
    await network.createTap("bgr-bbbb");
    let current = await links();
    for (const tap of ["bgr-aaaa", "bgr-bbbb"]) {
      const entry = current.find((link) => link.ifname === tap);
      assert.equal(entry?.master, "bgtest0", tap);
      assert.ok(entry?.flags?.includes("UP"), tap);
    }
    assert.deepEqual(await network.listTaps(), ["bgr-aaaa", "bgr-bbbb"]);

    // A leftover: detached from the bridge, as after a crash and a bridge rebuild.
    await host.run(["ip", "-n", namespace, "link", "set", "dev", "bgr-aaaa", "nomaster"]);
    const before = recorded.commands.length;
    await network.createTap("bgr-aaaa");
    assert.ok(
      recorded.commands.slice(before).includes("ip link del dev bgr-aaaa"),
      "the leftover was replaced",
    );
    current = await links();
    assert.equal(current.find((link) => link.ifname === "bgr-aaaa")?.master, "bgtest0");

    await network.deleteTap("bgr-bbbb");
    await network.deleteTap("bgr-bbbb");
    assert.deepEqual(await network.listTaps(), ["bgr-aaaa"]);
  });

  it("removes leftover banger taps and leaves owned and foreign ones", async () => {
    await network.createTap("bgr-cccc");
    await network.createTap("bgr-dddd");
    await host.run(["ip", "-n", namespace, "tuntap", "add", "dev", "othertap", "mode", "tap"]);
    const removed = await network.removeLeftoverTaps(new Set(["bgr-cccc"]));
    assert.deepEqual(removed, ["bgr-aaaa", "bgr-dddd"]);
    const names = (await links()).map((link) => link.ifname).sort();
    assert.deepEqual(names, ["bgr-cccc", "bgtest0", "lo", "othertap"]);
    await host.run(["ip", "-n", namespace, "link", "del", "dev", "othertap"]);
  });

  it("tears everything down so only lo is left", async () => {
    await network.removeLeftoverTaps(new Set());
    await network.teardownBridge();
    await network.teardownBridge();
    assert.deepEqual(
      (await links()).map((link) => link.ifname),
      ["lo"],
    );
  });
});
