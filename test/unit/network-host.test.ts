import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { silentLogger } from "../../src/core/log/index.ts";
import { ErrorCode } from "../../src/protocol/index.ts";
import { applyResolvedRouting, createHostNetwork } from "../../src/sys/network/index.ts";
import { FakeRunner } from "../fakes/runner.ts";
import { rejectsWithCode } from "../helpers/assert.ts";

const SHOW = ["ip", "-j", "-d", "addr", "show", "dev", "banger0"];
const completeBridge = JSON.stringify([
  {
    ifname: "banger0",
    flags: ["BROADCAST", "MULTICAST", "UP"],
    linkinfo: { info_kind: "bridge" },
    addr_info: [{ family: "inet", local: "10.77.0.1", prefixlen: 24 }],
  },
]);

function network(runner: FakeRunner) {
  return createHostNetwork({ runner, logger: silentLogger, bridge: "banger0", subnet: "10.77.0.0/24" });
}

describe("createHostNetwork.ensureBridge", () => {
  it("builds a missing bridge in three steps", async () => {
    const runner = new FakeRunner()
      .on(SHOW, { code: 1, stderr: 'Device "banger0" does not exist.\n' })
      .on(["ip"]);
    await network(runner).ensureBridge();
    assert.deepEqual(runner.commands(), [
      SHOW.join(" "),
      "ip link add name banger0 type bridge",
      "ip addr add 10.77.0.1/24 dev banger0",
      "ip link set dev banger0 up",
    ]);
  });

  it("only reads when the bridge is complete", async () => {
    const runner = new FakeRunner().on(SHOW, { stdout: completeBridge });
    await network(runner).ensureBridge();
    assert.deepEqual(runner.commands(), [SHOW.join(" ")]);
  });

  it("serialises concurrent calls", async () => {
    let exists = false;
    const runner = new FakeRunner()
      .on(SHOW, () =>
        exists ? { stdout: completeBridge } : { code: 1, stderr: 'Device "banger0" does not exist.' },
      )
      .on(["ip", "link", "set"], () => {
        exists = true;
        return {};
      })
      .on(["ip"]);
    const host = network(runner);
    await Promise.all([host.ensureBridge(), host.ensureBridge()]);
    assert.equal(runner.commands().filter((command) => command.includes("type bridge")).length, 1);
  });

  it("counts an address another process added meanwhile as done", async () => {
    const runner = new FakeRunner()
      .on(SHOW, { code: 1, stderr: 'Device "banger0" does not exist.\n' })
      .on(["ip", "addr", "add"], { code: 2, stderr: "RTNETLINK answers: File exists\n" })
      .on(["ip"]);
    await network(runner).ensureBridge();
    assert.equal(runner.commands().at(-1), "ip link set dev banger0 up");
  });

  it("maps 'Operation not permitted' to PERMISSION_DENIED and other failures to NETWORK_FAILED", async () => {
    const denied = new FakeRunner()
      .on(SHOW, { code: 1, stderr: 'Device "banger0" does not exist.' })
      .on(["ip", "link", "add"], { code: 2, stderr: "RTNETLINK answers: Operation not permitted\n" });
    await rejectsWithCode(network(denied).ensureBridge(), ErrorCode.PERMISSION_DENIED, /banger0/);

    const broken = new FakeRunner().on(SHOW, { code: 255, stderr: "Error: something odd\n" });
    await rejectsWithCode(network(broken).ensureBridge(), ErrorCode.NETWORK_FAILED, /banger0.*something odd/);
  });
});

