import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { parseSize } from "../../src/cli/flags.ts";
import { formatLogLine } from "../../src/cli/render/log-line.ts";
import { createProgressRenderer, formatElapsed } from "../../src/cli/render/progress.ts";
import { formatAge, formatBytes, formatTable } from "../../src/cli/render/table.ts";
import { LineSplitter } from "../../src/daemon/rpc/lines.ts";

describe("rendering", () => {
  it("formats borderless tables with uppercase headers", () => {
    const text = formatTable(
      ["name", "state"],
      [
        ["web", "running"],
        ["a-longer-name", "stopped"],
      ],
    );
    assert.equal(text, "NAME           STATE\nweb            running\na-longer-name  stopped");
  });

  it("formats ages and sizes", () => {
    const now = new Date("2026-01-01T01:00:00Z");
    assert.equal(formatAge("2026-01-01T00:59:30Z", now), "30 seconds ago");
    assert.equal(formatAge("2026-01-01T00:59:59Z", now), "1 second ago");
    assert.equal(formatAge("2026-01-01T00:00:00Z", now), "1 hour ago");
    assert.equal(formatBytes(1536), "1.5 KiB");
  });
});

describe("LineSplitter", () => {
  it("splits across chunk boundaries", () => {
    const splitter = new LineSplitter(100);
    assert.deepEqual(splitter.push(Buffer.from("ab")), []);
    assert.deepEqual(splitter.push(Buffer.from("c\nde\nf")), ["abc", "de"]);
    assert.deepEqual(splitter.push(Buffer.from("\n")), ["f"]);
  });

  it("reports an oversize frame, even without a newline", () => {
    const splitter = new LineSplitter(4);
    assert.equal(splitter.push(Buffer.from("12345")), "oversize");
    assert.equal(new LineSplitter(4).push(Buffer.from("123456\n")), "oversize");
  });
});

describe("progress", () => {
  it("prints each step as a plain line and the time a finished step took", () => {
    let text = "";
    const stream = {
      isTTY: false,
      write: (chunk: string) => {
        text += chunk;
        return true;
      },
    } as unknown as NodeJS.WritableStream;
    let clock = 0;
    const progress = createProgressRenderer(stream, false, () => clock);
    progress.onProgress({ step: "image.rootfs", message: "debootstrap", status: "start" });
    clock = 12_340;
    progress.onProgress({ step: "image.rootfs", message: "debootstrap", status: "done" });
    progress.onProgress({ message: "bangerd started (pid 7)", status: "done" });
    assert.equal(text, "… debootstrap\n✓ debootstrap [12.3 s]\n✓ bangerd started (pid 7)\n");
    assert.equal(formatElapsed(850), "850 ms");
    assert.equal(formatElapsed(125_000), "2m 05s");
  });
});

describe("sizes", () => {
  it("reads docker-style units into MiB or GiB", () => {
    assert.equal(parseSize("--memory", "2048", "MiB"), 2048);
    assert.equal(parseSize("--memory", "1g", "MiB"), 1024);
    assert.equal(parseSize("--memory", "2GiB", "MiB"), 2048);
    assert.equal(parseSize("--memory", "512m", "MiB"), 512);
    assert.equal(parseSize("--memory", "1.5G", "MiB"), 1536);
    assert.equal(parseSize("--disk", "10", "GiB"), 10);
    assert.equal(parseSize("--disk", "20GB", "GiB"), 20);
    assert.equal(parseSize("--disk", "2048m", "GiB"), 2);
  });

  it("refuses what is not a whole number of the unit, naming the flag", () => {
    assert.throws(
      () => parseSize("--memory", "lots", "MiB"),
      /--memory must be a size such as 2g or 512m, not 'lots'/,
    );
    assert.throws(() => parseSize("--disk", "1.5", "GiB"), /--disk must be a whole number of GiB/);
    assert.throws(
      () => parseSize("--disk", "100m", "GiB"),
      /--disk must be a whole number of GiB, not '100m'/,
    );
  });
});

describe("daemon log lines", () => {
  it("shows time, level, message and the other fields; passes other lines through", () => {
    const time = new Date(2026, 0, 2, 3, 4, 5, 6).getTime();
    const line = JSON.stringify({
      level: 40,
      time,
      svc: "bangerd",
      pid: 1,
      msg: "vm start failed",
      vm: "web",
      ms: 12,
      error: "no tap",
    });
    assert.equal(
      formatLogLine(line),
      '2026-01-02 03:04:05.006 WARN  vm start failed vm=web ms=12 error="no tap"',
    );
    assert.equal(formatLogLine("not json"), "not json");
  });
});
