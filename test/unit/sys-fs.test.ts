/** The synced atomic writer every file that recovery reads goes through. */
import assert from "node:assert/strict";
import { mkdirSync, readdirSync, readFileSync, statSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import type { VmHandles } from "../../src/core/vm/index.ts";
import { createNodeFs, writeFileAtomic } from "../../src/sys/fs/index.ts";
import { createVmFiles } from "../../src/sys/vmfiles/index.ts";
import { makeTempDir } from "../helpers/tmp.ts";

describe("writeFileAtomic", () => {
  let dir: string;
  let cleanup: () => void;
  before(() => {
    ({ path: dir, cleanup } = makeTempDir("fs-atomic-"));
  });
  after(() => cleanup());

  it("creates or replaces the file with the given mode and leaves no temporary file", async () => {
    const path = join(dir, "handles.json");
    await writeFileAtomic(path, "first\n", { mode: 0o600 });
    assert.equal(readFileSync(path, "utf8"), "first\n");
    assert.equal(statSync(path).mode & 0o777, 0o600);
    await writeFileAtomic(path, Buffer.from("second\n"), { mode: 0o600 });
    assert.equal(readFileSync(path, "utf8"), "second\n");
    assert.deepEqual(readdirSync(dir), ["handles.json"]);
  });

  it("a failed write leaves the old content and no temporary file behind", async () => {
    const sub = join(dir, "fail");
    mkdirSync(sub);
    // Renaming a file over a non-empty directory fails after the temporary file was written.
    const target = join(sub, "target");
    mkdirSync(target);
    writeFileSync(join(target, "keep"), "kept");
    await assert.rejects(writeFileAtomic(target, "new"), (error: NodeJS.ErrnoException) =>
      ["EISDIR", "ENOTEMPTY", "EEXIST"].includes(error.code ?? ""),
    );
    assert.deepEqual(readdirSync(sub), ["target"], "no temporary file is left");
    assert.equal(readFileSync(join(target, "keep"), "utf8"), "kept");
  });

  it("a write into a missing directory fails and creates nothing", async () => {
    await assert.rejects(writeFileAtomic(join(dir, "absent", "x"), "data"), { code: "ENOENT" });
  });

  it("backs Fs.writeFileAtomic (mode 0644) and VmFiles.writeHandles (mode 0600)", async () => {
    const fsPath = join(dir, "image.json");
    await createNodeFs().writeFileAtomic(fsPath, "{}");
    assert.equal(statSync(fsPath).mode & 0o777, 0o644 & ~process.umask());
    const vmDir = join(dir, "vm");
    mkdirSync(vmDir);
    const handlesPath = join(vmDir, "handles.json");
    const files = createVmFiles();
    const handles: VmHandles = { pid: 7, pidStartTicks: 9, tap: "tap0", controlSocket: "/s", disk: null };
    await files.writeHandles(handlesPath, handles);
    assert.equal(statSync(handlesPath).mode & 0o777, 0o600);
    assert.deepEqual(await files.readHandles(handlesPath), handles);
    assert.deepEqual(readdirSync(vmDir), ["handles.json"]);
  });
});
