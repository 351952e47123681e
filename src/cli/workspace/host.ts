/**
 * The host side of workspaces and copies, run by the CLI as the user who
 * owns the files (never by the daemon): git inspection of a repository,
 * the prepare payload, and local tar streams. Every program gets argv, never
 * a shell string.
 */
import { spawn } from "node:child_process";
import { copyFile, mkdir, mkdtemp, rm, stat, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { PassThrough, type Readable } from "node:stream";
import { BangerError, ErrorCode, type HostRepoInfo } from "../../protocol/index.ts";

export interface RunResult {
  code: number | null;
  stdout: Buffer;
  stderr: string;
}

/** Runs a program to completion, collecting its output. */
export function runProgram(
  argv: readonly string[],
  options: { cwd?: string; input?: Buffer | string; env?: NodeJS.ProcessEnv } = {},
): Promise<RunResult> {
  const [command, ...args] = argv as [string, ...string[]];
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, {
      cwd: options.cwd,
      env: options.env ?? process.env,
      stdio: [options.input === undefined ? "ignore" : "pipe", "pipe", "pipe"],
    });
    const out: Buffer[] = [];
    let stderr = "";
    child.stdout!.on("data", (chunk: Buffer) => out.push(chunk));
    child.stderr!.on("data", (chunk: Buffer) => {
      stderr = (stderr + chunk.toString("utf8")).slice(-8192);
    });
    child.on("error", (error: NodeJS.ErrnoException) =>
      reject(
        error.code === "ENOENT"
          ? new BangerError(ErrorCode.TOOL_MISSING, `${command} is not installed or not on PATH`)
          : error,
      ),
    );
    child.on("close", (code) => resolve({ code, stdout: Buffer.concat(out), stderr }));
    if (options.input !== undefined) child.stdin?.end(options.input);
  });
}

/** git with settings that keep its output machine-readable whatever the user's config says. */
function gitArgv(repo: string, args: readonly string[]): string[] {
  return [
    "git",
    "-c",
    "core.quotePath=true",
    "-c",
    "diff.noprefix=false",
    "-c",
    "diff.mnemonicPrefix=false",
    "-c",
    "color.ui=false",
    "-C",
    repo,
    ...args,
  ];
}

export async function git(
  repo: string,
  args: readonly string[],
  options: { allowFailure?: boolean; input?: string } = {},
) {
  const result = await runProgram(
    gitArgv(repo, args),
    options.input === undefined ? {} : { input: options.input },
  );
  if (result.code !== 0 && !options.allowFailure) {
    throw new BangerError(
      ErrorCode.WORKSPACE_FAILED,
      `git ${args[0]} in ${repo} failed: ${result.stderr.trim().split("\n").slice(-2).join("; ")}`,
      { hint: "check the repository with `git status`" },
    );
  }
  return result;
}

const text = (result: RunResult) => result.stdout.toString("utf8").trim();

/** What prepare needs to know about the repository containing `path`. */
export async function inspectRepo(path: string, depth: number | null): Promise<HostRepoInfo> {
  const top = await git(path, ["rev-parse", "--show-toplevel"], { allowFailure: true });
  if (top.code !== 0) {
    throw new BangerError(ErrorCode.INVALID_PARAMS, `${path} is not inside a git repository`, {
      hint: "pass --repo PATH pointing at a git work tree",
    });
  }
  const root = text(top);
  const head = await git(root, ["rev-parse", "--verify", "-q", "HEAD"], { allowFailure: true });
  if (head.code !== 0) {
    throw new BangerError(ErrorCode.INVALID_PARAMS, `${root} has no commit yet`, {
      hint: "commit something first; the guest repository starts from HEAD",
    });
  }
  const branch = await git(root, ["symbolic-ref", "-q", "--short", "HEAD"], { allowFailure: true });
  const status = text(await git(root, ["status", "--porcelain=v1", "-z", "--untracked-files=all"]));
  const entries = status.split("\0").filter((entry) => entry.length > 3);
  const gitDir = text(await git(root, ["rev-parse", "--absolute-git-dir"]));
  const commonDir = text(await git(root, ["rev-parse", "--path-format=absolute", "--git-common-dir"]));
  const alternates = text(
    await git(root, ["rev-parse", "--path-format=absolute", "--git-path", "objects/info/alternates"]),
  );
  return {
    path: root,
    head: text(head),
    branch: branch.code === 0 ? text(branch) : null,
    dirtyFiles: entries.filter((entry) => !entry.startsWith("??")).length,
    untrackedFiles: entries.filter((entry) => entry.startsWith("??")).length,
    submodules: (await submodules(root)).map((sub) => sub.path),
    lfsFiles: await countLfs(root),
    worktree: gitDir !== commonDir,
    alternates: await stat(alternates).then(
      (s) => s.size > 0,
      () => false,
    ),
    depth,
  };
}

/** Gitlinks in the index whose checkout exists (an initialised submodule). */
async function submodules(root: string): Promise<{ path: string }[]> {
  const listed = text(await git(root, ["ls-files", "-s", "-z"]));
  const paths = listed
    .split("\0")
    .filter((line) => line.startsWith("160000 "))
    .map((line) => line.slice(line.indexOf("\t") + 1));
  const found: { path: string }[] = [];
  for (const path of paths) {
    if (
      await stat(join(root, path, ".git")).then(
        () => true,
        () => false,
      )
    )
      found.push({ path });
  }
  return found;
}

