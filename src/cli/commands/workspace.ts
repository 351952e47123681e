/**
 * `banger vm workspace prepare|show|export`: a host git repository in a
 * VM and the VM's work back as patches, a bundle or a branch. The CLI
 * reads and writes the host repository as the user running it; the
 * daemon only moves bytes into and out of the guest.
 */
import { mkdir, mkdtemp, readdir, readFile, rename, rm, stat } from "node:fs/promises";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import type { Command } from "commander";
import { defaultGuestPath, type ExportMeta, parseExportMeta } from "../../core/workspace/index.ts";
import { BangerError, ErrorCode, ExportFormat, type WorkspaceInfo } from "../../protocol/index.ts";
import { type CliContext, printJson } from "../context.ts";
import { formatTable } from "../render/table.ts";
import type { RpcClient } from "../rpc/client.ts";
import { buildPreparePayload, git, inspectRepo, tarStream } from "../workspace/host.ts";
import { byteProgress, localSink, upload } from "../workspace/streams.ts";

export function registerWorkspaceCommands(vm: Command, ctx: CliContext): void {
  const workspace = vm
    .command("workspace")
    .description("put a git repository in a VM and take the work back");

  workspace
    .command("prepare <name>")
    .description("copy a host git repository into a running VM as a real repository")
    .option("--repo <path>", "the host repository (default: the current directory)")
    .option("--path <guest-path>", "where it goes in the guest (default: /root/work/<repo dir name>)")
    .option("--include-untracked", "also copy untracked files (ignored files never go)")
    .option("--readonly", "make the guest work tree read-only")
    .option("--depth <n>", "send only the last N commits of history (a shallow repository)")
    .option("--json", "print the workspace as JSON")
    .addHelpText(
      "after",
      "\nExamples:\n  banger vm workspace prepare box\n  banger vm workspace prepare box --repo ~/src/app --include-untracked\n  banger vm workspace prepare box --path /srv/app --depth 50 --readonly\n\nThe guest gets the same HEAD commit and branch, and the host's uncommitted changes as\nuncommitted changes, so `git status` and `git diff` there match the host's.",
    )
    .action(
      async (
        name: string,
        options: {
          repo?: string;
          path?: string;
          includeUntracked?: boolean;
          readonly?: boolean;
          depth?: string;
          json?: boolean;
        },
      ) => {
        const depth = options.depth === undefined ? null : positiveInt(options.depth, "--depth");
        const repo = await inspectRepo(resolve(options.repo ?? "."), depth);
        const path = options.path ?? defaultGuestPath(repo.path);
        const includeUntracked = options.includeUntracked === true;
        const payload = await buildPreparePayload({ repo, includeUntracked });
        try {
          const client = await ctx.client();
          const call = client.start("vm.workspace.prepare", {
            name,
            path,
            readonly: options.readonly === true,
            includeUntracked,
            repo,
          });
          const progress = byteProgress(ctx.stderr, `sending ${repo.path}`);
          const tar = tarStream(payload.dir, ["."]);
          const [sent, info] = await Promise.all([
            upload(call, tar.stdout, (bytes) => progress.update(bytes)),
            call.result,
            tar.done,
          ]);
          progress.finish(sent);
          if (options.json) printJson(ctx, info);
          else ctx.stdout.write(`${describeWorkspace(info)}\n`);
        } finally {
          await payload.remove();
        }
      },
    );

  workspace
    .command("show <name>")
    .description("show a VM's workspace: guest path, base commit, branch, host repository")
    .option("--json", "print JSON")
    .addHelpText(
      "after",
      "\nExamples:\n  banger vm workspace show box\n  banger vm workspace show box --json | jq -r .baseCommit",
    )
    .action(async (name: string, options: { json?: boolean }) => {
      const info = await (await ctx.client()).call("vm.workspace.show", { name });
      if (options.json) printJson(ctx, info);
      else ctx.stdout.write(`${describeWorkspace(info)}\n`);
    });

  workspace
    .command("export <name>")
    .description("take everything since the base commit, committed or not, back to the host")
    .option("--format <format>", "patch | bundle | branch", "patch")
    .option("--output <path>", "patch: a directory; bundle: a file; branch: the host repository")
    .option("--force", "replace an existing output, or move a branch that has diverged")
    .option("--json", "print what was exported as JSON")
    .addHelpText(
      "after",
      "\nExamples:\n  banger vm workspace export box                      # ./banger-box.patches/: git am 0*.patch; git apply uncommitted.patch\n  banger vm workspace export box --format bundle      # ./banger-box.bundle (git bundle verify)\n  banger vm workspace export box --format branch      # branch banger/box in the prepared repository\n\nA stopped VM is exported from its disk, so nothing is lost when a guest cannot boot.",
    )
    .action(
      async (name: string, options: { format: string; output?: string; force?: boolean; json?: boolean }) => {
        const format = ExportFormat.safeParse(options.format);
        if (!format.success) {
          throw new BangerError(
            ErrorCode.INVALID_PARAMS,
            `--format must be patch, bundle or branch, not '${options.format}'`,
          );
        }
        const client = await ctx.client();
        const info = await client.call("vm.workspace.show", { name });
        const result = await exportWorkspace(client, {
          info,
          format: format.data,
          output: options.output,
          force: options.force === true,
        });
        if (options.json) printJson(ctx, result);
        else ctx.stdout.write(`${result.summary}\n`);
      },
    );
}

