/**
 * The TAP pool: its plans (core/network tap-pool.ts) and the daemon module
 * (daemon/network/tap-pool.ts) over a fake host that keeps the devices it
 * was asked to make, so every test can assert what exists at the end.
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { silentLogger } from "../../src/core/log/index.ts";
import {
  type IpLinkInfo,
  nextPoolTapName,
  planClaimPoolTap,
  planCreatePoolTap,
  planPoolReconcile,
} from "../../src/core/network/index.ts";
import { createTapPool, tapPoolCheck } from "../../src/daemon/network/index.ts";

describe("TAP pool plans", () => {
  it("makes a pool tap attached and down, undone by deleting it, and claims it in one request", () => {
    assert.deepEqual(planCreatePoolTap({ tap: "bgp-0", bridge: "banger0" }), [
      {
        argv: ["ip", "tuntap", "add", "dev", "bgp-0", "mode", "tap"],
        undo: ["ip", "link", "del", "dev", "bgp-0"],
      },
      { argv: ["ip", "link", "set", "dev", "bgp-0", "master", "banger0"] },
    ]);
    assert.deepEqual(planClaimPoolTap({ poolTap: "bgp-0", tap: "bgr-0123456789", bridge: "banger0" }), [
      { argv: ["ip", "link", "set", "dev", "bgp-0", "name", "bgr-0123456789", "master", "banger0", "up"] },
    ]);
    assert.throws(
      () => planClaimPoolTap({ poolTap: "bgp-0", tap: "-evil", bridge: "banger0" }),
      /not a valid network interface/,
    );
  });

  it("names the lowest free number", () => {
    assert.equal(nextPoolTapName(new Set()), "bgp-0");
    assert.equal(nextPoolTapName(new Set(["bgp-0", "bgp-2"])), "bgp-1");
  });

  it("adopts attached, down pool taps up to the size, lowest first, and removes the rest", () => {
    const tap = (ifname: string, extra: { master?: string | null; flags?: string[] } = {}): IpLinkInfo => {
      const master = extra.master === undefined ? "banger0" : extra.master;
      return { ifname, flags: extra.flags ?? ["BROADCAST"], ...(master === null ? {} : { master }) };
    };
    const found = [
      tap("bgp-10"),
      tap("bgp-2"),
      tap("bgp-1", { master: "other0" }),
      tap("bgp-3", { flags: ["UP"] }),
      tap("bgp-4", { master: null }),
      tap("bgp-x"),
      tap("bgp-0"),
      tap("bgr-0123456789"),
    ];
    assert.deepEqual(planPoolReconcile({ found, bridge: "banger0", size: 2 }), {
      adopt: ["bgp-0", "bgp-2"],
      remove: ["bgp-1", "bgp-3", "bgp-4", "bgp-10", "bgp-x"],
    });
    assert.deepEqual(planPoolReconcile({ found, bridge: "banger0", size: 0 }).adopt, []);
  });
});

interface Device {
  master: string | undefined;
  up: boolean;
}

/** Devices by name, with the calls made; `fail` makes the named operation throw once per listed entry. */
function fakeHost(options: { fail?: string[]; devices?: Record<string, Device> } = {}) {
  const devices = new Map<string, Device>(Object.entries(options.devices ?? {}));
  const calls: string[] = [];
  const fail = [...(options.fail ?? [])];
  const maybeFail = (operation: string) => {
    calls.push(operation);
    const index = fail.indexOf(operation.split(" ")[0] as string);
    if (index >= 0) {
      fail.splice(index, 1);
      throw new Error(`${operation} failed on purpose`);
    }
  };
  const host = {
    bridge: "banger0",
    async ensureBridge() {
      maybeFail("ensureBridge");
    },
    async createPoolTap(tap: string) {
      maybeFail(`createPoolTap ${tap}`);
      devices.set(tap, { master: "banger0", up: false });
    },
    async claimPoolTap(poolTap: string, tap: string) {
      maybeFail(`claimPoolTap ${poolTap} ${tap}`);
      const device = devices.get(poolTap);
      if (device === undefined) throw new Error(`${poolTap} does not exist`);
      devices.delete(poolTap);
      devices.set(tap, { ...device, up: true });
    },
    async createTap(tap: string) {
      maybeFail(`createTap ${tap}`);
      devices.set(tap, { master: "banger0", up: true });
    },
    async deleteTap(tap: string) {
      calls.push(`deleteTap ${tap}`);
      devices.delete(tap);
    },
    async listPoolTaps(): Promise<IpLinkInfo[]> {
      maybeFail("listPoolTaps");
      return [...devices]
        .filter(([name]) => name.startsWith("bgp-"))
        .map(([ifname, device]) => ({
          ifname,
          ...(device.master === undefined ? {} : { master: device.master }),
          flags: device.up ? ["UP"] : [],
        }));
    },
  };
  return { host, devices, calls, names: () => [...devices.keys()].sort() };
}

function pool(
  fake: ReturnType<typeof fakeHost>,
  options: { size?: number; anyVm?: boolean; running?: () => boolean } = {},
) {
  return createTapPool({
    size: options.size ?? 2,
    host: fake.host,
    anyVm: () => options.anyVm ?? true,
    anyVmRunning: options.running ?? (() => false),
    logger: silentLogger,
  });
}

const signal = new AbortController().signal;

