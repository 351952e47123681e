/**
 * Workspaces, `vm cp` and auth sync on one real guest (QEMU, TCG):
 * - a repository made here (binaries, a symlink, an exec bit, a unicode
 *   name, a 50 MB file, a submodule, staged, dirty, untracked and ignored
 *   files), prepared from a worktree of it: the guest has the same HEAD,
 *   branch, status and diff, and never the ignored file;
 * - work in the guest (commits, a deletion, uncommitted changes) exported as
 *   patches (git am + git apply on the base give the guest's tree), a bundle
 *   (verifies, same tree) and a branch in the worktree's repository
 *   (refused when diverged, moved with --force);
 * - delete refused while work is unexported; export from the stopped VM's disk;
 * - `vm cp` both ways of a tree with symlinks and a 100 MB file;
 * - auth sync: a 0600 file with the right content, the git identity, no
 *   secret in the daemon log, and the user's key logging in with ssh;
 * - parallel agents: two VMs prepared from one repository at once, each
 *   exporting its own work to its own branch.
 */
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { createHash } from "node:crypto";
import {
  chmodSync,
  lstatSync,
  mkdirSync,
  readdirSync,
  readFileSync,
  readlinkSync,
  symlinkSync,
  writeFileSync,
} from "node:fs";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { createE2eEnv, type E2eEnv, e2eSkipReason } from "../helpers/e2e.ts";
import { makeTempDir } from "../helpers/tmp.ts";

const skip = e2eSkipReason();
const MIB = 1024 * 1024;
const SECRET = `token-${process.pid}-never-logged`;
const GUEST = "/root/work/wt";
/** exitStatusFor: UNEXPORTED_WORK and BRANCH_DIVERGED. */
const REFUSED = 6;

function git(cwd: string, ...args: string[]): string {
  return execFileSync("git", ["-C", cwd, ...args], { encoding: "utf8", env: gitEnv }).trim();
}
let gitEnv: NodeJS.ProcessEnv = process.env;

function randomFile(path: string, bytes: number): void {
  writeFileSync(path, execFileSync("head", ["-c", String(bytes), "/dev/urandom"], { maxBuffer: 2 * bytes }));
}

function sha(path: string): string {
  return createHash("sha256").update(readFileSync(path)).digest("hex");
}

/** Every entry under `dir`: type, mode, size, content digest or link target. */
function describeTree(dir: string, prefix = ""): string[] {
  const lines: string[] = [];
  for (const name of readdirSync(dir).sort()) {
    const path = join(dir, name);
    const info = lstatSync(path);
    const mode = (info.mode & 0o7777).toString(8);
    if (info.isSymbolicLink()) lines.push(`${prefix}${name} link ${readlinkSync(path)}`);
    else if (info.isDirectory())
      lines.push(`${prefix}${name}/ ${mode}`, ...describeTree(path, `${prefix}${name}/`));
    else lines.push(`${prefix}${name} ${mode} ${info.size} ${sha(path)}`);
  }
  return lines;
}

