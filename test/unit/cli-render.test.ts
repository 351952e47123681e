import assert from "node:assert/strict";
import { describe, it } from "node:test";
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
