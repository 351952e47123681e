import assert from "node:assert/strict";
import { describe, it } from "node:test";
import {
  allocateGuestIp,
  gatewayCidr,
  guestKernelIpArg,
  intToIpv4,
  ipv4ToInt,
  isGuestAddress,
  isIpv4,
  type NetworkStep,
  parseIpJson,
  parseSubnet,
  planCreateTap,
  planDeleteDevice,
  planEnsureBridge,
  planForgetNeighbor,
  planShowDevice,
  validateInterfaceName,
} from "../../src/core/network/index.ts";
import { tapNameForVmId } from "../../src/core/vm/index.ts";
import { ErrorCode } from "../../src/protocol/index.ts";
import { withCode } from "../helpers/assert.ts";

describe("IPv4 helpers", () => {
  it("accepts dotted quads and rejects everything else", () => {
    for (const ok of ["0.0.0.0", "10.77.0.1", "255.255.255.255", "192.168.1.10"]) assert.ok(isIpv4(ok), ok);
    for (const bad of [
      "256.0.0.1",
      "10.0.0",
      "10.0.0.1.2",
      "010.0.0.1",
      "10.0.0.-1",
      " 10.0.0.1",
      "a.b.c.d",
      "",
    ]) {
      assert.equal(isIpv4(bad), false, bad);
    }
  });

  it("converts to and from integers across the whole range", () => {
    assert.equal(ipv4ToInt("0.0.0.0"), 0);
    assert.equal(ipv4ToInt("255.255.255.255"), 2 ** 32 - 1);
    assert.equal(ipv4ToInt("10.77.0.1"), 10 * 2 ** 24 + 77 * 2 ** 16 + 1);
    for (const ip of ["0.0.0.0", "128.0.0.1", "255.255.255.255", "10.77.0.254"]) {
      assert.equal(intToIpv4(ipv4ToInt(ip)), ip);
    }
    assert.throws(() => ipv4ToInt("1.2.3"), withCode(ErrorCode.INVALID_PARAMS));
  });
});

describe("parseSubnet", () => {
  it("derives gateway, guest range, netmask and broadcast for a /24", () => {
    assert.deepEqual(parseSubnet("10.77.0.0/24"), {
      cidr: "10.77.0.0/24",
      network: "10.77.0.0",
      prefixLength: 24,
      netmask: "255.255.255.0",
      gateway: "10.77.0.1",
      firstGuest: "10.77.0.2",
      lastGuest: "10.77.0.254",
      broadcast: "10.77.0.255",
    });
  });

  it("handles /16, /30 and a non-octet-aligned /20", () => {
    const wide = parseSubnet("172.20.0.0/16");
    assert.equal(wide.netmask, "255.255.0.0");
    assert.equal(wide.lastGuest, "172.20.255.254");
    const tiny = parseSubnet("10.0.0.4/30");
    assert.equal(tiny.gateway, "10.0.0.5");
    assert.equal(tiny.firstGuest, "10.0.0.6");
    assert.equal(tiny.lastGuest, "10.0.0.6");
    const odd = parseSubnet("10.1.16.0/20");
    assert.equal(odd.netmask, "255.255.240.0");
    assert.equal(odd.lastGuest, "10.1.31.254");
  });

  it("rejects host bits, bad prefixes and malformed input, naming the subnet", () => {
    assert.throws(() => parseSubnet("10.77.0.5/24"), withCode(ErrorCode.CONFIG_INVALID, /10\.77\.0\.0\/24/));
    for (const bad of [
      "10.77.0.0/31",
      "10.77.0.0/32",
      "10.77.0.0/0",
      "10.77.0.0",
      "10.77.0.0/x",
      "300.1.1.0/24",
    ]) {
      assert.throws(() => parseSubnet(bad), withCode(ErrorCode.CONFIG_INVALID), bad);
    }
  });

  it("tells guest addresses from gateway, network and broadcast", () => {
    const subnet = parseSubnet("10.77.0.0/24");
    assert.ok(isGuestAddress(subnet, "10.77.0.2"));
    assert.ok(isGuestAddress(subnet, "10.77.0.254"));
    for (const ip of ["10.77.0.0", "10.77.0.1", "10.77.0.255", "10.77.1.2", "nope"]) {
      assert.equal(isGuestAddress(subnet, ip), false, ip);
    }
  });
});

