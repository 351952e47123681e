/**
 * The prepare payload (built by the CLI's host code) imported by the guest
 * program, both run here with the system's git, sh and tar: the history
 * arrives as a pack with its index that the import only moves into place
 * (git fsck finds every object, no index-pack ran), the same HEAD and
 * branch, staged, unstaged and untracked changes as on the host, a
 * detached HEAD, and a shallow repository's boundary.
 */
import assert from "node:assert/strict";
import { execFileSync, spawn, spawnSync } from "node:child_process";
import { chmodSync, existsSync, mkdirSync, readdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { after, describe, it } from "node:test";
import { buildPreparePayload, inspectRepo, tarStream } from "../../src/cli/workspace/host.ts";
import {
  PREPARE_SCRIPT,
  STAGE_SCRIPT,
  shellProgram,
  UNSTAGE_SCRIPT,
} from "../../src/core/workspace/index.ts";
import { makeTempDir } from "../helpers/tmp.ts";

const ENV = {
  ...process.env,
  GIT_AUTHOR_NAME: "t",
  GIT_AUTHOR_EMAIL: "t@t",
  GIT_COMMITTER_NAME: "t",
  GIT_COMMITTER_EMAIL: "t@t",
};

function git(repo: string, ...args: string[]): string {
  return execFileSync("git", ["-C", repo, ...args], { encoding: "utf8", env: ENV }).trim();
}

/** Builds the payload for `repo` and runs the guest's import program on it into `dest`. */
async function prepare(
  repo: string,
  dest: string,
  options: { includeUntracked?: boolean; stages?: string[] } = {},
) {
  const info = await inspectRepo(repo, null);
  const payload = await buildPreparePayload({
    repo: info,
    includeUntracked: options.includeUntracked === true,
  });
  try {
    assert.ok(readdirSync(join(payload.dir, "pack")).some((f) => /^pack-[0-9a-f]{40}\.idx$/.test(f)));
    const stage = execFileSync("sh", ["-c", STAGE_SCRIPT, "banger-stage", dest], { encoding: "utf8" }).trim();
    options.stages?.push(stage);
    // The daemon writes the payload into the stage through the agent; tar stands in for it here.
    const tar = tarStream(payload.dir, ["."]);
    const untar = spawn("tar", ["-x", "-C", join(stage, "in")], { stdio: ["pipe", "inherit", "inherit"] });
    tar.stdout.pipe(untar.stdin);
    assert.equal(await new Promise<number | null>((resolve) => untar.on("close", resolve)), 0);
    await tar.done;
    const [command, ...args] = shellProgram("banger-prepare", PREPARE_SCRIPT, [
      dest,
      "0",
      info.branch ?? "",
      info.head,
      stage,
    ]) as [string, ...string[]];
    const child = spawn(command, args, { stdio: ["ignore", "inherit", "pipe"], env: ENV });
    let stderr = "";
    child.stderr.on("data", (c: Buffer) => (stderr += c.toString()));
    const code = await new Promise<number | null>((resolve) => child.on("close", resolve));
    assert.equal(code, 0, stderr);
    assert.equal(existsSync(stage), false, "the staging directory is gone");
  } finally {
    await payload.remove();
  }
  return info;
}

describe("workspace import: a pack made on the host, moved into place in the guest", () => {
  const work = makeTempDir("bgi-");
  after(() => work.cleanup());

  it("gives the same HEAD, branch and changes, and every object with no re-indexing", async () => {
    const repo = join(work.path, "repo");
    mkdirSync(repo);
    git(repo, "init", "-q", "-b", "main");
    writeFileSync(join(repo, "a.txt"), "one\n");
    writeFileSync(join(repo, "run.sh"), "#!/bin/sh\n");
    chmodSync(join(repo, "run.sh"), 0o755);
    git(repo, "add", ".");
    git(repo, "commit", "-q", "-m", "first");
    writeFileSync(join(repo, "a.txt"), "one\ntwo\n");
    git(repo, "commit", "-qam", "second");
    writeFileSync(join(repo, "staged.txt"), "staged\n");
    git(repo, "add", "staged.txt");
    writeFileSync(join(repo, "a.txt"), "one\ntwo\nthree\n");
    writeFileSync(join(repo, "untracked.txt"), "new\n");

    const dest = join(work.path, "guest", "repo");
    const info = await prepare(repo, dest, { includeUntracked: true });
    assert.equal(git(dest, "rev-parse", "HEAD"), info.head);
    assert.equal(git(dest, "symbolic-ref", "--short", "HEAD"), "main");
    assert.equal(git(dest, "status", "--porcelain"), git(repo, "status", "--porcelain"));
    assert.equal(git(dest, "log", "--format=%s"), "second\nfirst");
    git(dest, "fsck", "--strict", "--no-dangling");
    assert.equal(
      readdirSync(join(dest, ".git", "objects", "pack")).filter((f) => f.endsWith(".pack")).length,
      1,
    );
    assert.equal(
      git(dest, "count-objects", "-v").match(/^count: (\d+)/m)?.[1],
      "1",
      "the history stays packed: the only loose object is the staged file's blob (git apply --index)",
    );

    git(repo, "checkout", "-q", "--detach");
    const detached = await prepare(repo, join(work.path, "guest", "detached"));
    assert.equal(git(join(work.path, "guest", "detached"), "rev-parse", "HEAD"), detached.head);
    const symbolic = spawnSync("git", [
      "-C",
      join(work.path, "guest", "detached"),
      "symbolic-ref",
      "-q",
      "HEAD",
    ]);
    assert.equal(symbolic.status, 1, "HEAD is detached");
  });

  it("keeps a shallow repository's boundary", async () => {
    const origin = join(work.path, "origin");
    mkdirSync(origin);
    git(origin, "init", "-q", "-b", "main");
    for (const n of [1, 2, 3]) {
      writeFileSync(join(origin, "f"), `${n}\n`);
      git(origin, "add", ".");
      git(origin, "commit", "-q", "-m", `c${n}`);
    }
    const shallow = join(work.path, "shallow");
    execFileSync("git", ["clone", "-q", "--depth=1", `file://${origin}`, shallow], { env: ENV });
    const dest = join(work.path, "guest", "shallow");
    await prepare(shallow, dest);
    assert.equal(git(dest, "rev-parse", "--is-shallow-repository"), "true");
    assert.equal(git(dest, "log", "--format=%s"), "c3");
    git(dest, "fsck", "--no-dangling");
  });

  it("keeps a small archive's bytes when the reader comes after tar has exited", async () => {
    const dir = join(work.path, "small");
    mkdirSync(dir);
    writeFileSync(join(dir, "f"), "hello\n");
    const tar = tarStream(dir, ["f"]);
    await tar.done;
    let bytes = 0;
    for await (const chunk of tar.stdout) bytes += (chunk as Buffer).length;
    assert.equal(bytes, 10240);
  });

  it("undoes an import: the staging directory, and the repository only where this import made it", async () => {
    const repo = join(work.path, "undo-repo");
    mkdirSync(repo);
    git(repo, "init", "-q", "-b", "main");
    writeFileSync(join(repo, "a"), "a\n");
    git(repo, "add", ".");
    git(repo, "commit", "-q", "-m", "a");
    const unstage = (stage: string, dest: string) =>
      execFileSync("sh", ["-c", UNSTAGE_SCRIPT, "banger-unstage", stage, dest], { encoding: "utf8" });

    // Killed after the rename: the repository it made goes.
    const dest = join(work.path, "undo", "made");
    const stages: string[] = [];
    await prepare(repo, dest, { stages });
    const [stage] = stages as [string];
    unstage(stage, dest);
    assert.equal(existsSync(dest), false);

    // A repository another import made (another staging directory) stays.
    const kept = join(work.path, "undo", "kept");
    await prepare(repo, kept);
    unstage(join(work.path, "undo", ".banger-prepare.other"), kept);
    assert.equal(git(kept, "rev-parse", "HEAD").length, 40);

    // Killed part way: the staging directory goes, read-only files and all; the destination was never made.
    const half = execFileSync("sh", ["-c", STAGE_SCRIPT, "banger-stage", join(work.path, "undo", "half")], {
      encoding: "utf8",
    }).trim();
    mkdirSync(join(half, "tree"));
    writeFileSync(join(half, "tree", "ro"), "x");
    chmodSync(join(half, "tree"), 0o555);
    unstage(half, join(work.path, "undo", "half"));
    assert.equal(existsSync(half), false);
  });

  it("clears staging directories an unfinished import left beside the destination", async () => {
    const parent = join(work.path, "stale");
    mkdirSync(join(parent, ".banger-prepare.dead1", "in"), { recursive: true });
    mkdirSync(join(parent, ".banger-prepare.dead2", "tree"), { recursive: true });
    chmodSync(join(parent, ".banger-prepare.dead2", "tree"), 0o555);
    writeFileSync(join(parent, "keep.txt"), "mine");
    const stage = execFileSync("sh", ["-c", STAGE_SCRIPT, "banger-stage", join(parent, "repo")], {
      encoding: "utf8",
    }).trim();
    assert.deepEqual(readdirSync(parent).sort(), [stage.slice(parent.length + 1), "keep.txt"].sort());
  });
});