async function countLfs(root: string): Promise<number> {
  const files = await git(root, ["ls-files", "-z"]);
  if (files.stdout.length === 0) return 0;
  const attrs = await runProgram(gitArgv(root, ["check-attr", "--stdin", "-z", "filter"]), {
    input: files.stdout,
  });
  const fields = attrs.stdout.toString("utf8").split("\0");
  let count = 0;
  for (let i = 2; i < fields.length; i += 3) if (fields[i] === "lfs") count += 1;
  return count;
}

/**
 * Bundles reuse the deltas and compression already in the repository's
 * packs but search no new deltas and store new objects uncompressed: the
 * bundle crosses a local link, and a delta search over large new files
 * costs seconds on the host and inflating costs more in a guest without KVM.
 */
const FAST_PACK = ["-c", "pack.window=0", "-c", "pack.compression=0"];

/**
 * Builds the prepare payload in a temporary directory: the history (a
 * pack of what HEAD reaches with its index under `pack/`, and the host's
 * `shallow` file when the repository is shallow; or a shallow bare clone
 * with `depth`), staged and
 * unstaged changes as binary patches, untracked files (not ignored ones)
 * as a tar when asked, and one bundle per initialised submodule. The
 * caller streams it with `tarStream(dir, ".")` and removes it.
 */
export async function buildPreparePayload(options: {
  repo: HostRepoInfo;
  includeUntracked: boolean;
}): Promise<{ dir: string; remove(): Promise<void> }> {
  const { repo } = options;
  const dir = await mkdtemp(join(tmpdir(), "banger-prepare-"));
  const remove = () => rm(dir, { recursive: true, force: true });
  try {
    if (repo.depth !== null) {
      await git(repo.path, [
        "clone",
        "-q",
        "--bare",
        "--single-branch",
        `--depth=${repo.depth}`,
        `file://${repo.path}`,
        join(dir, "repo.git"),
      ]);
    } else {
      // A pack and its index made here, where git is fast, so the guest only moves them into
      // place: no index-pack, no object hashed in the guest.
      await mkdir(join(dir, "pack"));
      await git(
        repo.path,
        ["pack-objects", "--revs", "--window=0", "--compression=0", "-q", join(dir, "pack", "pack")],
        { input: "HEAD\n" },
      );
      if (text(await git(repo.path, ["rev-parse", "--is-shallow-repository"])) === "true")
        await copyFile(
          text(await git(repo.path, ["rev-parse", "--path-format=absolute", "--git-path", "shallow"])),
          join(dir, "shallow"),
        );
    }
    const diff = ["diff", "--binary", "--full-index", "--no-ext-diff", "--no-textconv", "--no-renames"];
    const staged = await git(repo.path, [...diff, "--cached", "HEAD"]);
    await writeFile(join(dir, "staged.patch"), staged.stdout);
    const unstaged = await git(repo.path, [...diff, "--ignore-submodules=all"]);
    await writeFile(join(dir, "unstaged.patch"), unstaged.stdout);
    if (options.includeUntracked) {
      const list = await git(repo.path, ["ls-files", "-z", "--others", "--exclude-standard"]);
      if (list.stdout.length > 0) {
        const tar = await runProgram(
          ["tar", "-c", "--null", "--no-recursion", "-T", "-", "-f", join(dir, "untracked.tar")],
          { cwd: repo.path, input: list.stdout },
        );
        if (tar.code !== 0)
          throw new BangerError(
            ErrorCode.WORKSPACE_FAILED,
            `tar of untracked files failed: ${tar.stderr.trim()}`,
          );
      }
    }
    const subs = await submodules(repo.path);
    const listing: string[] = [];
    for (const [index, sub] of subs.entries()) {
      const where = join(repo.path, sub.path);
      await git(where, [...FAST_PACK, "bundle", "create", "-q", join(dir, `sub-${index}.bundle`), "HEAD"]);
      listing.push(sub.path, text(await git(where, ["rev-parse", "HEAD"])));
    }
    if (listing.length > 0) await writeFile(join(dir, "submodules"), listing.map((v) => `${v}\0`).join(""));
    return { dir, remove };
  } catch (error) {
    await remove();
    throw error;
  }
}

/** A running `tar -c -C dir ENTRY...`: its stdout and its completion. */
export function tarStream(
  dir: string,
  entries: readonly string[],
): { stdout: Readable; done: Promise<void> } {
  const child = spawn("tar", ["-c", "-C", dir, "--", ...entries], { stdio: ["ignore", "pipe", "pipe"] });
  let stderr = "";
  child.stderr.on("data", (chunk: Buffer) => {
    stderr = (stderr + chunk.toString("utf8")).slice(-4096);
  });
  const done = new Promise<void>((resolve, reject) => {
    child.on("error", reject);
    child.on("close", (code) =>
      code === 0
        ? resolve()
        : reject(new BangerError(ErrorCode.INVALID_PARAMS, `tar failed: ${stderr.trim() || `exit ${code}`}`)),
    );
  });
  // Read from the start: Node drops the unread output of a child that has exited (a small tar
  // finishes before the caller has connected to the daemon), so the bytes wait in a pipe of ours.
  return { stdout: child.stdout.pipe(new PassThrough()), done };
}
