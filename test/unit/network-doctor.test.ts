/** The network's doctor checks over fake adapters. */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import dnsPacket from "dns-packet";
import { parseSubnet } from "../../src/core/network/index.ts";
import type { DnsFeature } from "../../src/daemon/network/dns.ts";
import { networkDoctorChecks } from "../../src/daemon/network/doctor.ts";
import type { NatFeature } from "../../src/daemon/network/nat.ts";
import type { Firewall, IpForward } from "../../src/sys/network/index.ts";

const dockerRuleset = JSON.stringify({
  nftables: [{ chain: { family: "ip", table: "filter", name: "FORWARD", hook: "forward", policy: "drop" } }],
});

function deps(options: {
  started: boolean;
  rules?: number;
  forward?: string;
  listening?: string[];
  ruleset?: string;
}) {
  const firewall: Firewall = {
    apply: async () => undefined,
    signature: async () => undefined,
    ruleCount: async () => options.rules,
    dropCounts: async () => new Map(),
    ruleset: async () => options.ruleset ?? '{"nftables":[]}',
  };
  const ipForward: IpForward = {
    read: async () => options.forward ?? "1",
    enable: async () => undefined,
    restore: async () => undefined,
  };
  const nat = {
    started: options.started,
    down: options.rules === undefined ? "nft: not found" : undefined,
  } as NatFeature;
  const dns = {
    listening: options.listening ?? [],
    hostRouting: { ok: false, detail: "systemd-resolved is not running" },
    handle: async (message: Buffer) =>
      dnsPacket.encode({
        type: "response",
        id: message.readUInt16BE(0),
        questions: [{ type: "SOA", name: "vm" }],
        answers: [
          {
            type: "SOA",
            name: "vm",
            data: { mname: "ns.vm", rname: "h.vm", serial: 1, refresh: 1, retry: 1, expire: 1, minimum: 1 },
          },
        ],
      }),
  } as unknown as DnsFeature;
  return {
    bridge: "banger0",
    subnet: parseSubnet("10.77.0.0/24"),
    domain: "vm",
    firewall,
    ipForward,
    nat,
    dns,
    bridgeAddresses: async () => ["10.77.0.1/24"],
  };
}

describe("network doctor checks", () => {
  it("before the first VM: says the network waits for it, and still looks for a dropping forward policy", async () => {
    const checks = await networkDoctorChecks(deps({ started: false, ruleset: dockerRuleset }));
    assert.deepEqual(
      checks.map((check) => [check.name, check.status]),
      [
        ["network", "ok"],
        ["forward-policy", "warn"],
      ],
    );
    assert.match(checks[1]?.detail ?? "", /ip filter FORWARD/);
    assert.match(checks[1]?.hint ?? "", /iptables -I FORWARD -i banger0 -j ACCEPT/);
  });

  it("once up: the table and its rules, ip_forward, the bridge, DNS answering, host resolution", async () => {
    const checks = await networkDoctorChecks(deps({ started: true, rules: 17, listening: ["10.77.0.1:53"] }));
    assert.deepEqual(
      checks.map((check) => [check.name, check.status]),
      [
        ["firewall", "ok"],
        ["ip-forward", "ok"],
        ["bridge", "ok"],
        ["dns", "ok"],
        ["host-dns", "warn"],
        ["forward-policy", "ok"],
      ],
    );
    assert.match(checks[0]?.detail ?? "", /17 rules/);
    assert.ok(
      checks.every((check) => check.status === "ok" || check.hint !== undefined),
      "every problem has a hint",
    );
  });

  it("reports what is missing with the reason and a fix", async () => {
    const checks = await networkDoctorChecks(deps({ started: true, forward: "0" }));
    const byName = new Map(checks.map((check) => [check.name, check]));
    assert.equal(byName.get("firewall")?.status, "fail");
    assert.match(byName.get("firewall")?.detail ?? "", /nft: not found/);
    assert.equal(byName.get("ip-forward")?.status, "fail");
    assert.equal(byName.get("dns")?.status, "fail");
    assert.ok([...byName.values()].filter((check) => check.status !== "ok").every((check) => check.hint));
  });
});
