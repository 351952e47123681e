/**
 * `vm cp`'s tar streams over the guest agent's file requests, with the real
 * agent binary run on the host over a socketpair (`--fd 3`) and system tar
 * on the other side: a tree with modes, mtimes, symlinks, a hard link, an
 * empty directory, unicode and long names and a 5 MB file goes in (as tar
 * makes it) and comes back out (as tar reads it) unchanged; docker cp's
 * destination rules; `-a` keeps uid/gid; hostile entry names are refused.
 * Needs root (chown).
 */
import assert from "node:assert/strict";
import { type ChildProcess, spawn, spawnSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { existsSync } from "node:fs";
import {
  chmod,
  link,
  lstat,
  mkdir,
  mkdtemp,
  readdir,
  readFile,
  readlink,
  rm,
  symlink,
  utimes,
  writeFile,
} from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { type Duplex, PassThrough, Readable } from "node:stream";
import { after, before, describe, it } from "node:test";
import { TAR_END, tarHeader, tarPadding } from "../../src/core/workspace/index.ts";
import { receiveTar, sendTar } from "../../src/daemon/workspace/guest-tree.ts";
import { BangerError, ErrorCode } from "../../src/protocol/index.ts";
import { agentBinaryPath } from "../../src/sys/agent/index.ts";
import { type AgentSession, openAgentSession } from "../../src/sys/agent/session.ts";

const AGENT = agentBinaryPath();
const LONG = `${"long-directory-name-".repeat(4)}/${"a-file-name-longer-than-ustar-allows-".repeat(3)}.txt`;

/** Every node under `root`: kind, mode, mtime (s), size, link target, content hash-free bytes for files. */
async function describeTree(root: string): Promise<Record<string, string>> {
  const out: Record<string, string> = {};
  const walk = async (dir: string, rel: string) => {
    for (const name of (await readdir(dir)).sort()) {
      const path = join(dir, name);
      const key = rel ? `${rel}/${name}` : name;
      const info = await lstat(path);
      const mode = (info.mode & 0o7777).toString(8);
      const mtime = Math.floor(info.mtimeMs / 1000);
      if (info.isSymbolicLink()) out[key] = `link ${await readlink(path)} ${mtime}`;
      else if (info.isDirectory()) {
        out[key] = `dir ${mode} ${mtime}`;
        await walk(path, key);
      } else
        out[key] =
          `file ${mode} ${mtime} ${info.size} ${(await readFile(path)).toString("base64").slice(0, 64)}`;
    }
  };
  await walk(root, "");
  return out;
}

/** System tar's archive of `entries`, buffered as it comes (a child's pipe left unread loses its bytes at exit). */
function tarOf(dir: string, entries: string[]): Readable {
  const child = spawn("tar", ["-c", "-C", dir, "--", ...entries], { stdio: ["ignore", "pipe", "inherit"] });
  const buffered = child.stdout.pipe(new PassThrough({ highWaterMark: 64 * 1024 * 1024 }));
  // A refused copy destroys its payload unread: tar must not wait on a full pipe forever.
  buffered.on("close", () => child.stdout.destroy());
  return buffered;
}

function untar(into: string, data: Buffer, extra: string[] = []): void {
  const r = spawnSync("tar", ["-x", "-p", ...extra, "-C", into], { input: data });
  assert.equal(r.status, 0, r.stderr.toString());
}

async function send(session: AgentSession, path: string): Promise<Buffer> {
  const chunks: Buffer[] = [];
  await sendTar({
    files: session,
    path,
    onData: (c) => void chunks.push(Buffer.from(c)),
    signal: new AbortController().signal,
  });
  return Buffer.concat(chunks);
}

describe("vm cp over the agent's file requests", {
  skip:
    (!existsSync(AGENT) && "dist/banger-agent is not built") || (process.getuid?.() !== 0 && "needs root"),
}, () => {
  let child: ChildProcess;
  let session: AgentSession;
  let dir: string;
  let src: string;
  const receive = (options: {
    dest: string;
    payload: Readable;
    source?: "file" | "dir" | "contents";
    base?: string;
    archive?: boolean;
  }) =>
    receiveTar({
      files: session,
      source: options.source ?? "dir",
      base: options.base ?? "tree",
      archive: options.archive ?? false,
      dest: options.dest,
      payload: options.payload,
      signal: new AbortController().signal,
    });

  before(async () => {
    child = spawn(AGENT, ["--fd", "3"], { stdio: ["ignore", "ignore", "inherit", "pipe"] });
    session = await openAgentSession(child.stdio[3] as Duplex, AbortSignal.timeout(10_000));
    dir = await mkdtemp(join(tmpdir(), "banger-tree-"));
    src = join(dir, "src");
    const tree = join(src, "tree");
    await mkdir(join(tree, "sub", "deeper"), { recursive: true });
    await mkdir(join(tree, "empty"));
    await mkdir(join(tree, LONG.split("/")[0]!));
    await writeFile(join(tree, LONG), "long name\n");
    await writeFile(join(tree, "run.sh"), "#!/bin/sh\necho hi\n");
    await chmod(join(tree, "run.sh"), 0o750);
    await writeFile(join(tree, "sub", "deeper", "ünïcode ✓.txt"), "unicode\n");
    await writeFile(join(tree, "big.bin"), randomBytes(5 * 1024 * 1024 + 17));
    await writeFile(join(tree, "secret"), "s");
    await chmod(join(tree, "secret"), 0o600);
    await link(join(tree, "secret"), join(tree, "secret-hardlink"));
    await symlink("sub/deeper", join(tree, "to-deeper"));
    await symlink("/nowhere/at/all", join(tree, "dangling"));
    await chmod(join(tree, "sub"), 0o711);
    for (const path of [LONG, "run.sh", "sub/deeper/ünïcode ✓.txt", "sub/deeper", "sub", "empty", "."])
      await utimes(join(tree, path), 1_600_000_000, 1_600_000_000 + path.length);
  });
  after(async () => {
    session?.close();
    child?.kill("SIGKILL");
    await rm(dir, { recursive: true, force: true });
  });

  it("copies a tree in and back out unchanged: modes, mtimes, symlinks, hard links, long and unicode names", async () => {
    const dest = join(dir, "in");
    const result = await receive({ dest, payload: tarOf(src, ["tree"]) });
    assert.equal(result.path, dest);
    const expected = await describeTree(join(src, "tree"));
    assert.deepEqual(await describeTree(dest), expected);
    assert.equal((await lstat(join(dest, "secret"))).ino, (await lstat(join(dest, "secret-hardlink"))).ino);

    const out = join(dir, "out");
    await mkdir(out);
    untar(out, await send(session, dest));
    assert.deepEqual(await describeTree(join(out, "in")), expected);

    const contents = join(dir, "contents-out");
    await mkdir(contents);
    untar(contents, await send(session, `${dest}/.`));
    assert.deepEqual(await describeTree(contents), expected);
  });

  it("follows docker cp's destination rules", async () => {
    const base = join(dir, "rules");
    await mkdir(base);
    // Into an existing directory: the entry lands inside it.
    assert.equal((await receive({ dest: base, payload: tarOf(src, ["tree"]) })).path, join(base, "tree"));
    assert.ok((await lstat(join(base, "tree", "run.sh"))).isFile());
    // A file onto a missing name becomes that name; onto a file replaces it.
    const file = join(base, "renamed.sh");
    await receive({
      dest: file,
      payload: tarOf(join(src, "tree"), ["run.sh"]),
      source: "file",
      base: "run.sh",
    });
    assert.equal(await readFile(file, "utf8"), "#!/bin/sh\necho hi\n");
    await writeFile(join(base, "victim"), "old");
    await receive({
      dest: join(base, "victim"),
      payload: tarOf(join(src, "tree"), ["secret"]),
      source: "file",
      base: "secret",
    });
    assert.equal(await readFile(join(base, "victim"), "utf8"), "s");
    // A directory's contents merge into an existing directory.
    await receive({
      dest: join(base, "tree"),
      payload: tarOf(join(src, "tree"), ["."]),
      source: "contents",
      base: ".",
    });
    // Refusals, each with INVALID_PARAMS and nothing written.
    const refused = async (options: Parameters<typeof receive>[0], pattern: RegExp) =>
      assert.rejects(
        receive(options),
        (e: unknown) =>
          e instanceof BangerError && e.code === ErrorCode.INVALID_PARAMS && pattern.test(e.message),
      );
    await refused({ dest: join(base, "victim"), payload: tarOf(src, ["tree"]) }, /not a directory/);
    await refused({ dest: join(base, "nope", "x"), payload: tarOf(src, ["tree"]) }, /no such directory/);
    await refused(
      {
        dest: `${join(base, "missing")}/`,
        payload: tarOf(join(src, "tree"), ["run.sh"]),
        source: "file",
        base: "run.sh",
      },
      /is not a directory/,
    );
    await assert.rejects(
      send(session, join(base, "absent")),
      (e: unknown) => e instanceof BangerError && e.code === ErrorCode.INVALID_PARAMS,
    );
    await assert.rejects(send(session, `${join(base, "victim")}/.`), /not a directory/);
  });

  it("refuses an entry that leaves the destination", async () => {
    const evil = Buffer.concat([
      tarHeader({ name: "ok", type: "dir", mode: 0o755 }),
      tarHeader({ name: "ok/../../escaped", type: "file", size: 1, mode: 0o644 }),
      Buffer.from("x"),
      tarPadding(1),
      TAR_END,
    ]);
    const dest = join(dir, "jail");
    await mkdir(dest);
    await assert.rejects(
      receive({ dest, payload: Readable.from([evil]), source: "contents", base: "." }),
      (e: unknown) =>
        e instanceof BangerError && e.code === ErrorCode.INVALID_PARAMS && /\.\./.test(e.message),
    );
    assert.equal(existsSync(join(dir, "escaped")), false);
  });

  it("keeps uid/gid with archive, gives the copies to the receiving user without", async () => {
    const owned = join(dir, "owned");
    await mkdir(owned);
    await writeFile(join(owned, "f"), "owned");
    spawnSync("chown", ["-R", "1234:2345", owned]);
    const kept = join(dir, "kept");
    await receive({ dest: kept, payload: tarOf(dir, ["owned"]), base: "owned", archive: true });
    assert.deepEqual([(await lstat(join(kept, "f"))).uid, (await lstat(join(kept, "f"))).gid], [1234, 2345]);
    assert.deepEqual([(await lstat(kept)).uid, (await lstat(kept)).gid], [1234, 2345]);
    const given = join(dir, "given");
    await receive({ dest: given, payload: tarOf(dir, ["owned"]), base: "owned" });
    assert.equal((await lstat(join(given, "f"))).uid, 0);
    // Out, the tar carries the guest's ids; tar as root restores them.
    const out = join(dir, "owned-out");
    await mkdir(out);
    untar(out, await send(session, kept), ["--same-owner", "--numeric-owner"]);
    assert.equal((await lstat(join(out, "kept", "f"))).uid, 1234);
  });
});
