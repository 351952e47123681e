/** runDoctor and the checks fed by the daemon's memoized probes. */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { accelCheck } from "../../src/daemon/doctor/checks/accel.ts";
import { cowStrategyCheck } from "../../src/daemon/doctor/checks/cow.ts";
import { runDoctor } from "../../src/daemon/doctor/index.ts";
import { BangerError, ErrorCode } from "../../src/protocol/index.ts";

describe("runDoctor", () => {
  it("keeps the checks' order, flattens multi-result checks and names a check that throws", async () => {
    const results = await runDoctor([
      { name: "first", run: async () => ({ name: "first", status: "ok", detail: "fine" }) },
      {
        name: "broken",
        run: async () => {
          throw new Error("probe exploded");
        },
      },
      {
        name: "tools",
        run: async () => [
          { name: "ip", status: "ok", detail: "/usr/sbin/ip" },
          { name: "nft", status: "warn", detail: "nft not found" },
        ],
      },
    ]);
    assert.deepEqual(
      results.map((check) => [check.name, check.status]),
      [
        ["first", "ok"],
        ["broken", "fail"],
        ["ip", "ok"],
        ["nft", "warn"],
      ],
    );
    assert.match(results[1]?.detail ?? "", /probe exploded/);
  });
});

describe("checks over the daemon's probes", () => {
  it("cow-strategy: a full copy warns with a hint, a failed probe fails naming the cause", async () => {
    const sparse = await cowStrategyCheck({
      get: async () => ({ strategy: "sparse-copy", reason: "no reflinks, no dm-snapshot" }),
    }).run();
    assert.deepEqual(Array.isArray(sparse) ? [] : [sparse.status, Boolean(sparse.hint)], ["warn", true]);
    const reflink = await cowStrategyCheck({
      get: async () => ({ strategy: "reflink", reason: "xfs" }),
    }).run();
    assert.equal(Array.isArray(reflink) ? undefined : reflink.status, "ok");
    const failed = await cowStrategyCheck({
      get: () => Promise.reject(new Error("vms dir is read-only")),
    }).run();
    assert.ok(!Array.isArray(failed));
    assert.equal(failed.status, "fail");
    assert.match(failed.detail, /cannot probe: .*read-only/);
  });

  it("accelerator: a refused KVM choice fails with the choice's own hint", async () => {
    const check = await accelCheck({
      get: () =>
        Promise.reject(
          new BangerError(ErrorCode.BAD_STATE, "vmm.accel is kvm but KVM is not usable", {
            hint: "set vmm.accel",
          }),
        ),
    }).run();
    assert.ok(!Array.isArray(check));
    assert.deepEqual([check.name, check.status, check.hint], ["accelerator", "fail", "set vmm.accel"]);
  });
});
