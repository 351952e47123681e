/**
 * The accelerator choice on this host, for real: `auto` probes KVM with a
 * short kernel boot (killed after the timeout) and must fall back to TCG
 * where KVM is absent or does not boot guests. Where KVM works the probe
 * must say so; the assertion follows what the probe found, and the reason
 * must name it.
 */
import assert from "node:assert/strict";
import { constants } from "node:fs";
import { access, mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { describeAccel } from "../../src/daemon/doctor/checks/accel.ts";
import { chooseAccel } from "../../src/sys/vmm/index.ts";
import { TEST_KERNEL_SKIP_REASON, testKernel } from "../helpers/test-kernel.ts";

const kernel = await testKernel();

describe("chooseAccel on this host", { skip: kernel ? false : TEST_KERNEL_SKIP_REASON }, () => {
  let dir: string;
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), "banger-accel-int-"));
  });
  after(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it("auto probes once, caches the verdict, and explains it", async () => {
    const options = {
      configured: "auto" as const,
      kernel: kernel ?? "",
      binary: "qemu-system-x86_64",
      cacheFile: join(dir, "accel.json"),
    };
    const first = await chooseAccel(options);
    const kvmOpens = await access("/dev/kvm", constants.R_OK | constants.W_OK).then(
      () => true,
      () => false,
    );
    if (!kvmOpens) {
      assert.equal(first.accel, "tcg");
      assert.match(first.reason, /\/dev\/kvm/);
    } else if (first.accel === "tcg") {
      assert.match(first.reason, /^KVM probe/, first.reason);
    } else {
      assert.match(first.reason, /KVM probe boot .* completed/);
    }
    const second = await chooseAccel(options);
    assert.equal(second.accel, first.accel);
    assert.equal(second.cached, kvmOpens, "a probe verdict comes from the cache the second time");
    const check = describeAccel(first);
    assert.equal(check.status, first.accel === "kvm" ? "ok" : "warn");
    console.log(`accel: ${first.accel}: ${first.reason}`);
  });
});