describe("allocateGuestIp", () => {
  const subnet = parseSubnet("10.77.0.0/24");

  it("gives the first address after the gateway when nothing is used", () => {
    assert.equal(allocateGuestIp(subnet, []), "10.77.0.2");
  });

  it("fills the lowest hole and ignores foreign or malformed entries", () => {
    assert.equal(allocateGuestIp(subnet, ["10.77.0.2", "10.77.0.4", "10.99.0.3", "garbage"]), "10.77.0.3");
    assert.equal(allocateGuestIp(subnet, new Set(["10.77.0.2", "10.77.0.3"])), "10.77.0.4");
  });

  it("hands out the last guest address and then reports the subnet full", () => {
    const small = parseSubnet("10.0.0.0/29"); // guests .2 to .6
    const used = ["10.0.0.2", "10.0.0.3", "10.0.0.4", "10.0.0.5"];
    assert.equal(allocateGuestIp(small, used), "10.0.0.6");
    assert.throws(
      () => allocateGuestIp(small, [...used, "10.0.0.6"]),
      withCode(ErrorCode.NETWORK_FAILED, /^subnet 10\.0\.0\.0\/29 has no free address$/),
    );
  });

  it("reports a full /24 after 253 guests", () => {
    const used: string[] = [];
    for (let host = 2; host <= 254; host++) used.push(`10.77.0.${host}`);
    assert.throws(() => allocateGuestIp(subnet, used), /subnet 10\.77\.0\.0\/24 has no free address/);
  });
});

describe("guestKernelIpArg", () => {
  it("builds the ip= argument the guest setup script parses", () => {
    const subnet = parseSubnet("10.77.0.0/24");
    assert.equal(
      guestKernelIpArg({ subnet, guestIp: "10.77.0.10", hostname: "vm1" }),
      "ip=10.77.0.10::10.77.0.1:255.255.255.0:vm1:eth0:off",
    );
    assert.throws(
      () => guestKernelIpArg({ subnet, guestIp: "10.77.0.1", hostname: "x" }),
      /not a guest address/,
    );
  });
});

describe("interface names", () => {
  it("accepts names up to 15 bytes, including banger tap names", () => {
    assert.equal(validateInterfaceName("banger0"), "banger0");
    assert.equal(validateInterfaceName(tapNameForVmId("0123456789abcdef")), "bgr-0123456789");
  });

  it("rejects names ip could misread or the kernel refuses", () => {
    for (const bad of ["", "-x", "a/b", "a b", "a:b", ".", "..", "x".repeat(16)]) {
      assert.throws(
        () => validateInterfaceName(bad),
        withCode(ErrorCode.INVALID_PARAMS),
        JSON.stringify(bad),
      );
    }
  });
});

describe("parseIpJson", () => {
  it("parses arrays, treats empty output as none and drops entries without a name", () => {
    assert.deepEqual(parseIpJson(""), []);
    assert.deepEqual(parseIpJson("[]\n"), []);
    assert.deepEqual(parseIpJson('[{"ifname":"lo"},{"x":1}]'), [{ ifname: "lo" }]);
    assert.throws(() => parseIpJson("{}"), /expected a JSON array/);
  });
});

const argvOf = (plan: readonly NetworkStep[]) => plan.map((step) => step.argv);