interface ExportResult {
  format: ExportFormat;
  output: string | null;
  baseCommit: string;
  head: string;
  tip: string;
  commits: number;
  uncommitted: boolean;
  fromDisk: boolean;
  summary: string;
}

async function exportWorkspace(
  client: RpcClient,
  options: { info: WorkspaceInfo; format: ExportFormat; output: string | undefined; force: boolean },
): Promise<ExportResult> {
  const { info, format, force } = options;
  const name = info.vm;
  const output =
    format === "branch"
      ? resolve(options.output ?? info.hostRepo.path)
      : resolve(options.output ?? (format === "patch" ? `banger-${name}.patches` : `banger-${name}.bundle`));
  if (format !== "branch" && !force && (await exists(output))) {
    throw new BangerError(ErrorCode.NAME_TAKEN, `${output} already exists`, {
      hint: "pass --output PATH for another place, or --force to replace it",
    });
  }
  const scratch = await mkdtemp(join(format === "branch" ? tmpdir() : dirname(output), ".banger-export-"));
  try {
    const sink = localSink(["tar", "-x", "-C", scratch]);
    let fromDisk: boolean;
    try {
      ({ fromDisk } = await client.call(
        "vm.workspace.export",
        { name, format },
        {
          onStream: (ch, data) => {
            if (ch === "stdout" && data) sink.write(data);
          },
        },
      ));
    } catch (error) {
      sink.abort();
      throw error;
    }
    await sink.end();
    const meta = parseExportMeta(await readFile(join(scratch, "meta"), "utf8"));
    const nothing = meta.tip === info.baseCommit;
    let written: string | null = output;
    if (format === "patch") {
      await rm(output, { recursive: true, force: true });
      await mkdir(output, { recursive: true });
      const patches = join(scratch, "patches");
      for (const file of await readdir(patches)) await rename(join(patches, file), join(output, file));
      if (meta.dirty) await rename(join(scratch, "uncommitted.patch"), join(output, "uncommitted.patch"));
    } else if (nothing) {
      written = null;
    } else if (format === "bundle") {
      await rm(output, { force: true });
      await rename(join(scratch, "export.bundle"), output);
    } else {
      await fetchBranch({
        repo: output,
        bundle: join(scratch, "export.bundle"),
        name,
        base: info.baseCommit,
        force,
      });
    }
    await client.call("vm.workspace.exported", { name, head: meta.head, tree: meta.tree });
    return {
      format,
      output: written,
      baseCommit: info.baseCommit,
      head: meta.head,
      tip: meta.tip,
      commits: meta.commits,
      uncommitted: meta.dirty,
      fromDisk,
      summary: summarise(format, output, meta, nothing, name),
    };
  } finally {
    await rm(scratch, { recursive: true, force: true });
  }
}

