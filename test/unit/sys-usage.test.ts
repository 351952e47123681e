import assert from "node:assert/strict";
import { truncateSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { after, describe, it } from "node:test";
import { readDiskUsage } from "../../src/sys/fs/index.ts";
import { readProcessUsage } from "../../src/sys/proc/index.ts";
import { makeTempDir } from "../helpers/tmp.ts";

describe("usage readers", () => {
  const dir = makeTempDir("bgu-");
  after(() => dir.cleanup());

  it("reads CPU time and RSS of a live process, and nothing for a missing one", async () => {
    const usage = await readProcessUsage(process.pid);
    assert.ok(usage);
    assert.ok(usage.rssBytes > 1024 * 1024, `rss ${usage.rssBytes}`);
    assert.ok(usage.cpuSeconds >= 0);
    assert.equal(await readProcessUsage(0), undefined);
    assert.equal(await readProcessUsage(2 ** 22 + 1), undefined);
  });

  it("tells allocated bytes from apparent size of a sparse file", async () => {
    const sparse = join(dir.path, "sparse.img");
    writeFileSync(sparse, Buffer.alloc(64 * 1024, 1));
    truncateSync(sparse, 64 * 1024 * 1024);
    const usage = await readDiskUsage(sparse);
    assert.equal(usage?.apparentBytes, 64 * 1024 * 1024);
    assert.ok(usage.allocatedBytes >= 64 * 1024, `allocated ${usage.allocatedBytes}`);
    assert.ok(usage.allocatedBytes < usage.apparentBytes);
    assert.equal(await readDiskUsage(join(dir.path, "absent")), undefined);
  });
});