describe("planEnsureBridge", () => {
  const base = { bridge: "banger0", gatewayCidr: gatewayCidr(parseSubnet("10.77.0.0/24")) };

  it("creates, addresses and raises a bridge that does not exist", () => {
    assert.deepEqual(argvOf(planEnsureBridge({ ...base, current: undefined })), [
      ["ip", "link", "add", "name", "banger0", "type", "bridge"],
      ["ip", "addr", "add", "10.77.0.1/24", "dev", "banger0"],
      ["ip", "link", "set", "dev", "banger0", "up"],
    ]);
  });

  it("only adds the address and raises a bare bridge", () => {
    const current = {
      ifname: "banger0",
      flags: ["BROADCAST", "MULTICAST"],
      linkinfo: { info_kind: "bridge" },
      addr_info: [],
    };
    assert.deepEqual(argvOf(planEnsureBridge({ ...base, current })), [
      ["ip", "addr", "add", "10.77.0.1/24", "dev", "banger0"],
      ["ip", "link", "set", "dev", "banger0", "up"],
    ]);
  });

  it("only raises a bridge that has its address but is down", () => {
    const current = {
      ifname: "banger0",
      flags: ["BROADCAST"],
      addr_info: [{ family: "inet", local: "10.77.0.1", prefixlen: 24 }],
    };
    assert.deepEqual(argvOf(planEnsureBridge({ ...base, current })), [
      ["ip", "link", "set", "dev", "banger0", "up"],
    ]);
  });

  it("plans nothing for a complete bridge (no-carrier is still up)", () => {
    const current = {
      ifname: "banger0",
      flags: ["NO-CARRIER", "BROADCAST", "MULTICAST", "UP"],
      linkinfo: { info_kind: "bridge" },
      addr_info: [
        { family: "inet6", local: "fe80::1", prefixlen: 64 },
        { family: "inet", local: "10.77.0.1", prefixlen: 24 },
      ],
    };
    assert.deepEqual(argvOf(planEnsureBridge({ ...base, current })), []);
  });

  it("adds the gateway when the bridge holds the address with another prefix", () => {
    const current = {
      ifname: "banger0",
      flags: ["UP"],
      addr_info: [{ family: "inet", local: "10.77.0.1", prefixlen: 16 }],
    };
    assert.deepEqual(argvOf(planEnsureBridge({ ...base, current })), [
      ["ip", "addr", "add", "10.77.0.1/24", "dev", "banger0"],
    ]);
  });

  it("tolerates only 'address already present' on the address step; no step undoes the bridge", () => {
    const plan = planEnsureBridge({ ...base, current: undefined });
    const tolerated = plan.filter((step) => step.tolerate !== undefined);
    assert.deepEqual(
      tolerated.map((step) => step.argv[1]),
      ["addr"],
    );
    assert.ok(tolerated[0]?.tolerate?.test("RTNETLINK answers: File exists"));
    assert.ok(plan.every((step) => step.undo === undefined));
  });

  it("refuses a device of that name that is not a bridge", () => {
    const current = { ifname: "banger0", flags: ["UP"], linkinfo: { info_kind: "veth" } };
    assert.throws(
      () => planEnsureBridge({ ...base, current }),
      withCode(ErrorCode.NETWORK_FAILED, /banger0.*veth/),
    );
  });

  it("validates its inputs", () => {
    assert.throws(() => planEnsureBridge({ ...base, bridge: "-bad", current: undefined }), /interface name/);
    assert.throws(
      () => planEnsureBridge({ ...base, gatewayCidr: "10.77.0.1", current: undefined }),
      /address\/prefix/,
    );
  });
});

describe("tap plans", () => {
  it("creates a tap, enslaves it and raises it", () => {
    const plan = planCreateTap({ tap: "bgr-abc", bridge: "banger0" });
    assert.deepEqual(argvOf(plan), [
      ["ip", "tuntap", "add", "dev", "bgr-abc", "mode", "tap"],
      ["ip", "link", "set", "dev", "bgr-abc", "master", "banger0", "up"],
    ]);
    assert.deepEqual(plan[0]?.undo, ["ip", "link", "del", "dev", "bgr-abc"]);
  });

  it("deletes a device (gone already is fine) and reads a device with details in JSON", () => {
    const [remove] = planDeleteDevice("bgr-abc");
    assert.deepEqual(remove?.argv, ["ip", "link", "del", "dev", "bgr-abc"]);
    assert.ok(remove?.tolerate?.test('Cannot find device "bgr-abc"'));
    assert.deepEqual(planShowDevice("banger0"), ["ip", "-j", "-d", "addr", "show", "dev", "banger0"]);
  });

  it("forgets the bridge's neighbour entry for a reused guest address, and refuses a non-address", () => {
    const [flush] = planForgetNeighbor({ ip: "10.77.0.3", bridge: "banger0" });
    assert.deepEqual(flush?.argv, ["ip", "neigh", "flush", "to", "10.77.0.3", "dev", "banger0"]);
    assert.ok(flush?.tolerate?.test('Cannot find device "banger0"'));
    assert.throws(
      () => planForgetNeighbor({ ip: "10.77.0.3; reboot", bridge: "banger0" }),
      withCode(ErrorCode.INVALID_PARAMS),
    );
  });
});
