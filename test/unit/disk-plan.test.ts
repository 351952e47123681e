import assert from "node:assert/strict";
import { mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import {
  dmNameFor,
  planDiskAttach,
  planDiskDetach,
  planGrowDisk,
  planRootDisk,
  planRootDiskTeardown,
} from "../../src/core/disk/index.ts";
import { BangerError, ErrorCode } from "../../src/protocol/index.ts";
import {
  attachRootDisk,
  createRootDisk,
  detachRootDisk,
  probeCowStrategy,
  removeRootDisk,
} from "../../src/sys/disk/index.ts";
import { FakeRunner } from "../fakes/runner.ts";

const MiB = 1024 * 1024;
const GiB = 1024 * MiB;

describe("planRootDisk", () => {
  it("qcow2 overlay over the raw base", () => {
    const plan = planRootDisk({
      strategy: "qcow2-overlay",
      base: "/img/base.ext4",
      baseSizeBytes: GiB,
      target: "/vms/a/root.qcow2",
      sizeBytes: 2 * GiB,
    });
    assert.equal(plan.format, "qcow2");
    assert.equal(plan.path, "/vms/a/root.qcow2");
    assert.deepEqual(
      plan.steps.map((step) => step.run.argv.join(" ")),
      [`qemu-img create -f qcow2 -b /img/base.ext4 -F raw /vms/a/root.qcow2 ${2 * GiB}`],
    );
    assert.deepEqual(plan.steps[0]?.undo?.argv, ["rm", "-f", "--", "/vms/a/root.qcow2"]);
  });

  it("reflink and sparse copies, grown with truncate only when bigger than the base", () => {
    const reflink = planRootDisk({
      strategy: "reflink",
      base: "/b",
      baseSizeBytes: GiB,
      target: "/t",
      sizeBytes: 2 * GiB,
    });
    assert.deepEqual(
      reflink.steps.map((step) => step.run.argv.join(" ")),
      ["cp --reflink=always -- /b /t", `truncate --size ${2 * GiB} /t`],
    );
    const sparse = planRootDisk({
      strategy: "sparse-copy",
      base: "/b",
      baseSizeBytes: GiB,
      target: "/t",
      sizeBytes: GiB,
    });
    assert.deepEqual(
      sparse.steps.map((step) => step.run.argv.join(" ")),
      ["cp --sparse=always -- /b /t"],
    );
    assert.equal(sparse.format, "raw");
  });

  it("dm snapshot: the stored part is a sparse COW store, the device is made per boot", () => {
    const input = {
      strategy: "dm-snapshot" as const,
      base: "/img/base.ext4",
      baseSizeBytes: GiB,
      target: "/vms/a/root.cow",
      sizeBytes: GiB,
      dmName: "banger-a",
    };
    const plan = planRootDisk(input);
    assert.equal(plan.path, "/dev/mapper/banger-a");
    assert.deepEqual(
      plan.steps.map((step) => step.run.argv.join(" ")),
      [`truncate --size ${GiB + GiB / 128 + MiB} /vms/a/root.cow`],
    );
    assert.deepEqual(planRootDiskTeardown(plan.handles), [{ argv: ["rm", "-f", "--", "/vms/a/root.cow"] }]);
    const attach = planDiskAttach(input);
    assert.equal(attach.path, "/dev/mapper/banger-a");
    assert.deepEqual(
      attach.steps.map((step) => step.run.argv.join(" ")),
      [
        "losetup --find --show --read-only /img/base.ext4",
        "losetup --find --show /vms/a/root.cow",
        `dmsetup create banger-a --table 0 ${GiB / 512} snapshot {baseLoop} {cowLoop} P 8`,
      ],
    );
    assert.deepEqual(
      attach.steps.map((step) => step.undo?.argv.join(" ")),
      ["losetup --detach {baseLoop}", "losetup --detach {cowLoop}", "dmsetup remove banger-a"],
    );
  });

  it("attach is a no-op for file strategies", () => {
    const attach = planDiskAttach({
      strategy: "reflink",
      base: "/b",
      baseSizeBytes: GiB,
      target: "/vms/a/root.raw",
      sizeBytes: GiB,
    });
    assert.deepEqual(attach, { path: "/vms/a/root.raw", steps: [], handles: {} });
    assert.deepEqual(planDiskDetach({}), []);
  });

  it("dm snapshot bigger than the base reads the extra space from a zero target", () => {
    const plan = planDiskAttach({
      strategy: "dm-snapshot",
      base: "/b",
      baseSizeBytes: GiB,
      target: "/t",
      sizeBytes: 2 * GiB,
    });
    const name = dmNameFor("/t");
    assert.match(name, /^banger-[0-9a-f]{16}$/);
    const origin = plan.steps.find((step) => step.run.argv.includes("--readonly"));
    assert.deepEqual(origin?.run.argv, ["dmsetup", "create", "--readonly", `${name}-origin`]);
    assert.equal(origin?.run.input, `0 2097152 linear {baseLoop} 0\n2097152 2097152 zero\n`);
    assert.deepEqual(plan.steps.at(-1)?.run.argv, [
      "dmsetup",
      "create",
      name,
      "--table",
      `0 4194304 snapshot /dev/mapper/${name}-origin {cowLoop} P 8`,
    ]);
    assert.deepEqual(
      planDiskDetach({ ...plan.handles, baseLoop: "/dev/loop1", cowLoop: "/dev/loop2" }).map((c) =>
        c.argv.join(" "),
      ),
      [
        `dmsetup remove ${name}`,
        `dmsetup remove ${name}-origin`,
        "losetup --detach /dev/loop2",
        "losetup --detach /dev/loop1",
      ],
    );
  });

  it("refuses a disk smaller than the base, and relative paths", () => {
    assert.throws(
      () =>
        planRootDisk({ strategy: "reflink", base: "/b", baseSizeBytes: GiB, target: "/t", sizeBytes: MiB }),
      (error: unknown) => error instanceof BangerError && error.code === ErrorCode.INVALID_PARAMS,
    );
    assert.throws(() =>
      planRootDisk({
        strategy: "qcow2-overlay",
        base: "base.ext4",
        baseSizeBytes: 1,
        target: "/t",
        sizeBytes: 1,
      }),
    );
  });

  it("grows qcow2 with qemu-img, raw with truncate, and a dm store to hold the bigger disk", () => {
    assert.deepEqual(planGrowDisk({ path: "/o.qcow2", strategy: "qcow2-overlay", sizeBytes: 5 }).argv, [
      "qemu-img",
      "resize",
      "-f",
      "qcow2",
      "/o.qcow2",
      "5",
    ]);
    assert.deepEqual(planGrowDisk({ path: "/r", strategy: "sparse-copy", sizeBytes: 5 }).argv, [
      "truncate",
      "--size",
      "5",
      "/r",
    ]);
    assert.deepEqual(planGrowDisk({ path: "/c", strategy: "dm-snapshot", sizeBytes: GiB }).argv, [
      "truncate",
      "--size",
      String(GiB + GiB / 128 + MiB),
      "/c",
    ]);
  });
});

describe("createRootDisk (FakeRunner)", () => {
  let dir: string;
  let base: string;
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), "banger-disk-unit-"));
    base = join(dir, "base.ext4");
    await writeFile(base, Buffer.alloc(MiB));
  });
  after(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  function dmRunner(failOn?: RegExp): FakeRunner {
    let loops = 6;
    const runner = new FakeRunner();
    if (failOn)
      runner.on([failOn], { code: 1, stderr: "device-mapper: reload ioctl failed: Invalid argument" });
    return runner
      .on(["losetup", "--find", "--show"], () => ({ stdout: `/dev/loop${loops++}\n` }))
      .on(["losetup", "--detach"])
      .on(["truncate"])
      .on(["dmsetup"])
      .on(["rm", "-f", "--"]);
  }

  it("dm snapshot: create makes the store, attach captures loop devices, detach and undo reverse it", async () => {
    const runner = dmRunner();
    const target = join(dir, "root.cow");
    const options = {
      strategy: "dm-snapshot" as const,
      base,
      target,
      sizeBytes: MiB,
      runner,
      dmName: "banger-x",
    };
    const disk = await createRootDisk(options);
    assert.equal(disk.path, "/dev/mapper/banger-x");
    assert.equal(disk.format, "raw");
    assert.deepEqual(disk.handles, { target, dmName: "banger-x" });
    runner.calls.length = 0;
    const attached = await attachRootDisk(options);
    assert.deepEqual(attached.handles, { dmName: "banger-x", baseLoop: "/dev/loop6", cowLoop: "/dev/loop7" });
    assert.ok(
      runner.commands().includes("dmsetup create banger-x --table 0 2048 snapshot /dev/loop6 /dev/loop7 P 8"),
    );
    runner.calls.length = 0;
    await attached.undo();
    const expected = [
      "dmsetup remove banger-x",
      "losetup --detach /dev/loop7",
      "losetup --detach /dev/loop6",
    ];
    assert.deepEqual(runner.commands(), expected);
    runner.calls.length = 0;
    await detachRootDisk({ handles: attached.handles, runner });
    assert.deepEqual(runner.commands(), expected, "detach from stored handles matches undo");
    runner.calls.length = 0;
    await removeRootDisk({ handles: disk.handles, runner });
    assert.deepEqual(runner.commands(), [`rm -f -- ${target}`]);
  });

  it("dm snapshot failing at dmsetup create unwinds everything made so far", async () => {
    const runner = dmRunner(/^dmsetup$/);
    const target = join(dir, "fail.cow");
    await assert.rejects(
      attachRootDisk({ strategy: "dm-snapshot", base, target, sizeBytes: MiB, runner, dmName: "banger-y" }),
      (error: unknown) => error instanceof BangerError && error.code === ErrorCode.BOOT_FAILED,
    );
    assert.deepEqual(runner.commands().slice(3), [
      "losetup --detach /dev/loop7",
      "losetup --detach /dev/loop6",
    ]);
  });

  it("a failed copy removes the partial target", async () => {
    const runner = new FakeRunner()
      .on(["cp"], { code: 1, stderr: "cp: error writing: No space left on device" })
      .on(["rm"]);
    const target = join(dir, "copy.raw");
    await assert.rejects(
      createRootDisk({ strategy: "sparse-copy", base, target, sizeBytes: MiB, runner }),
      /No space left on device/,
    );
    assert.deepEqual(runner.commands().at(-1), `rm -f -- ${target}`);
  });

  it("a missing base is IMAGE_NOT_FOUND before any command runs", async () => {
    const runner = new FakeRunner();
    await assert.rejects(
      createRootDisk({
        strategy: "reflink",
        base: join(dir, "nope"),
        target: join(dir, "t"),
        sizeBytes: MiB,
        runner,
      }),
      (error: unknown) => error instanceof BangerError && error.code === ErrorCode.IMAGE_NOT_FOUND,
    );
    assert.equal(runner.calls.length, 0);
  });

  it("an abort between steps unwinds", async () => {
    const controller = new AbortController();
    const runner = new FakeRunner()
      .on(["cp"], () => {
        controller.abort();
        return {};
      })
      .on(["rm"]);
    const target = join(dir, "abort.raw");
    await assert.rejects(
      createRootDisk({
        strategy: "reflink",
        base,
        target,
        sizeBytes: 2 * MiB,
        runner,
        signal: controller.signal,
      }),
      (error: unknown) => error instanceof BangerError && error.code === ErrorCode.CANCELLED,
    );
    assert.deepEqual(runner.commands(), [`cp --reflink=always -- ${base} ${target}`, `rm -f -- ${target}`]);
  });
});

