/**
 * handles.json: typed disk handles round-trip, files written before typed
 * handles still read (dm devices from `extra`), torn files read as absent;
 * the root-disk name table and the run state a VMM reports.
 */
import assert from "node:assert/strict";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { after, describe, it } from "node:test";
import {
  diskHandleRecord,
  diskHandlesFrom,
  planDiskDetach,
  ROOT_DISK_FILES,
  RootDiskStrategy,
  STORED_DISK_LOOKUP,
} from "../../src/core/disk/index.ts";
import type { VmHandles } from "../../src/core/vm/index.ts";
import { runStateOf } from "../../src/core/vmm/index.ts";
import { createVmFiles } from "../../src/sys/vmfiles/index.ts";
import { makeTempDir } from "../helpers/tmp.ts";

const dir = makeTempDir("bvh-");
after(() => dir.cleanup());
const files = createVmFiles();

const dm = {
  strategy: "dm-snapshot",
  dmName: "banger-0123456789abcdef",
  baseLoop: "/dev/loop3",
  cowLoop: "/dev/loop4",
  dmOrigin: "banger-0123456789abcdef-origin",
} as const;

describe("handles.json", () => {
  it("round-trips typed disk handles", async () => {
    const path = join(dir.path, "typed.json");
    const handles: VmHandles = { pid: 7, pidStartTicks: 70, tap: "bgr-x", controlSocket: "/s", disk: dm };
    await files.writeHandles(path, handles);
    assert.deepEqual(await files.readHandles(path), handles);
    const plain: VmHandles = { ...handles, disk: { strategy: "file", path: "/vms/x/root.qcow2" } };
    await files.writeHandles(path, plain);
    assert.deepEqual(await files.readHandles(path), plain);
  });

  it("reads a file written before typed handles: dm devices from extra, else the attached file", async () => {
    const path = join(dir.path, "untyped.json");
    const base = { pid: 7, pidStartTicks: 70, tap: "bgr-x", controlSocket: "/s" };
    const { strategy: _, ...extra } = dm;
    writeFileSync(path, JSON.stringify({ ...base, disk: `/dev/mapper/${dm.dmName}`, extra }));
    assert.deepEqual(await files.readHandles(path), { ...base, disk: dm });
    writeFileSync(path, JSON.stringify({ ...base, disk: "/vms/x/root.raw", extra: {} }));
    assert.deepEqual(await files.readHandles(path), {
      ...base,
      disk: { strategy: "file", path: "/vms/x/root.raw" },
    });
    writeFileSync(path, JSON.stringify({ ...base, disk: null, extra: {} }));
    assert.deepEqual(await files.readHandles(path), { ...base, disk: null });
  });

  it("reads a torn or foreign file as absent", async () => {
    const path = join(dir.path, "torn.json");
    writeFileSync(path, '{"pid": 7, "tap"');
    assert.equal(await files.readHandles(path), undefined);
    writeFileSync(path, JSON.stringify({ pid: "seven" }));
    assert.equal(await files.readHandles(path), undefined);
    assert.equal(await files.readHandles(join(dir.path, "absent.json")), undefined);
  });
});

describe("typed disk handles", () => {
  it("detach plans from typed handles match the handle map an attach captured", () => {
    const { strategy: _, ...captured } = dm;
    const typed = diskHandlesFrom("/dev/mapper/x", captured);
    assert.deepEqual(typed, dm);
    assert.deepEqual(planDiskDetach(diskHandleRecord(typed)), planDiskDetach(captured));
    assert.deepEqual(diskHandlesFrom("/vms/x/root.raw", {}), { strategy: "file", path: "/vms/x/root.raw" });
    assert.deepEqual(planDiskDetach(diskHandleRecord({ strategy: "file", path: "/f" })), []);
  });

  it("refuses dm handles without both loop devices", () => {
    assert.throws(
      () => diskHandlesFrom("/dev/mapper/x", { dmName: "x", baseLoop: "/dev/loop1" }),
      /loop devices/,
    );
  });
});

describe("root disk names", () => {
  it("names a file for every strategy, and the lookup finds each distinct file once", () => {
    assert.deepEqual(Object.keys(ROOT_DISK_FILES).sort(), [...RootDiskStrategy].sort());
    const looked = STORED_DISK_LOOKUP.map((strategy) => ROOT_DISK_FILES[strategy].file);
    assert.deepEqual(
      looked.sort(),
      [...new Set(Object.values(ROOT_DISK_FILES).map((entry) => entry.file))].sort(),
    );
    assert.equal(ROOT_DISK_FILES["qcow2-overlay"].format, "qcow2");
  });
});

describe("runStateOf", () => {
  for (const [reported, expected] of [
    ["running", "running"],
    ["Running", "running"],
    ["paused", "paused"],
    ["Paused", "paused"],
    ["Not started", "other"],
    ["prelaunch", "other"],
    ["", "other"],
  ] as const) {
    it(`${JSON.stringify(reported)} -> ${expected}`, () => assert.equal(runStateOf(reported), expected));
  }
});
