import assert from "node:assert/strict";
import { describe, it } from "node:test";
import {
  countRules,
  firewallSignature,
  formatEgressPolicy,
  nameAllowed,
  parseDropCounts,
  parseEgressPolicy,
  parseFirewallSignature,
  parseSubnet,
  planEgressAllow,
  planEgressChange,
  planFirewallApply,
  planFirewallTables,
  planFirewallTeardown,
  planVmElements,
} from "../../src/core/network/index.ts";
import { BangerError, ErrorCode } from "../../src/protocol/index.ts";

const inputs = { bridge: "banger0", subnet: parseSubnet("10.77.0.0/24"), vmToVm: true };
const vm = { tap: "bgr-abc", mac: "52:54:00:AB:CD:EF", ip: "10.77.0.2", egress: { mode: "allow" as const } };

describe("firewall planner", () => {
  it("masquerades the subnet out of anything but the bridge and lets only DNS reach the gateway", () => {
    const script = planFirewallTables(inputs);
    assert.match(script, /ip saddr 10\.77\.0\.0\/24 oifname != "banger0" masquerade/);
    assert.match(
      script,
      /iifname "banger0" ip daddr 10\.77\.0\.1 meta l4proto \{ tcp, udp \} th dport 53 accept/,
    );
    assert.match(script, /iifname "banger0" drop\n {2}\}/, "input from guests ends in a drop");
    assert.match(
      script,
      /ip daddr 10\.77\.0\.1 meta l4proto \{ tcp, udp \} th dport 53 iifname != \{ "banger0", "lo" \} drop/,
    );
    assert.match(
      script,
      /iifname "banger0" oifname "banger0" accept\n {4}oifname "banger0" ct state established,related accept\n {4}oifname "banger0" drop/,
      "guest-to-guest frames seen through br_netfilter are the bridge table's business",
    );
    assert.match(script, /ether type ip iifname \. ether saddr \. ip saddr != @vm_ports drop/);
    assert.match(script, /ether type arp iifname \. ether saddr \. arp saddr ip != @vm_ports drop/);
    assert.match(script, new RegExp(`comment "banger:${firewallSignature(inputs)}"`));
  });

  it("cuts tap-to-tap traffic only when vm_to_vm is off, and says so in the signature", () => {
    const isolated = { ...inputs, vmToVm: false };
    assert.doesNotMatch(planFirewallTables(inputs), /oifname "bgr-\*" drop/);
    assert.match(planFirewallTables(isolated), /iifname "bgr-\*" oifname "bgr-\*" drop/);
    assert.notEqual(firewallSignature(inputs), firewallSignature(isolated));
  });

  it("recreates the tables only when the signature differs, and always refills the per-VM sets", () => {
    const fresh = planFirewallApply({ inputs, currentSignature: undefined, vms: [vm] });
    assert.ok(fresh.startsWith(planFirewallTeardown()), "old tables are deleted in the same transaction");
    assert.equal(fresh.match(/^table inet banger \{$/gm)?.length, 1, "one copy of the table body");
    const same = planFirewallApply({ inputs, currentSignature: firewallSignature(inputs), vms: [vm] });
    assert.doesNotMatch(same, /delete table|^table /m);
    assert.match(same, /^flush set bridge banger vm_ports$/m);
    assert.match(
      same,
      /add element bridge banger vm_ports \{ "bgr-abc" \. 52:54:00:ab:cd:ef \. 10\.77\.0\.2 \}/,
    );
  });

  it("puts a VM into the egress set of its policy and moves it between them", () => {
    assert.doesNotMatch(planVmElements(vm, "add"), /vm_denied|vm_limited/);
    assert.match(
      planVmElements({ ...vm, egress: { mode: "deny" } }, "delete"),
      /delete element inet banger vm_denied \{ 10\.77\.0\.2 \}/,
    );
    const change = planEgressChange("10.77.0.2", { mode: "deny" }, { mode: "list", domains: ["a.test"] });
    assert.equal(
      change,
      "delete element inet banger vm_denied { 10.77.0.2 }\nadd element inet banger vm_limited { 10.77.0.2 }\n",
    );
    assert.equal(planEgressChange("10.77.0.2", { mode: "allow" }, { mode: "allow" }), "");
  });

  it("allows resolved addresses for their TTL, skipping anything that is not IPv4", () => {
    assert.equal(
      planEgressAllow("10.77.0.2", ["198.51.100.7", "not-an-ip", "198.51.100.8"], 0.4),
      "add element inet banger egress_allowed { 10.77.0.2 . 198.51.100.7 timeout 1s, 10.77.0.2 . 198.51.100.8 timeout 1s }\n",
    );
    assert.equal(planEgressAllow("10.77.0.2", [], 60), "");
  });

  it("refuses values that would change the script's meaning", () => {
    const invalid = (error: unknown) =>
      error instanceof BangerError && error.code === ErrorCode.INVALID_PARAMS;
    assert.throws(() => planVmElements({ ...vm, mac: '52:54:00:00:00:00" }' }, "add"), invalid);
    assert.throws(() => planVmElements({ ...vm, ip: "10.77.0.2 } ; flush ruleset" }, "add"), invalid);
    assert.throws(() => planVmElements({ ...vm, tap: 'bgr" accept' }, "add"), /interface name/);
    assert.throws(() => planEgressAllow("x", ["1.2.3.4"], 5), invalid);
  });

  it("reads back the signature, the rule count and the drop counters", () => {
    assert.equal(
      parseFirewallSignature('table inet banger {\n\tcomment "banger:0123456789abcdef"\n'),
      "0123456789abcdef",
    );
    assert.equal(parseFirewallSignature("table inet banger {\n"), undefined);
    const json = JSON.stringify({
      nftables: [
        { metainfo: {} },
        {
          set: {
            name: "egress_dropped",
            elem: [{ elem: { val: "10.77.0.2", counter: { packets: 7, bytes: 420 } } }],
          },
        },
        { rule: {} },
        { rule: {} },
      ],
    });
    assert.deepEqual([...parseDropCounts(json)], [["10.77.0.2", 7]]);
    assert.equal(countRules(json), 2);
  });
});

