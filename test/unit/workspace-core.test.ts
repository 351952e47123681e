/**
 * The pure side of workspaces: export meta parsing, the unexported-work
 * rule the delete check uses, the default guest path, the tar writer
 * (read back by the system tar), `vm cp`'s NAME:PATH parsing and its
 * destination rules.
 */
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { describe, it } from "node:test";
import { parseEndpoint } from "../../src/cli/commands/vm/cp.ts";
import {
  type CopySource,
  defaultGuestPath,
  hasUnexportedWork,
  parseExportMeta,
  planReceive,
  receiveTarget,
  TAR_END,
  tarArchive,
  tarHeader,
  tarPadding,
} from "../../src/core/workspace/index.ts";
import { BangerError, ErrorCode } from "../../src/protocol/index.ts";

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
    assert.throws(() => tarArchive([{ name: "", data: new Uint8Array(), mode: 0o600 }]), /empty/);
  });

  it("writes headers for long names, long link targets, directories and owners (PAX when ustar cannot hold them)", () => {
    const longName = `${"d".repeat(120)}/${"f".repeat(120)}`;
    const splitName = `${"p".repeat(90)}/${"n".repeat(90)}`;
    const target = `/${"t".repeat(200)}`;
    const archive = Buffer.concat([
      tarHeader({ name: "dir", type: "dir", mode: 0o711, uid: 1234, gid: 99_999_999, mtime: 1_600_000_000 }),
      tarHeader({ name: longName, type: "file", size: 3, mode: 0o640 }),
      Buffer.from("abc"),
      tarPadding(3),
      tarHeader({ name: splitName, type: "file", size: 0, mode: 0o644 }),
      tarHeader({ name: "link", type: "symlink", mode: 0o777, link: target }),
      TAR_END,
    ]);
    const listing = execFileSync("tar", ["-tv", "--numeric-owner", "-f", "-"], {
      input: archive,
      encoding: "utf8",
    });
    assert.match(listing, /^drwx--x--x 1234\/99999999 .* 2020-09-13 \d\d:\d\d dir\/$/m);
    assert.match(listing, new RegExp(`^-rw-r----- 0/0 +3 .* ${longName}$`, "m"));
    assert.match(listing, new RegExp(` ${splitName}$`, "m"));
    assert.match(listing, new RegExp(`^lrwxrwxrwx .* link -> ${target}$`, "m"));
    assert.equal(tarPadding(512).length, 0);
    assert.equal(tarPadding(513).length, 511);
  });

  it("places a copy by docker cp's rules and refuses entries that leave it", () => {
    const plan = (dest: string, destKind: "dir" | "file" | "missing", source: CopySource, base = "src") =>
      planReceive({ dest, destKind, parentIsDir: true, source, base });
    const into = plan("/root/in", "dir", "dir");
    assert.deepEqual(into, { top: "/root/in/src", base: "src", finalPath: "/root/in/src" });
    assert.equal(receiveTarget(into, "src/a/b"), "/root/in/src/a/b");
    assert.equal(receiveTarget(into, "./src/"), "/root/in/src");
    assert.equal(receiveTarget(into, "other/x"), undefined);
    const renamed = plan("/root/new/", "missing", "dir");
    assert.deepEqual(renamed, { top: "/root/new", base: "src", finalPath: "/root/new" });
    assert.equal(receiveTarget(renamed, "/src/x"), "/root/new/x");
    const contents = plan("/", "dir", "contents", ".");
    assert.equal(receiveTarget(contents, "./etc/x"), "/etc/x");
    assert.equal(receiveTarget(contents, "./"), "/");
    assert.deepEqual(plan("/root/f", "file", "file"), { top: "/root/f", base: "src", finalPath: "/root/f" });
    const refused = (fn: () => unknown, pattern: RegExp) =>
      assert.throws(
        fn,
        (e: unknown) =>
          e instanceof BangerError && e.code === ErrorCode.INVALID_PARAMS && pattern.test(e.message),
      );
    refused(() => plan("/root/f", "file", "dir"), /not a directory/);
    refused(() => plan("/root/f/", "missing", "file"), /is not a directory/);
    refused(
      () => planReceive({ dest: "/a/b", destKind: "missing", parentIsDir: false, source: "dir", base: "x" }),
      /\/a: no such directory/,
    );
    refused(() => receiveTarget(contents, "a/../../etc/passwd"), /\.\./);
    refused(() => receiveTarget(contents, "a\0b"), /NUL/);
  });

  it("reads NAME:PATH as a VM path only when NAME is a VM name", () => {
    assert.deepEqual(parseEndpoint("box:/root/x"), { vm: "box", path: "/root/x" });
    assert.deepEqual(parseEndpoint("./a:b"), { vm: null, path: "./a:b" });
    assert.deepEqual(parseEndpoint("/tmp/x"), { vm: null, path: "/tmp/x" });
    assert.deepEqual(parseEndpoint("Not_A_Vm:x"), { vm: null, path: "Not_A_Vm:x" });
    assert.deepEqual(parseEndpoint("-"), { vm: null, path: "-" });
  });
});
