/**
 * The pure side of workspaces: export meta parsing, the unexported-work
 * rule the delete check uses, the default guest path, the tar writer
 * (read back by the system tar), and `vm cp`'s NAME:PATH parsing.
 */
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { describe, it } from "node:test";
import { parseEndpoint } from "../../src/cli/commands/vm/cp.ts";
import {
  defaultGuestPath,
  hasUnexportedWork,
  parseExportMeta,
  tarArchive,
} from "../../src/core/workspace/index.ts";

const A = "a".repeat(40);
const B = "b".repeat(40);
const T = "c".repeat(40);

describe("workspace core", () => {
  it("parses an export's meta and refuses one with a field missing", () => {
    const meta = parseExportMeta(`head ${A}\ntree ${T}\ntip ${B}\ncommits 3\ndirty 1\n`);
    assert.deepEqual(meta, { head: A, tree: T, tip: B, commits: 3, dirty: true });
    assert.throws(() => parseExportMeta(`head ${A}\ncommits 1\n`), /lacks 'tree'/);
  });

  it("counts work as unexported unless it is the base or exactly the last export", () => {
    const state = { head: A, tree: T, tip: A, commits: 0, dirty: false };
    assert.equal(hasUnexportedWork({ base: A, state, exported: null }), false, "untouched");
    assert.equal(
      hasUnexportedWork({ base: A, state: { ...state, dirty: true }, exported: null }),
      true,
      "dirty",
    );
    const moved = { ...state, head: B, commits: 1 };
    assert.equal(hasUnexportedWork({ base: A, state: moved, exported: null }), true, "a commit");
    assert.equal(
      hasUnexportedWork({ base: A, state: moved, exported: { head: B, tree: T } }),
      false,
      "exported",
    );
    assert.equal(
      hasUnexportedWork({ base: A, state: { ...moved, tree: A }, exported: { head: B, tree: T } }),
      true,
      "changed after the export",
    );
  });

  it("puts a repository at /root/work/<its directory name> by default", () => {
    assert.equal(defaultGuestPath("/home/me/src/app"), "/root/work/app");
    assert.equal(defaultGuestPath("/home/me/src/app/"), "/root/work/app");
  });

  it("writes tars the system tar reads back", () => {
    const archive = tarArchive([
      { name: "keys", data: new TextEncoder().encode("ssh-ed25519 AAAA k\n"), mode: 0o600 },
      { name: "files/0", data: new Uint8Array(1000).fill(65), mode: 0o600 },
    ]);
    const listing = execFileSync("tar", ["-tv", "-f", "-"], { input: archive, encoding: "utf8" });
    assert.match(listing, /^-rw------- .* 19 .* keys$/m);
    assert.match(listing, /^-rw------- .* 1000 .* files\/0$/m);
    assert.throws(
      () => tarArchive([{ name: "x".repeat(100), data: new Uint8Array(), mode: 0o600 }]),
      /too long/,
    );
  });

  it("reads NAME:PATH as a VM path only when NAME is a VM name", () => {
    assert.deepEqual(parseEndpoint("box:/root/x"), { vm: "box", path: "/root/x" });
    assert.deepEqual(parseEndpoint("./a:b"), { vm: null, path: "./a:b" });
    assert.deepEqual(parseEndpoint("/tmp/x"), { vm: null, path: "/tmp/x" });
    assert.deepEqual(parseEndpoint("Not_A_Vm:x"), { vm: null, path: "Not_A_Vm:x" });
    assert.deepEqual(parseEndpoint("-"), { vm: null, path: "-" });
  });
});
