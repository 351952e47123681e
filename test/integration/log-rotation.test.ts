import assert from "node:assert/strict";
import { openSync, readdirSync, readFileSync, statSync, writeSync } from "node:fs";
import { join } from "node:path";
import { describe, it } from "node:test";
import { createFileLogger } from "../../src/sys/log/index.ts";
import { RotatingFile } from "../../src/sys/log/rotating.ts";
import { makeTempDir } from "../helpers/tmp.ts";

describe("size-capped logs", () => {
  it("keeps the live file under its cap and a fixed number of generations, losing no recent line", () => {
    const dir = makeTempDir();
    try {
      const path = join(dir.path, "console.log");
      const file = new RotatingFile({ path, maxBytes: 10_000, files: 2 });
      for (let index = 0; index < 2_000; index++) file.write(`line ${String(index).padStart(5, "0")}\n`);
      file.close();
      assert.deepEqual(readdirSync(dir.path).sort(), ["console.log", "console.log.1", "console.log.2"]);
      for (const name of readdirSync(dir.path))
        assert.ok(statSync(join(dir.path, name)).size <= 10_000, name);
      const text = ["console.log.2", "console.log.1", "console.log"]
        .map((name) => readFileSync(join(dir.path, name), "utf8"))
        .join("");
      const numbers = text
        .trim()
        .split("\n")
        .map((line) => Number(line.slice(5)));
      assert.equal(numbers.at(-1), 1_999);
      // The three files hold one contiguous run of the newest lines.
      for (let index = 1; index < numbers.length; index++)
        assert.equal(numbers[index], numbers[index - 1]! + 1);
    } finally {
      dir.cleanup();
    }
  });

  it("rotates the daemon log in place, so another O_APPEND writer (the daemon's stderr) keeps writing to it", () => {
    const dir = makeTempDir();
    try {
      const path = join(dir.path, "bangerd.log");
      const stderrLike = openSync(path, "a");
      const { logger, close } = createFileLogger({
        file: path,
        level: "info",
        alsoStderr: false,
        maxBytes: 64 * 1024,
        files: 3,
      });
      for (let index = 0; index < 5_000; index++)
        logger.info("request failed", { index, pad: "x".repeat(40) });
      writeSync(stderrLike, "bangerd: a line on stderr\n");
      close();
      assert.ok(statSync(path).size <= 64 * 1024);
      assert.ok(readFileSync(path, "utf8").endsWith("bangerd: a line on stderr\n"));
      assert.deepEqual(readdirSync(dir.path).sort(), [
        "bangerd.log",
        "bangerd.log.1",
        "bangerd.log.2",
        "bangerd.log.3",
      ]);
    } finally {
      dir.cleanup();
    }
  });
});