describe("createHostNetwork taps", () => {
  it("creates a tap on the bridge", async () => {
    const runner = new FakeRunner().on(["ip"]);
    await network(runner).createTap("bgr-abc");
    assert.deepEqual(runner.commands(), [
      "ip tuntap add dev bgr-abc mode tap",
      "ip link set dev bgr-abc master banger0 up",
    ]);
  });

  it("replaces a leftover tap of the same name", async () => {
    let attempts = 0;
    const runner = new FakeRunner()
      .on(["ip", "tuntap", "add"], () =>
        ++attempts === 1 ? { code: 1, stderr: "ioctl(TUNSETIFF): Device or resource busy\n" } : {},
      )
      .on(["ip"]);
    await network(runner).createTap("bgr-abc");
    assert.deepEqual(runner.commands(), [
      "ip tuntap add dev bgr-abc mode tap",
      "ip link del dev bgr-abc",
      "ip tuntap add dev bgr-abc mode tap",
      "ip link set dev bgr-abc master banger0 up",
    ]);
  });

  it("removes the tap again when enslaving it fails", async () => {
    const runner = new FakeRunner()
      .on(["ip", "link", "set"], {
        code: 1,
        stderr: 'Error: argument "banger0" is wrong: Device does not exist\n',
      })
      .on(["ip"]);
    await rejectsWithCode(network(runner).createTap("bgr-abc"), ErrorCode.NETWORK_FAILED, /bgr-abc/);
    assert.deepEqual(runner.commands().at(-1), "ip link del dev bgr-abc");
  });

  it("treats deleting a missing tap as success but reports other failures", async () => {
    const missing = new FakeRunner().on(["ip", "link", "del"], {
      code: 1,
      stderr: 'Cannot find device "bgr-x"\n',
    });
    await network(missing).deleteTap("bgr-x");
    const busy = new FakeRunner().on(["ip", "link", "del"], {
      code: 2,
      stderr: "RTNETLINK answers: Device busy\n",
    });
    await rejectsWithCode(network(busy).deleteTap("bgr-x"), ErrorCode.NETWORK_FAILED, /bgr-x/);
  });

  it("lists banger taps only and removes the ones no VM owns", async () => {
    const listing = JSON.stringify([
      { ifname: "bgr-b" },
      { ifname: "tap0" },
      { ifname: "bgr-a" },
      { ifname: "bgr-c" },
    ]);
    const runner = new FakeRunner()
      .on(["ip", "-j", "link", "show", "type", "tun"], { stdout: listing })
      .on(["ip"]);
    const host = network(runner);
    assert.deepEqual(await host.listTaps(), ["bgr-a", "bgr-b", "bgr-c"]);
    assert.deepEqual(await host.removeLeftoverTaps(new Set(["bgr-b"])), ["bgr-a", "bgr-c"]);
    assert.deepEqual(runner.commands().slice(-2), ["ip link del dev bgr-a", "ip link del dev bgr-c"]);
  });

  it("tears the bridge down, tolerating its absence", async () => {
    const runner = new FakeRunner().on(["ip", "link", "del"], {
      code: 1,
      stderr: 'Cannot find device "banger0"',
    });
    await network(runner).teardownBridge();
    assert.deepEqual(runner.commands(), ["ip link del dev banger0"]);
  });
});

describe("systemd-resolved routing of the zone", () => {
  const route = (runner: FakeRunner, running: boolean, inHostNetns = true) =>
    applyResolvedRouting({
      runner,
      bridge: "banger0",
      gateway: "10.77.0.1",
      domain: "vm",
      probes: { running: () => running, inHostNetns: () => inHostNetns },
    });

  it("routes ~vm to the gateway on the bridge link where resolved runs in the host's namespace", async () => {
    const runner = new FakeRunner().on(["resolvectl"]);
    assert.deepEqual(await route(runner, true), {
      ok: true,
      detail: "systemd-resolved sends *.vm to 10.77.0.1 via banger0",
    });
    assert.deepEqual(runner.commands(), [
      "resolvectl dns banger0 10.77.0.1",
      "resolvectl domain banger0 ~vm",
    ]);
  });

  it("runs nothing without resolved or from another namespace, and says why", async () => {
    const runner = new FakeRunner();
    const without = await route(runner, false);
    assert.equal(without.ok, false);
    assert.match(without.detail, /systemd-resolved is not running/);
    const elsewhere = await route(runner, true, false);
    assert.equal(elsewhere.ok, false);
    assert.match(elsewhere.detail, /own network namespace/);
    assert.deepEqual(runner.commands(), []);
  });

  it("reports the resolvectl call that failed and its error", async () => {
    const runner = new FakeRunner().on(["resolvectl", "dns"]).on(["resolvectl", "domain"], {
      code: 1,
      stderr: "Failed to set domain configuration: Access denied\n",
    });
    assert.deepEqual(await route(runner, true), {
      ok: false,
      detail: "`resolvectl domain banger0 ~vm` failed: Failed to set domain configuration: Access denied",
    });
  });
});