describe("workspaces, vm cp and auth sync on a real guest (QEMU)", { skip }, () => {
  let env: E2eEnv;
  let user: { path: string; cleanup(): void };
  let main: string;
  let worktree: string;
  const run = async (script: string, input?: string) => {
    const stdin = input === undefined ? [] : ["-i"];
    const result = await env.banger(["vm", "exec", ...stdin, "box", "--", "sh", "-c", script], {
      ...(input === undefined ? {} : { input }),
    });
    assert.equal(result.code, 0, `${script}\n${result.stderr}`);
    return result.stdout;
  };

  before(async () => {
    user = makeTempDir("bgw-");
    const home = join(user.path, "home");
    mkdirSync(join(home, ".ssh"), { recursive: true, mode: 0o700 });
    execFileSync("ssh-keygen", [
      "-q",
      "-t",
      "ed25519",
      "-N",
      "",
      "-C",
      "e2e-user",
      "-f",
      join(home, ".ssh", "id_ed25519"),
    ]);
    writeFileSync(join(home, ".gitconfig"), "[user]\n\tname = E2E User\n\temail = e2e@example.org\n");
    writeFileSync(join(home, "secret.txt"), `${SECRET}\n`, { mode: 0o600 });
    gitEnv = { ...process.env, HOME: home, GIT_CONFIG_NOSYSTEM: "1" };
    env = createE2eEnv({
      name: "ws",
      config: `[daemon]\nlog_level = "debug"\n[auth]\nfiles = [{ host = "~/secret.txt", guest = "/root/.config/e2e/secret.txt" }]\n`,
      env: () => ({ HOME: home, GIT_CONFIG_NOSYSTEM: "1" }),
    });

    // The submodule and the main repository, then a worktree of it with every kind of change.
    const sub = join(user.path, "sub");
    mkdirSync(sub);
    git(sub, "init", "-q", "-b", "main");
    writeFileSync(join(sub, "lib.txt"), "library\n");
    git(sub, "add", ".");
    git(sub, "commit", "-q", "-m", "sub");
    main = join(user.path, "main");
    mkdirSync(main);
    git(main, "init", "-q", "-b", "main");
    writeFileSync(join(main, "README.md"), "hello\n");
    writeFileSync(join(main, ".gitignore"), "ignored.log\n");
    writeFileSync(join(main, "run.sh"), "#!/bin/sh\necho run\n");
    chmodSync(join(main, "run.sh"), 0o755);
    symlinkSync("README.md", join(main, "link"));
    writeFileSync(join(main, "héllo wörld.txt"), "unicode\n");
    randomFile(join(main, "blob.bin"), 64 * 1024);
    randomFile(join(main, "big.bin"), 50 * MIB);
    writeFileSync(join(main, "gone.txt"), "to be deleted in the guest\n");
    git(main, "add", ".");
    git(main, "-c", "protocol.file.allow=always", "submodule", "add", "-q", sub, "sub");
    git(main, "commit", "-q", "-m", "base");
    worktree = join(user.path, "wt");
    git(main, "worktree", "add", "-q", "-b", "feature", worktree);
    git(worktree, "-c", "protocol.file.allow=always", "submodule", "update", "-q", "--init");
    writeFileSync(join(worktree, "README.md"), "hello, staged\n");
    git(worktree, "add", "README.md");
    writeFileSync(join(worktree, "README.md"), "hello, staged and dirty\n");
    writeFileSync(join(worktree, "untracked.txt"), "new\n");
    writeFileSync(join(worktree, "ignored.log"), "never in the guest\n");

    const created = await env.banger(["vm", "create", "box"]);
    assert.equal(created.code, 0, created.stderr);
  });
  after(async () => {
    await env?.dispose();
    user?.cleanup();
  });

  it("prepares a worktree: same HEAD, branch, status and diff; ignored files stay home", async () => {
    const prepared = await env.banger([
      "vm",
      "workspace",
      "prepare",
      "box",
      "--repo",
      worktree,
      "--include-untracked",
      "--json",
    ]);
    assert.equal(prepared.code, 0, prepared.stderr);
    const info = JSON.parse(prepared.stdout);
    assert.equal(info.path, GUEST);
    assert.equal(info.baseCommit, git(worktree, "rev-parse", "HEAD"));
    assert.equal(info.branch, "feature");
    assert.equal(info.hostRepo.worktree, true);
    assert.deepEqual(info.hostRepo.submodules, ["sub"]);

    const guest = await run(
      `cd ${GUEST} && git rev-parse HEAD && git symbolic-ref --short HEAD && git status --porcelain && git diff --full-index HEAD | sha256sum && git diff --full-index --cached | sha256sum && sha256sum big.bin && readlink link && stat -c %a run.sh && cat 'héllo wörld.txt' && git -C sub rev-parse HEAD && test ! -e ignored.log && echo no-ignored`,
    );
    const diff = (args: string[]) =>
      createHash("sha256")
        .update(execFileSync("git", ["-C", worktree, ...args], { env: gitEnv }))
        .digest("hex");
    const expected = [
      git(worktree, "rev-parse", "HEAD"),
      "feature",
      ...execFileSync("git", ["-C", worktree, "status", "--porcelain"], { encoding: "utf8", env: gitEnv })
        .trimEnd()
        .split("\n"),
      `${diff(["diff", "--full-index", "HEAD"])}  -`,
      `${diff(["diff", "--full-index", "--cached"])}  -`,
      `${sha(join(worktree, "big.bin"))}  big.bin`,
      "README.md",
      "755",
      "unicode",
      git(join(worktree, "sub"), "rev-parse", "HEAD"),
      "no-ignored",
    ];
    assert.deepEqual(guest.trimEnd().split("\n"), expected);

    const shown = JSON.parse((await env.banger(["vm", "workspace", "show", "box", "--json"])).stdout);
    assert.equal(shown.baseCommit, info.baseCommit);
  });

  it("exports the guest's work as patches, a bundle and a branch that all hold the same tree", async () => {
    await run(
      `cd ${GUEST} && git add -A && git commit -q -m 'guest: take the host changes' && git rm -q gone.txt && printf 'more\\n' >>README.md && git commit -q -am 'guest: delete and edit' && printf 'uncommitted\\n' >run.sh && echo fresh >fresh.txt && git config --global user.name`,
    ).then((out) => assert.equal(out.trim(), "E2E User", "auth sync set the git identity"));
    const base = git(worktree, "rev-parse", "HEAD");
    const out = join(user.path, "out");
    mkdirSync(out);

    const patch = await env.banger([
      "vm",
      "workspace",
      "export",
      "box",
      "--output",
      join(out, "p"),
      "--json",
    ]);
    assert.equal(patch.code, 0, patch.stderr);
    const patched = JSON.parse(patch.stdout);
    assert.equal(patched.commits, 2);
    assert.equal(patched.uncommitted, true);
    const tree = JSON.parse((await env.banger(["vm", "workspace", "show", "box", "--json"])).stdout).exported
      .tree;
    const check = join(user.path, "check");
    git(main, "worktree", "add", "-q", "--detach", check, base);
    const patches = readdirSync(join(out, "p"))
      .filter((f) => /^\d{4}-/.test(f))
      .sort();
    assert.equal(patches.length, 2);
    git(check, "am", "-q", ...patches.map((f) => join(out, "p", f)));
    git(check, "apply", join(out, "p", "uncommitted.patch"));
    git(check, "add", "-A");
    assert.equal(git(check, "write-tree"), tree, "git am + git apply on the base give the guest's tree");

    const bundle = await env.banger([
      "vm",
      "workspace",
      "export",
      "box",
      "--format",
      "bundle",
      "--output",
      join(out, "b.bundle"),
    ]);
    assert.equal(bundle.code, 0, bundle.stderr);
    git(main, "bundle", "verify", "-q", join(out, "b.bundle"));
    git(main, "fetch", "-q", join(out, "b.bundle"), "refs/banger/export:refs/heads/from-bundle");
    assert.equal(git(main, "rev-parse", "from-bundle^{tree}"), tree);

    const branch = await env.banger(["vm", "workspace", "export", "box", "--format", "branch"]);
    assert.equal(branch.code, 0, branch.stderr);
    assert.equal(
      git(worktree, "rev-parse", "banger/box^{tree}"),
      tree,
      "the branch is in the worktree's repository",
    );
    assert.equal(git(main, "rev-list", "--count", `${base}..banger/box`), "3");

    const tip = git(main, "rev-parse", "banger/box");
    const hostCommit = git(main, "commit-tree", "-p", tip, "-m", "host work", `${tip}^{tree}`);
    git(main, "update-ref", "refs/heads/banger/box", hostCommit);
    await run(`cd ${GUEST} && git add -A && git commit -q -m 'guest: more'`);
    const diverged = await env.banger(["vm", "workspace", "export", "box", "--format", "branch"]);
    assert.equal(diverged.code, REFUSED, diverged.stderr);
    assert.match(diverged.stderr, /banger\/box/);
    assert.equal(
      git(main, "rev-parse", "banger/box"),
      hostCommit,
      "a refused export leaves the branch alone",
    );
    const forced = await env.banger(["vm", "workspace", "export", "box", "--format", "branch", "--force"]);
    assert.equal(forced.code, 0, forced.stderr);
    assert.equal(git(main, "rev-list", "--count", `${base}..banger/box`), "3");
  });

  it("refuses to delete unexported work, and exports it from the stopped VM's disk", async () => {
    await run(`cd ${GUEST} && echo late >late.txt && git add late.txt && git commit -q -m 'guest: late'`);
    const refused = await env.banger(["vm", "delete", "box"]);
    assert.equal(refused.code, REFUSED, refused.stderr);
    assert.match(refused.stderr, /4 commit\(s\)/);

    const stopped = await env.banger(["vm", "stop", "box"]);
    assert.equal(stopped.code, 0, stopped.stderr);
    const out = join(user.path, "disk.bundle");
    const exported = await env.banger([
      "vm",
      "workspace",
      "export",
      "box",
      "--format",
      "bundle",
      "--output",
      out,
      "--json",
    ]);
    assert.equal(exported.code, 0, exported.stderr);
    const result = JSON.parse(exported.stdout);
    assert.equal(result.fromDisk, true);
    assert.equal(result.commits, 4);
    git(main, "bundle", "verify", "-q", out);
    git(main, "fetch", "-q", out, "refs/banger/export:refs/heads/from-disk");
    assert.equal(git(main, "show", "from-disk:late.txt"), "late");
    const started = await env.banger(["vm", "start", "box"]);
    assert.equal(started.code, 0, started.stderr);
  });

  it("vm cp copies a tree with symlinks and a 100 MB file in and back out", async () => {
    const tree = join(user.path, "tree");
    mkdirSync(join(tree, "nested"), { recursive: true });
    randomFile(join(tree, "big.bin"), 100 * MIB);
    writeFileSync(join(tree, "nested", "tool"), "#!/bin/sh\n");
    chmodSync(join(tree, "nested", "tool"), 0o750);
    symlinkSync("nested/tool", join(tree, "rel-link"));
    symlinkSync("/etc/hostname", join(tree, "abs-link"));
    const copyIn = await env.banger(["vm", "cp", tree, "box:/root/copied"]);
    assert.equal(copyIn.code, 0, copyIn.stderr);
    const back = join(user.path, "back");
    const copyOut = await env.banger(["vm", "cp", "box:/root/copied", back]);
    assert.equal(copyOut.code, 0, copyOut.stderr);
    assert.deepEqual(describeTree(back), describeTree(tree));
    const guestSum = await run("sha256sum /root/copied/big.bin | cut -d' ' -f1");
    assert.equal(guestSum.trim(), sha(join(tree, "big.bin")));
    // The big file went over a lane, the guest's network, not the frames a fallback uses.
    const log = readFileSync(join(env.home, "state", "bangerd.log"), "utf8");
    assert.ok(
      log.includes(`"bytes":${100 * MIB},"msg":"file written over a lane"`),
      "the 100 MB file took a lane",
    );
    assert.equal(log.includes("no lane to the guest"), false);
  });

  it("auth sync: the file is 0600 with its content, no secret in the daemon log, the user's key logs in", async () => {
    const synced = await env.banger(["vm", "auth", "sync", "box", "--json"]);
    assert.equal(synced.code, 0, synced.stderr);
    assert.equal(synced.stdout.includes(SECRET), false, "--json never carries contents");
    assert.equal(JSON.parse(synced.stdout).keys, 1);
    const guest = await run(
      "stat -c '%a %U' /root/.config/e2e/secret.txt && cat /root/.config/e2e/secret.txt",
    );
    assert.equal(guest, `600 root\n${SECRET}\n`);
    const log = readFileSync(join(env.home, "state", "bangerd.log"), "utf8");
    assert.equal(log.includes(SECRET), false, "the secret is not in the daemon log");

    const vm = JSON.parse((await env.banger(["vm", "show", "box", "--json"])).stdout);
    const key = join(user.path, "home", ".ssh", "id_ed25519");
    const login = execFileSync(
      "ip",
      [
        "netns",
        "exec",
        env.netns,
        "ssh",
        "-i",
        key,
        "-o",
        "IdentitiesOnly=yes",
        "-o",
        "BatchMode=yes",
        "-o",
        "StrictHostKeyChecking=no",
        "-o",
        "UserKnownHostsFile=/dev/null",
        "-o",
        "LogLevel=ERROR",
        `root@${vm.guestIp}`,
        "echo",
        "logged-in",
      ],
      { encoding: "utf8" },
    );
    assert.equal(login.trim(), "logged-in");

    const forced = await env.banger(["vm", "delete", "--force", "box"]);
    assert.equal(forced.code, 0, forced.stderr);
  });

  it("parallel agents: two VMs prepared from one repo at once export to their own branches", async () => {
    const agents = ["agent-a", "agent-b"];
    const each = <T>(step: (name: string) => Promise<T>) => Promise.all(agents.map(step));
    const ok = (what: string) => (result: { code: number | null; stderr: string }) =>
      assert.equal(result.code, 0, `${what}: ${result.stderr}`);
    await each((name) => env.banger(["vm", "create", name]).then(ok(`create ${name}`)));
    await each((name) =>
      env.banger(["vm", "workspace", "prepare", name, "--repo", main]).then(ok(`prepare ${name}`)),
    );
    const base = git(main, "rev-parse", "HEAD");
    await each((name) =>
      env
        .banger([
          "vm",
          "exec",
          name,
          "--",
          "sh",
          "-c",
          `cd /root/work/main && echo ${name} >${name}.txt && git add ${name}.txt && git commit -q -m 'work of ${name}'`,
        ])
        .then(ok(`commit in ${name}`)),
    );
    await each((name) =>
      env.banger(["vm", "workspace", "export", name, "--format", "branch"]).then(ok(`export ${name}`)),
    );
    for (const name of agents) {
      const other = agents.find((agent) => agent !== name)!;
      assert.equal(git(main, "rev-list", "--count", `${base}..banger/${name}`), "1");
      assert.equal(git(main, "show", `banger/${name}:${name}.txt`), name);
      assert.throws(
        () => git(main, "cat-file", "-e", `banger/${name}:${other}.txt`),
        `${other}'s work is not on banger/${name}`,
      );
    }
    await each((name) => env.banger(["vm", "delete", "--force", name]).then(ok(`delete ${name}`)));
  });
});
