/**
 * Export from a stopped VM's disk with the real tools, no guest: a git
 * repository inside an ext4 image (raw, and under a qcow2 overlay) is copied
 * out with debugfs and exported by the same program the guest runs. The
 * repository's own config is hostile (an fsmonitor command, alternates to a
 * host path): neither is obeyed on the host. A missing repository and a
 * dm-snapshot store are refused with a reason.
 */
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { existsSync, mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { EXPORT_SCRIPT, parseExportMeta, shellProgram } from "../../src/core/workspace/index.ts";
import { ErrorCode } from "../../src/protocol/index.ts";
import { copyOutOfDisk, runUnprivileged } from "../../src/sys/diskread/index.ts";
import { createProcessRunner } from "../../src/sys/runner/index.ts";
import { makeTempDir } from "../helpers/tmp.ts";

const haveTools = ["debugfs", "mkfs.ext4", "qemu-img", "git", "setpriv"].every((tool) => {
  try {
    execFileSync("sh", ["-c", `command -v ${tool}`], { stdio: "ignore" });
    return true;
  } catch {
    return false;
  }
});
const skip = haveTools ? false : "needs debugfs, mkfs.ext4, qemu-img, git and setpriv";

describe("workspace export from a disk image", { skip }, () => {
  let dir: { path: string; cleanup(): void };
  let raw: string;
  let qcow2: string;
  let base: string;
  // World-writable /tmp, so even the unprivileged export could create it if it obeyed the command.
  const pwned = () => `/tmp/bgd-pwned-${process.pid}`;
  const runner = createProcessRunner();

  before(() => {
    dir = makeTempDir("bgd-");
    const root = join(dir.path, "root");
    const repo = join(root, "root", "work", "app");
    mkdirSync(repo, { recursive: true });
    const git = (...args: string[]) =>
      execFileSync("git", ["-C", repo, "-c", "user.name=t", "-c", "user.email=t@x", ...args], {
        encoding: "utf8",
      }).trim();
    git("init", "-q", "-b", "main");
    writeFileSync(join(repo, "a.txt"), "a\n");
    git("add", ".");
    git("commit", "-q", "-m", "base");
    base = git("rev-parse", "HEAD");
    writeFileSync(join(repo, "b.txt"), "b\n");
    git("add", ".");
    git("commit", "-q", "-m", "guest work");
    writeFileSync(join(repo, "a.txt"), "a, uncommitted\n");
    // What a hostile guest could leave behind for the host to obey.
    git("config", "core.fsmonitor", `touch ${pwned()}`);
    writeFileSync(join(repo, ".git", "objects", "info", "alternates"), "/etc\n");
    raw = join(dir.path, "root.raw");
    execFileSync("mkfs.ext4", ["-q", "-d", root, raw, "64M"]);
    qcow2 = join(dir.path, "root.qcow2");
    execFileSync("qemu-img", ["create", "-q", "-f", "qcow2", "-b", raw, "-F", "raw", qcow2]);
  });
  after(() => {
    dir?.cleanup();
    execFileSync("rm", ["-f", pwned()]);
  });

  for (const kind of ["raw", "qcow2"] as const) {
    it(`exports committed and uncommitted work from a ${kind} disk without obeying the guest's config`, async () => {
      const signal = new AbortController().signal;
      const scratch = join(dir.path, `scratch-${kind}`);
      mkdirSync(scratch);
      const copy = await copyOutOfDisk({
        runner,
        diskFile: kind === "raw" ? raw : qcow2,
        guestPath: "/root/work/app",
        scratchDir: scratch,
        signal,
      });
      try {
        const chunks: Buffer[] = [];
        const result = await runUnprivileged({
          argv: shellProgram("banger-export", EXPORT_SCRIPT, [copy.path, base, "state"]),
          onStdout: (chunk) => void chunks.push(chunk),
          signal,
        });
        assert.equal(result.exitCode, 0, result.stderr);
        const meta = parseExportMeta(Buffer.concat(chunks).toString("utf8"));
        assert.equal(meta.commits, 1);
        assert.equal(meta.dirty, true);
        assert.equal(existsSync(pwned()), false, "the guest's fsmonitor command did not run");
      } finally {
        await copy.remove();
      }
      assert.equal(existsSync(copy.path), false, "the copy is removed");
      assert.deepEqual(
        execFileSync("ls", ["-A", scratch], { encoding: "utf8" }),
        "",
        "no flattened disk left",
      );
    });
  }

  it("refuses a disk without the repository and a dm-snapshot store, naming why", async () => {
    const signal = new AbortController().signal;
    await assert.rejects(
      copyOutOfDisk({ runner, diskFile: raw, guestPath: "/root/work/none", scratchDir: dir.path, signal }),
      (error: { code?: string; message: string }) =>
        error.code === ErrorCode.WORKSPACE_FAILED &&
        /no git repository at \/root\/work\/none/.test(error.message),
    );
    await assert.rejects(
      copyOutOfDisk({
        runner,
        diskFile: join(dir.path, "root.cow"),
        guestPath: "/root/work/app",
        scratchDir: dir.path,
        signal,
      }),
      (error: { code?: string }) => error.code === ErrorCode.BAD_STATE,
    );
  });
});
