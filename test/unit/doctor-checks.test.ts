/** runDoctor and the checks fed by the daemon's memoized probes. */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { defaultConfig } from "../../src/core/config/index.ts";
import { resolveLayout } from "../../src/core/paths/index.ts";
import { GIB } from "../../src/core/units.ts";
import { accelCheck } from "../../src/daemon/doctor/checks/accel.ts";
import type { HostCheck } from "../../src/daemon/doctor/checks/check.ts";
import { cowStrategyCheck } from "../../src/daemon/doctor/checks/cow.ts";
import { DISK_FAIL_BYTES, DISK_WARN_BYTES, freeDiskCheck } from "../../src/daemon/doctor/checks/disk.ts";
import { imageStoreCheck, LARGE_CACHE_BYTES } from "../../src/daemon/doctor/checks/images.ts";
import { toolsCheck } from "../../src/daemon/doctor/checks/tools.ts";
import { runDoctor } from "../../src/daemon/doctor/index.ts";
import { BangerError, ErrorCode } from "../../src/protocol/index.ts";
import type { HostProbes } from "../../src/sys/host/index.ts";
import { FakeRunner } from "../fakes/runner.ts";

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

describe("image and disk checks", () => {
  const layout = resolveLayout({ env: { BANGER_HOME: "/bh" }, uid: 0, homeDir: "/root" });
  const probes = (over: Partial<HostProbes> = {}): HostProbes => ({
    nodeVersion: () => "24.15.0",
    uid: () => 0,
    which: async (tool) => `/usr/bin/${tool}`,
    canAccess: async () => true,
    exists: async () => true,
    freeBytes: async () => 100 * GIB,
    tscKhz: async () => undefined,
    ...over,
  });
  const one = async (check: HostCheck, name: string) => {
    const results = await check.run();
    const found = (Array.isArray(results) ? results : [results]).find((result) => result.name === name);
    assert.ok(found, name);
    return found;
  };

  it("buildah: found with its version, missing is a warning naming the command that needs it and the package", async () => {
    const runner = new FakeRunner().on([/buildah$/, "--version"], {
      stdout: "buildah version 1.28.2 (image-spec 1.0.2)\n",
    });
    runner.on([/./, "--version"], { stdout: "v1\n" });
    const config = defaultConfig();
    const found = await one(toolsCheck({ probes: probes(), runner, config }), "buildah");
    assert.deepEqual(found, {
      name: "buildah",
      status: "ok",
      detail: "/usr/bin/buildah: buildah version 1.28.2 (image-spec 1.0.2)",
    });
    const missing = await one(
      toolsCheck({
        probes: probes({ which: async (tool) => (tool === "buildah" ? undefined : `/usr/bin/${tool}`) }),
        runner,
        config,
      }),
      "buildah",
    );
    assert.equal(missing.status, "warn", "only `image build` needs it");
    assert.match(missing.detail, /banger image build/);
    assert.equal(missing.hint, "apt-get install buildah");
  });

  it("disk: free space on BANGER_HOME's filesystem fails under 1 GiB and warns under 5 GiB", async () => {
    const asked: string[] = [];
    const at = (bytes: number) =>
      one(
        freeDiskCheck({
          probes: probes({
            freeBytes: async (path) => {
              asked.push(path);
              return bytes;
            },
          }),
          layout,
        }),
        "disk",
      );
    assert.equal((await at(DISK_WARN_BYTES)).status, "ok");
    const low = await at(DISK_WARN_BYTES - 1);
    assert.equal(low.status, "warn");
    assert.match(low.hint ?? "", /keep 5 GiB free/);
    const none = await at(DISK_FAIL_BYTES - 1);
    assert.equal(none.status, "fail");
    assert.match(none.detail, /^1\.0 GiB free for \/bh\/state/);
    assert.deepEqual([...new Set(asked)], ["/bh/state"]);
  });

  it("image store: the blob cache's size warns past 20 GiB with the prune fix; skopeo and umoci are not needed", async () => {
    const runner = new FakeRunner().on(["setfattr", "--version"], { stdout: "setfattr 2.5.1\n" });
    const store = (sizes: number[]) =>
      imageStoreCheck({
        blobs: { list: async () => sizes.map((size, i) => ({ digest: `sha256:${i}`, size, mtimeMs: 0 })) },
        runner,
      });
    const small = await one(store([1024 ** 2, 2 * 1024 ** 2]), "image-blob-cache");
    assert.deepEqual([small.status, small.detail], ["ok", "2 layer blobs, 3.0 MiB"]);
    const large = await one(store([LARGE_CACHE_BYTES, 1]), "image-blob-cache");
    assert.equal(large.status, "warn");
    assert.match(large.hint ?? "", /banger image prune/);
    const tools = await one(store([]), "oci-tools");
    assert.equal(tools.status, "ok");
    assert.match(tools.detail, /no skopeo, umoci or Docker at run time/);
    assert.equal((await one(store([]), "setfattr")).status, "ok");
  });
});