describe("the TAP pool", () => {
  it("fills at daemon start when a VM exists, hands out a warm tap renamed and up, and refills", async () => {
    const fake = fakeHost();
    const taps = pool(fake);
    await taps.ensure(signal);
    await taps.idle();
    assert.deepEqual(fake.names(), ["bgp-0", "bgp-1"]);
    assert.deepEqual(fake.devices.get("bgp-0"), { master: "banger0", up: false });

    const before = fake.calls.length;
    await taps.createTap("bgr-aaaa");
    assert.deepEqual(
      fake.calls.slice(before),
      ["claimPoolTap bgp-0 bgr-aaaa"],
      "one claim, nothing else yet",
    );
    assert.deepEqual(fake.devices.get("bgr-aaaa"), { master: "banger0", up: true });
    assert.equal(taps.status().filling, true, "the refill is scheduled after the start");
    await taps.idle();
    assert.deepEqual(fake.names(), ["bgp-0", "bgp-1", "bgr-aaaa"], "refilled under the freed name");
    assert.deepEqual(taps.status(), { size: 2, ready: ["bgp-0", "bgp-1"], filling: false, error: undefined });
    assert.equal(tapPoolCheck(taps.status()).detail, "2 of 2 taps warm (bgp-0, bgp-1)");

    await taps.teardown();
    assert.deepEqual(fake.names(), ["bgr-aaaa"], "teardown removed the pool, not the VM's tap");
  });

  it("makes nothing at daemon start without a VM; the first start creates its tap, then the pool fills", async () => {
    const fake = fakeHost();
    const taps = pool(fake, { anyVm: false });
    await taps.ensure(signal);
    await taps.idle();
    assert.deepEqual(fake.calls, ["listPoolTaps"]);
    await taps.createTap("bgr-bbbb");
    assert.ok(fake.calls.includes("createTap bgr-bbbb"));
    await taps.idle();
    assert.deepEqual(fake.names(), ["bgp-0", "bgp-1", "bgr-bbbb"]);
    await taps.teardown();
    assert.deepEqual(fake.names(), ["bgr-bbbb"]);
  });

  it("adopts what a previous daemon left and removes what it cannot use", async () => {
    const fake = fakeHost({
      devices: {
        "bgp-0": { master: "banger0", up: false },
        "bgp-1": { master: "banger0", up: true },
        "bgp-2": { master: undefined, up: false },
      },
    });
    const taps = pool(fake, { size: 2 });
    await taps.ensure(signal);
    await taps.idle();
    assert.ok(!fake.calls.includes("createPoolTap bgp-0"), "bgp-0 was adopted, not made again");
    assert.ok(fake.calls.includes("deleteTap bgp-1") && fake.calls.includes("deleteTap bgp-2"));
    assert.deepEqual(fake.names(), ["bgp-0", "bgp-1"]);
    assert.deepEqual(fake.devices.get("bgp-1"), { master: "banger0", up: false }, "made afresh");
    await taps.teardown();
    assert.deepEqual(fake.names(), []);
  });

  it("with size 0 removes leftover pool taps and always creates taps", async () => {
    const fake = fakeHost({ devices: { "bgp-0": { master: "banger0", up: false } } });
    const taps = pool(fake, { size: 0 });
    await taps.ensure(signal);
    await taps.createTap("bgr-cccc");
    await taps.idle();
    assert.deepEqual(fake.names(), ["bgr-cccc"]);
    assert.equal(tapPoolCheck(taps.status()).status, "ok");
  });

  it("creates the tap when a claim fails, deleting the pool tap it could not use", async () => {
    const fake = fakeHost({ fail: ["claimPoolTap"] });
    const taps = pool(fake, { size: 1 });
    await taps.ensure(signal);
    await taps.idle();
    await taps.createTap("bgr-dddd");
    assert.ok(fake.calls.includes("deleteTap bgp-0"));
    assert.ok(fake.calls.includes("createTap bgr-dddd"));
    await taps.idle();
    assert.deepEqual(fake.names(), ["bgp-0", "bgr-dddd"], "the pool made a fresh bgp-0");
    await taps.teardown();
    assert.deepEqual(fake.names(), ["bgr-dddd"]);
  });

  it("reports a failed refill in doctor and keeps starts working", async () => {
    const fake = fakeHost({ fail: ["createPoolTap"] });
    const taps = pool(fake, { size: 2 });
    await taps.ensure(signal);
    await taps.idle();
    const check = tapPoolCheck(taps.status());
    assert.equal(check.status, "warn");
    assert.match(check.detail, /0 of 2 taps warm; the last refill failed: createPoolTap bgp-0 failed/);
    await taps.createTap("bgr-eeee");
    await taps.idle();
    assert.deepEqual(fake.names(), ["bgp-0", "bgp-1", "bgr-eeee"], "the next refill worked");
    assert.equal(taps.status().error, undefined);
    await taps.teardown();
  });

  it("keeps the pool for the next daemon while VMs run, and makes nothing after teardown", async () => {
    let running = true;
    const fake = fakeHost();
    const taps = pool(fake, { size: 3, running: () => running });
    await taps.ensure(signal);
    await taps.teardown(); // while the first refill is under way
    const kept = fake.names();
    assert.ok(kept.length < 3, `teardown stopped the refill (${kept.join(", ")})`);
    await taps.createTap("bgr-ffff");
    await taps.idle();
    assert.deepEqual(
      fake.names().filter((name) => name.startsWith("bgp-")),
      kept.slice(1),
      "no refill after teardown",
    );
    running = false;
    await taps.teardown();
    assert.deepEqual(fake.names(), ["bgr-ffff"]);
  });
});