async function fetchBranch(options: {
  repo: string;
  bundle: string;
  name: string;
  base: string;
  force: boolean;
}) {
  const { repo, name } = options;
  const base = await git(repo, ["cat-file", "-e", `${options.base}^{commit}`], { allowFailure: true });
  if (base.code !== 0) {
    throw new BangerError(
      ErrorCode.INVALID_PARAMS,
      `${repo} does not hold the workspace's base commit ${options.base}`,
      {
        hint: "export as a patch or bundle instead, or pass --output with the repository the workspace came from",
      },
    );
  }
  const ref = `refs/heads/banger/${name}`;
  const fetched = await git(
    repo,
    [
      // Not -q: a quiet fetch does not say why it refused a ref.
      "fetch",
      "--no-tags",
      "--no-write-fetch-head",
      options.bundle,
      `${options.force ? "+" : ""}refs/banger/export:${ref}`,
    ],
    { allowFailure: true },
  );
  if (fetched.code === 0) return;
  if (/non-fast-forward|rejected/.test(fetched.stderr)) {
    throw new BangerError(
      ErrorCode.BRANCH_DIVERGED,
      `branch banger/${name} in ${repo} has commits the VM's work does not contain`,
    );
  }
  throw new BangerError(
    ErrorCode.WORKSPACE_FAILED,
    `git fetch into ${repo} failed: ${fetched.stderr.trim()}`,
    {
      hint: "a branch checked out in a worktree cannot be fetched into; switch that worktree to another branch",
    },
  );
}

function summarise(
  format: ExportFormat,
  output: string,
  meta: ExportMeta,
  nothing: boolean,
  name: string,
): string {
  const what = `${meta.commits} commit(s)${meta.dirty ? " and uncommitted changes" : ""}`;
  if (format === "patch") {
    if (meta.commits === 0 && !meta.dirty) return `nothing since the base commit; ${output} is empty`;
    return `${what} in ${output}/ (apply with: git am ${output}/0*.patch${meta.dirty ? ` && git apply ${output}/uncommitted.patch` : ""})`;
  }
  if (nothing) return "nothing since the base commit; nothing written";
  if (format === "bundle") return `${what} in ${output} (git fetch ${output} refs/banger/export)`;
  return `${what} on branch banger/${name} in ${output}`;
}

function describeWorkspace(info: WorkspaceInfo): string {
  const repo = info.hostRepo;
  const notes = [
    repo.worktree ? "worktree" : "",
    repo.alternates ? "alternates" : "",
    repo.submodules.length > 0 ? `${repo.submodules.length} submodule(s)` : "",
    repo.lfsFiles > 0 ? `${repo.lfsFiles} LFS file(s) (pointers unless the guest has git-lfs)` : "",
    repo.depth !== null ? `depth ${repo.depth}` : "",
  ].filter(Boolean);
  const rows: [string, string][] = [
    ["vm", info.vm],
    ["path", info.path],
    ["base commit", info.baseCommit],
    ["branch", info.branch ?? "(detached HEAD)"],
    ["host repo", repo.path],
    [
      "changes",
      `${repo.dirtyFiles} dirty, ${repo.untrackedFiles} untracked${info.includeUntracked ? " (copied)" : ""}`,
    ],
    ["readonly", info.readonly ? "yes" : "no"],
    ["prepared", info.preparedAt],
    ["exported", info.exported ? `${info.exported.head.slice(0, 12)} at ${info.exported.at}` : "never"],
  ];
  if (notes.length > 0) rows.push(["notes", notes.join(", ")]);
  return formatTable(["field", "value"], rows);
}

function positiveInt(value: string, flag: string): number {
  const n = Number(value);
  if (!Number.isInteger(n) || n < 1) {
    throw new BangerError(
      ErrorCode.INVALID_PARAMS,
      `${flag} must be a positive whole number, not '${value}'`,
    );
  }
  return n;
}

async function exists(path: string): Promise<boolean> {
  return stat(path).then(
    () => true,
    () => false,
  );
}
