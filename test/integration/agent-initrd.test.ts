/**
 * The per-boot initrd: the image's initrd, then a gzip'd newc archive that
 * GNU cpio lists with the agent, and for an image with no kernel of its own
 * also banger's init, scripts and initramfs-init as /init, byte for byte.
 */
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { after, describe, it } from "node:test";
import { gunzipSync } from "node:zlib";
import { agentInitrd } from "../../src/sys/agent/initrd.ts";
import { repoRoot } from "../helpers/cli.ts";
import { makeTempDir } from "../helpers/tmp.ts";

describe("agentInitrd", () => {
  const dir = makeTempDir("bgi-");
  after(() => dir.cleanup());
  const base = Buffer.from("the image's own initrd\n");
  writeFileSync(join(dir.path, "initrd.gz"), base);
  writeFileSync(join(dir.path, "agent"), "ELF agent");

  const build = async (out: string, guestFilesDir?: string) => {
    await agentInitrd({
      imageInitrd: join(dir.path, "initrd.gz"),
      agentBinary: join(dir.path, "agent"),
      out: join(dir.path, out),
      guestFilesDir,
    });
    const bytes = readFileSync(join(dir.path, out));
    assert.deepEqual(bytes.subarray(0, base.length), base, "the image's initrd comes first, unchanged");
    const archive = gunzipSync(bytes.subarray(base.length));
    const listing = execFileSync("cpio", ["-it", "--quiet"], { input: archive, encoding: "utf8" });
    return { archive, names: listing.split("\n").filter(Boolean) };
  };

  it("appends only the agent for an image with its own kernel", async () => {
    assert.deepEqual((await build("plain.img")).names, ["banger", "banger/agent"]);
  });

  it("adds banger's guest files and its initramfs-init as /init for a kernel-less image", async () => {
    const guest = join(repoRoot, "guest");
    const { archive, names } = await build("oci.img", guest);
    assert.deepEqual(names, [
      "banger",
      "banger/agent",
      "banger/bin",
      "init",
      "banger/init",
      "banger/bin/banger-setup",
      "banger/bin/powerbtn-wait",
    ]);
    const extract = join(dir.path, "extract");
    execFileSync("sh", ["-c", `mkdir -p "$1" && cd "$1" && cpio -id --quiet`, "sh", extract], {
      input: archive,
    });
    assert.deepEqual(readFileSync(join(extract, "init")), readFileSync(join(guest, "initramfs-init")));
    assert.deepEqual(readFileSync(join(extract, "banger/init")), readFileSync(join(guest, "banger-init")));
  });
});
