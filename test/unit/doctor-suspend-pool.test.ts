/**
 * Doctor's checks of suspended VMs and warm pools: a suspended VM whose
 * saved state is gone fails with the stop-and-start hint; a pool below its
 * target warns, one whose snapshot is gone fails naming it, a full one is ok.
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { poolsCheck, runDoctor, suspendedCheck } from "../../src/daemon/doctor/index.ts";
import type { PoolInfo } from "../../src/protocol/index.ts";

const pool = (overrides: Partial<PoolInfo>): PoolInfo => ({
  name: "default",
  source: "image debian-bookworm",
  count: 2,
  target: 2,
  ready: 2,
  members: [],
  ...overrides,
});

describe("doctor: suspended VMs and pools", () => {
  it("counts suspended VMs, and fails naming those whose state is gone", async () => {
    const fine = await runDoctor([
      suspendedCheck({ suspended: async () => [{ name: "a", complete: true }] }),
    ]);
    assert.deepEqual(fine, [{ name: "suspended", status: "ok", detail: "1 suspended VM" }]);
    const [broken] = await runDoctor([
      suspendedCheck({
        suspended: async () => [
          { name: "a", complete: true },
          { name: "b", complete: false },
        ],
      }),
    ]);
    assert.equal(broken?.status, "fail");
    assert.match(broken?.detail ?? "", /1 suspended VMs have lost their saved state: b/);
    assert.match(broken?.hint ?? "", /banger vm stop b/);
  });

  it("says how full each pool is, and fails a pool whose snapshot is gone", async () => {
    const results = await runDoctor([
      poolsCheck({
        pools: async () => [
          pool({}),
          pool({ name: "filling", ready: 1 }),
          pool({ name: "orphan", source: "snapshot gone", ready: 0 }),
        ],
        snapshotExists: (name) => name !== "gone",
      }),
    ]);
    assert.deepEqual(
      results.map((r) => [r.name, r.status]),
      [
        ["pool default", "ok"],
        ["pool filling", "warn"],
        ["pool orphan", "fail"],
      ],
    );
    assert.match(results[2]?.detail ?? "", /snapshot 'gone' does not exist/);
    const none = await runDoctor([poolsCheck({ pools: async () => [], snapshotExists: () => true })]);
    assert.deepEqual(none, [{ name: "pools", status: "ok", detail: "no [[pool]] configured" }]);
  });
});
