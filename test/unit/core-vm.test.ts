import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { describe, it } from "node:test";
import {
  assertTransition,
  canTransition,
  macForVmId,
  tapNameForVmId,
  validateVmName,
} from "../../src/core/vm/index.ts";
import { BUILD_VERSION, ErrorCode, exitStatusFor } from "../../src/protocol/index.ts";

describe("vm domain", () => {
  it("accepts DNS labels and rejects everything else with INVALID_PARAMS", () => {
    for (const good of ["web", "a", "test-1", "x".repeat(63)]) assert.equal(validateVmName(good), good);
    for (const bad of ["", "-a", "a-", "Web", "a_b", "a.b", "x".repeat(64), "a b"]) {
      assert.throws(
        () => validateVmName(bad),
        (error: { code: string }) => error.code === ErrorCode.INVALID_PARAMS,
      );
    }
  });

  it("allows only the state machine's transitions", () => {
    assert.ok(canTransition("created", "starting"));
    assert.ok(canTransition("running", "stopping"));
    assert.ok(canTransition("stopped", "starting"));
    assert.ok(!canTransition("stopped", "running"));
    assert.ok(!canTransition("created", "running"));
    assert.throws(() => assertTransition("web", "stopped", "stopping"), /web.*stopped.*stopping/);
  });

  it("derives a locally administered MAC and a short tap name from the id", () => {
    assert.equal(macForVmId("0a1b2c3d4e5f"), "52:54:0a:1b:2c:3d");
    assert.ok(tapNameForVmId("0a1b2c3d4e5f").length <= 15);
  });

  it("maps every error code to an exit status", () => {
    for (const code of Object.values(ErrorCode)) assert.equal(typeof exitStatusFor[code], "number");
  });

  it("keeps BUILD_VERSION equal to package.json's version", () => {
    const pkg = JSON.parse(readFileSync(new URL("../../package.json", import.meta.url), "utf8")) as {
      version: string;
    };
    assert.equal(BUILD_VERSION, pkg.version);
  });
});
