import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { join } from "node:path";
import { describe, it } from "node:test";
import { BangerError, ErrorCode } from "../../src/protocol/index.ts";
import { spawnProcess } from "../../src/sys/runner/index.ts";

const child = join(import.meta.dirname, "..", "fixtures", "fd-exhaustion-child.ts");

describe("spawning and /proc under descriptor exhaustion", () => {
  it("turns EMFILE into RESOURCE_EXHAUSTED and never calls a process dead from a failed /proc read", () => {
    const result = spawnSync("prlimit", ["--nofile=64:64", process.execPath, child], {
      encoding: "utf8",
      timeout: 60_000,
    });
    assert.equal(result.status, 0, result.stderr);
    const answers = JSON.parse(result.stdout.trim().split("\n").at(-1)!);
    assert.ok(answers.held > 0);
    assert.equal(answers.liveness, "unknown");
    assert.equal(answers.run, ErrorCode.RESOURCE_EXHAUSTED);
    assert.equal(answers.spawn, ErrorCode.RESOURCE_EXHAUSTED);
  });

  it("refuses arguments over the kernel's per-argument limit with LIMIT_EXCEEDED", async () => {
    await assert.rejects(
      spawnProcess(["true", "x".repeat(200 * 1024)], { stdio: "ignore" }),
      (error: unknown) =>
        error instanceof BangerError &&
        error.code === ErrorCode.LIMIT_EXCEEDED &&
        /too long \(204\d{3} bytes/.test(error.message),
    );
  });

  it("reports a missing tool as TOOL_MISSING", async () => {
    await assert.rejects(
      spawnProcess(["banger-no-such-tool"], { stdio: "ignore" }),
      (error: unknown) => error instanceof BangerError && error.code === ErrorCode.TOOL_MISSING,
    );
  });
});
