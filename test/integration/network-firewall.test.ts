/**
 * The firewall planner's ruleset applied for real (`nft -f -` through
 * createFirewall) in namespaces this test creates and deletes: a "host"
 * namespace with the bridge, and two "guest" namespaces plugged into it by
 * veth pairs named like taps. It proves, without booting a guest, that
 * guests reach each other (also where br_netfilter is loaded), that a
 * spoofed source address or MAC is dropped, that vm_to_vm = false cuts
 * guest-to-guest traffic, that only DNS on the gateway is reachable, that
 * re-applying leaves exactly one copy of every rule, that doctor reads a
 * foreign table's dropping forward policy (Docker's shape) from the real
 * ruleset while banger leaves that table alone, and that teardown leaves
 * no table.
 */
import assert from "node:assert/strict";
import { type ChildProcess, execFileSync, spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { silentLogger } from "../../src/core/log/index.ts";
import {
  type FirewallInputs,
  type FirewallVm,
  parseSubnet,
  planFirewallApply,
  planFirewallTeardown,
} from "../../src/core/network/index.ts";
import type { DnsFeature } from "../../src/daemon/network/dns.ts";
import { networkDoctorChecks } from "../../src/daemon/network/doctor.ts";
import type { NatFeature } from "../../src/daemon/network/nat.ts";
import { createFirewall, type Firewall } from "../../src/sys/network/index.ts";
import { createProcessRunner, type Runner } from "../../src/sys/runner/index.ts";

const id = randomBytes(3).toString("hex");
const hub = `f-net-fw-${id}`;
const guests = [
  { ns: `f-net-g1-${id}`, tap: "bgr-fwtest1", mac: "52:54:00:00:aa:02", ip: "10.77.0.2" },
  { ns: `f-net-g2-${id}`, tap: "bgr-fwtest2", mac: "52:54:00:00:aa:03", ip: "10.77.0.3" },
] as const;
const PROBE = join(import.meta.dirname, "..", "helpers", "tcp-probe.ts");
const skip = process.getuid?.() === 0 ? undefined : "needs root (network namespaces, nft)";

const ip = (...args: string[]) => execFileSync("ip", args, { stdio: ["ignore", "pipe", "pipe"] });
const inNs = (ns: string, ...argv: string[]) =>
  execFileSync("ip", ["netns", "exec", ns, ...argv], { encoding: "utf8" });
/** Whether a connection opens: waits long for what should work, 2 s for what should be dropped. */
const reaches = (ns: string, host: string, port: number, localAddress?: string, expect = false) => {
  const argv = [
    "netns",
    "exec",
    ns,
    process.execPath,
    PROBE,
    host,
    String(port),
    ...(localAddress ? [localAddress] : []),
  ];
  try {
    execFileSync("ip", argv, {
      env: { ...process.env, PROBE_TIMEOUT_MS: expect ? "20000" : "2000" },
      stdio: ["ignore", "ignore", expect ? "inherit" : "ignore"],
    });
    return true;
  } catch {
    return false;
  }
};

function listen(ns: string, port: number, host?: string): Promise<ChildProcess> {
  const child = spawn(
    "ip",
    ["netns", "exec", ns, process.execPath, PROBE, "listen", String(port), ...(host ? [host] : [])],
    {
      stdio: ["ignore", "pipe", "ignore"],
    },
  );
  return new Promise((resolve, reject) => {
    child.stdout?.on("data", () => resolve(child));
    child.once("exit", (code) => reject(new Error(`listener exited with ${code}`)));
  });
}

describe("the firewall ruleset in namespaces", { skip }, () => {
  const runner: Runner = {
    run: (argv, options) => createProcessRunner().run(["ip", "netns", "exec", hub, ...argv], options),
  };
  let firewall: Firewall;
  const listeners: ChildProcess[] = [];
  const inputs = (vmToVm: boolean): FirewallInputs => ({
    bridge: "bgfw0",
    subnet: parseSubnet("10.77.0.0/24"),
    vmToVm,
  });
  const vms: FirewallVm[] = guests.map((guest) => ({ ...guest, egress: { mode: "allow" } }));
  const apply = async (vmToVm: boolean) =>
    firewall.apply(
      planFirewallApply({ inputs: inputs(vmToVm), currentSignature: await firewall.signature(), vms }),
    );

  before(async () => {
    ip("netns", "add", hub);
    ip("-n", hub, "link", "set", "lo", "up");
    ip("-n", hub, "link", "add", "bgfw0", "type", "bridge");
    ip("-n", hub, "addr", "add", "10.77.0.1/24", "dev", "bgfw0");
    ip("-n", hub, "link", "set", "bgfw0", "up");
    for (const guest of guests) {
      ip("netns", "add", guest.ns);
      ip("link", "add", guest.tap, "netns", hub, "type", "veth", "peer", "name", "eth0", "netns", guest.ns);
      ip("-n", hub, "link", "set", guest.tap, "master", "bgfw0", "up");
      ip("-n", guest.ns, "link", "set", "eth0", "address", guest.mac);
      ip("-n", guest.ns, "addr", "add", `${guest.ip}/24`, "dev", "eth0");
      ip("-n", guest.ns, "link", "set", "eth0", "up");
      ip("-n", guest.ns, "link", "set", "lo", "up");
    }
    firewall = createFirewall({ runner, logger: silentLogger });
    await apply(true);
    listeners.push(await listen(guests[1].ns, 9000));
    listeners.push(await listen(hub, 8099, "10.77.0.1"));
    listeners.push(await listen(hub, 53, "10.77.0.1"));
  });

  after(() => {
    for (const listener of listeners) listener.kill("SIGKILL");
    for (const ns of [hub, ...guests.map((guest) => guest.ns)]) {
      try {
        ip("netns", "del", ns);
      } catch {
        // Already gone.
      }
    }
  });

  it("lets guests reach each other and DNS on the gateway, but no other gateway service", () => {
    assert.ok(reaches(guests[0].ns, guests[1].ip, 9000, undefined, true), "guest to guest");
    assert.ok(reaches(guests[0].ns, "10.77.0.1", 53, undefined, true), "DNS on the gateway");
    assert.ok(!reaches(guests[0].ns, "10.77.0.1", 8099), "another service on the gateway");
  });

  it("drops a guest's packets with another source address, or another MAC", () => {
    ip("-n", guests[0].ns, "addr", "add", "10.77.0.50/24", "dev", "eth0");
    assert.ok(!reaches(guests[0].ns, guests[1].ip, 9000, "10.77.0.50"), "spoofed source address");
    ip("-n", guests[0].ns, "addr", "del", "10.77.0.50/24", "dev", "eth0");
    ip("-n", guests[0].ns, "link", "set", "eth0", "address", "52:54:00:00:aa:99");
    ip("-n", guests[0].ns, "neigh", "flush", "all");
    assert.ok(!reaches(guests[0].ns, guests[1].ip, 9000), "spoofed MAC");
    ip("-n", guests[0].ns, "link", "set", "eth0", "address", guests[0].mac);
    for (const guest of guests) ip("-n", guest.ns, "neigh", "flush", "all");
    assert.ok(reaches(guests[0].ns, guests[1].ip, 9000, undefined, true), "its own addresses work again");
  });

  it("doctor names another table's dropping forward policy and how to allow the bridge; banger leaves that table alone", async () => {
    /** Doctor before the first VM: only the forward-policy check reads the host, through the real firewall. */
    const doctorDeps = () => ({
      bridge: "bgfw0",
      subnet: parseSubnet("10.77.0.0/24"),
      domain: "vm",
      firewall,
      ipForward: { read: async () => "1", enable: async () => undefined, restore: async () => undefined },
      nat: { started: false } as NatFeature,
      dns: {} as DnsFeature,
      bridgeAddresses: async () => ["10.77.0.1/24"],
    });
    // What Docker's iptables-nft leaves: table ip filter, chain FORWARD, policy drop.
    execFileSync("ip", ["netns", "exec", hub, "nft", "-f", "-"], {
      input:
        "table ip filter {\n  chain FORWARD {\n    type filter hook forward priority filter; policy drop;\n  }\n}\n",
    });
    try {
      const checks = await networkDoctorChecks(doctorDeps());
      const policy = checks.find((check) => check.name === "forward-policy");
      assert.equal(policy?.status, "warn");
      assert.match(policy?.detail ?? "", /forward chains that drop by policy: ip filter FORWARD/);
      assert.match(policy?.hint ?? "", /iptables -I FORWARD -i bgfw0 -j ACCEPT/);
      await apply(true);
      assert.match(inNs(hub, "nft", "list", "table", "ip", "filter"), /chain FORWARD \{[^}]*policy drop;/);
    } finally {
      execFileSync("ip", ["netns", "exec", hub, "nft", "delete", "table", "ip", "filter"]);
    }
    const clean = await networkDoctorChecks(doctorDeps());
    assert.equal(clean.find((check) => check.name === "forward-policy")?.status, "ok");
  });

  it("re-applying keeps one copy of every rule; vm_to_vm = false cuts guests apart; teardown leaves nothing", async () => {
    const count = await firewall.ruleCount();
    await apply(true);
    await apply(true);
    assert.equal(await firewall.ruleCount(), count);
    await apply(false);
    ip("-n", guests[0].ns, "neigh", "flush", "all");
    assert.ok(!reaches(guests[0].ns, guests[1].ip, 9000), "guest to guest with vm_to_vm = false");
    assert.ok(reaches(guests[0].ns, "10.77.0.1", 53, undefined, true), "DNS still works");
    await firewall.apply(planFirewallTeardown());
    assert.equal(inNs(hub, "nft", "list", "tables").trim(), "");
    assert.equal(await firewall.ruleCount(), undefined);
  });
});