describe("probeCowStrategy (FakeRunner)", () => {
  let dir: string;
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), "banger-cow-probe-"));
    await mkdir(join(dir, "sys", "module"), { recursive: true });
  });
  after(async () => {
    await rm(dir, { recursive: true, force: true });
  });
  const noReflink = () =>
    new FakeRunner().on(["cp", "--reflink=always"], {
      code: 1,
      stderr: "cp: failed to clone 'x' from 'y': Operation not supported\n",
    });

  it("reflink when the copy clones", async () => {
    const runner = new FakeRunner().on(["cp", "--reflink=always"]);
    const probe = await probeCowStrategy(dir, { runner });
    assert.equal(probe.strategy, "reflink");
  });

  it("dm-snapshot when dmsetup lists the snapshot target", async () => {
    const runner = noReflink().on(["dmsetup", "targets"], {
      stdout: "striped v1.6.0\nsnapshot v1.16.0\nlinear v1.4.0\n",
    });
    const probe = await probeCowStrategy(dir, { runner, sysModuleDir: join(dir, "sys", "module") });
    assert.equal(probe.strategy, "dm-snapshot");
    assert.match(probe.reason, /Operation not supported.*dmsetup lists the snapshot target/);
  });

  it("sparse-copy when neither works, saying why", async () => {
    const runner = noReflink().on(["dmsetup", "targets"], {
      code: 1,
      stderr: "/proc/misc: No entry for device-mapper found\nCommand failed.\n",
    });
    const probe = await probeCowStrategy(dir, { runner, sysModuleDir: join(dir, "sys", "module") });
    assert.equal(probe.strategy, "sparse-copy");
    assert.match(probe.reason, /No entry for device-mapper found/);
  });

  it("leaves no scratch files behind", async () => {
    const { readdir } = await import("node:fs/promises");
    await probeCowStrategy(dir, { runner: new FakeRunner().on(["cp"]) });
    assert.deepEqual(await readdir(dir), ["sys"]);
  });
});
