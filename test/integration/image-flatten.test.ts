/**
 * Hostile layers: every way a tar entry can try to write outside the tree
 * (absolute names, `..`, symlink and hardlink escapes, whiteouts of `..`)
 * fails with IMAGE_INVALID naming the layer and the entry, and nothing
 * appears outside the tree. Links that stay inside are followed the way a
 * chroot would.
 */
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { mkdirSync, readdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { after, test } from "node:test";
import type { BangerError } from "../../src/protocol/index.ts";
import { TreeFlattener } from "../../src/sys/oci/flatten.ts";
import { makeTar } from "../helpers/registry.ts";
import { makeTempDir } from "../helpers/tmp.ts";

const tmp = makeTempDir("bgt-flat-");
after(() => tmp.cleanup());
let counter = 0;

type Entries = Parameters<typeof makeTar>[0];

async function flatten(...layers: Entries[]): Promise<string> {
  counter += 1;
  const root = join(tmp.path, `case-${counter}`);
  const tree = join(root, "staging", "tree");
  mkdirSync(tree, { recursive: true });
  const flattener = new TreeFlattener(tree);
  for (const [index, entries] of layers.entries()) {
    const { tar, diffId } = await makeTar(entries);
    const file = join(root, `layer-${index}.tar`);
    writeFileSync(file, tar);
    await flattener.apply({ file, digest: diffId, diffId }, index);
  }
  await flattener.finish();
  return tree;
}

/** Everything under the case's root except the tree and the layer files. */
function outside(tree: string): string[] {
  const root = join(tree, "..", "..");
  return [...readdirSync(root), ...readdirSync(join(root, "staging"))].sort();
}

const hostile: [string, Entries[], RegExp][] = [
  ["an absolute name", [[{ header: { name: "/pwned" }, body: "x" }]], /"\/pwned" has an absolute name/],
  [
    "a .. component",
    [[{ header: { name: "a/../../pwned" }, body: "x" }]],
    /"a\/..\/..\/pwned" has a ".." component/,
  ],
  [
    "a symlink that climbs out",
    [
      [
        { header: { name: "evil", type: "symlink", linkname: "../../.." } },
        { header: { name: "evil/pwned" }, body: "x" },
      ],
    ],
    /"evil\/pwned" goes through a symlink that leads outside the tree/,
  ],
  [
    "a symlink in an earlier layer",
    [
      [{ header: { name: "up", type: "symlink", linkname: ".." } }],
      [{ header: { name: "up/pwned" }, body: "x" }],
    ],
    /layer 2 .*"up\/pwned" goes through a symlink/,
  ],
  [
    "a hardlink to ..",
    [[{ header: { name: "h", type: "link", linkname: "../outside.txt" } }]],
    /"h" is a hardlink to "..\/outside.txt", which is outside the tree/,
  ],
  [
    "a hardlink through an escaping symlink",
    [
      [
        { header: { name: "d", type: "symlink", linkname: "../.." } },
        { header: { name: "h", type: "link", linkname: "d/layer-0.tar" } },
      ],
    ],
    /"h" goes through a symlink that leads outside the tree/,
  ],
  [
    "a hardlink to nothing",
    [[{ header: { name: "h", type: "link", linkname: "missing" } }]],
    /"h" is a hardlink to "missing"/,
  ],
  ["a whiteout of ..", [[{ header: { name: "a/.wh.." } }]], /"a\/.wh.." is a whiteout of no valid name/],
  [
    "a whiteout through an escaping symlink",
    [
      [
        { header: { name: "up", type: "symlink", linkname: "../.." } },
        { header: { name: "up/.wh.layer-0.tar" } },
      ],
    ],
    /goes through a symlink that leads outside/,
  ],
];

for (const [name, layers, message] of hostile) {
  test(`refuses ${name}, naming layer and entry, writing nothing outside`, async () => {
    await assert.rejects(flatten(...layers), (error: BangerError) => {
      assert.equal(error.code, "IMAGE_INVALID");
      assert.match(error.message, /^layer \d \(sha256:[0-9a-f]{12}\): entry/);
      assert.match(error.message, message);
      assert.match(error.hint ?? "", /outside its own tree|not a file in the tree|published nothing/);
      return true;
    });
    const tree = join(tmp.path, `case-${counter}`, "staging", "tree");
    assert.deepEqual(
      outside(tree),
      [...layers.map((_, index) => `layer-${index}.tar`), "staging", "tree"].sort(),
    );
  });
}

test("an absolute symlink is followed inside the tree, as in a chroot", async () => {
  const tree = await flatten([
    { header: { name: "usr/lib", type: "directory", mode: 0o755 } },
    { header: { name: "lib", type: "symlink", linkname: "/usr/lib" } },
    { header: { name: "lib/libx.so" }, body: "lib\n" },
  ]);
  assert.equal(readFileSync(join(tree, "usr/lib/libx.so"), "utf8"), "lib\n");
});

test("an entry replaces a symlink instead of writing through it", async () => {
  const tree = await flatten(
    [
      { header: { name: "target.txt" }, body: "keep\n" },
      { header: { name: "file", type: "symlink", linkname: "target.txt" } },
    ],
    [{ header: { name: "file" }, body: "new\n" }],
  );
  assert.equal(readFileSync(join(tree, "target.txt"), "utf8"), "keep\n");
  assert.equal(readFileSync(join(tree, "file"), "utf8"), "new\n");
});

test("a rewritten hardlinked file leaves its other name alone", async () => {
  const tree = await flatten(
    [{ header: { name: "a" }, body: "one\n" }, { header: { name: "b", type: "link", linkname: "a" } }],
    [{ header: { name: "b" }, body: "two\n" }],
  );
  assert.equal(readFileSync(join(tree, "a"), "utf8"), "one\n");
  assert.equal(readFileSync(join(tree, "b"), "utf8"), "two\n");
});

test("an opaque marker keeps what its own layer wrote, before or after it", async () => {
  const tree = await flatten(
    [
      { header: { name: "d/old.txt" }, body: "old\n" },
      { header: { name: "d/sub/old.txt" }, body: "old\n" },
    ],
    [
      { header: { name: "d/before.txt" }, body: "b\n" },
      { header: { name: "d/sub", type: "directory", mode: 0o755 } },
      { header: { name: "d/sub/new.txt" }, body: "n\n" },
      { header: { name: "d/.wh..wh..opq" } },
      { header: { name: "d/after.txt" }, body: "a\n" },
    ],
  );
  assert.deepEqual(readdirSync(join(tree, "d")).sort(), ["after.txt", "before.txt", "sub"]);
  assert.deepEqual(readdirSync(join(tree, "d/sub")), ["new.txt"]);
});

test("a layer that stops right after its last file (no padding, no end blocks) still applies", async () => {
  const { tar } = await makeTar([
    { header: { name: "etc/one" }, body: "one\n" },
    { header: { name: "etc/two" }, body: "two!\n" },
  ]);
  // Header 512 + data padded to 512 per file; cut the second file's padding and the end-of-archive blocks.
  const truncated = tar.subarray(0, 512 * 3 + "two!\n".length);
  const root = join(tmp.path, "truncated");
  const tree = join(root, "tree");
  mkdirSync(tree, { recursive: true });
  const file = join(root, "layer.tar");
  writeFileSync(file, truncated);
  const diffId = `sha256:${createHash("sha256").update(truncated).digest("hex")}`;
  const flattener = new TreeFlattener(tree);
  await flattener.apply({ file, digest: diffId, diffId }, 0);
  assert.equal(readFileSync(join(tree, "etc/two"), "utf8"), "two!\n");
});