describe("egress policy text", () => {
  it("parses allow, deny and name lists, and formats them back", () => {
    assert.deepEqual(parseEgressPolicy("allow"), { mode: "allow" });
    assert.deepEqual(parseEgressPolicy(" DENY "), { mode: "deny" });
    const list = parseEgressPolicy("example.com,*.debian.org,example.com.");
    assert.deepEqual(list, { mode: "list", domains: ["example.com", "*.debian.org"] });
    assert.equal(formatEgressPolicy(list), "example.com,*.debian.org");
  });

  it("refuses what is not a name list, naming the culprit", () => {
    assert.throws(() => parseEgressPolicy("exa mple.com"), /'exa mple\.com' is not a DNS name/);
    assert.throws(() => parseEgressPolicy(",,"), /no name given/);
    assert.throws(
      () => parseEgressPolicy("a.*.com"),
      (error: unknown) => error instanceof BangerError && error.hint !== undefined,
    );
  });

  it("matches exact names and *.suffix subdomains only; allow resolves everything, deny nothing", () => {
    const policy = parseEgressPolicy("example.com,*.debian.org");
    assert.ok(nameAllowed(policy, "EXAMPLE.com."));
    assert.ok(!nameAllowed(policy, "www.example.com"));
    assert.ok(nameAllowed(policy, "deb.debian.org"));
    assert.ok(!nameAllowed(policy, "debian.org"));
    assert.ok(!nameAllowed(policy, "evildebian.org"));
    assert.ok(nameAllowed({ mode: "allow" }, "anything"));
    assert.ok(!nameAllowed({ mode: "deny" }, "anything"), "deny forwards no query");
  });
});
