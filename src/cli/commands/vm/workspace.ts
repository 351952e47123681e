/**
 * `banger vm workspace prepare|show|export`: a host git repository in a
 * VM and the VM's work back as patches, a bundle or a branch. The CLI
 * reads and writes the host repository as the user running it; the
 * daemon only moves bytes into and out of the guest.
 */
import { resolve } from "node:path";
import { cancelledIfAborted, throwIfAborted } from "../../../core/async/index.ts";
import { defaultGuestPath } from "../../../core/workspace/index.ts";
import { BangerError, ErrorCode, EXPORT_FORMATS, type WorkspaceInfo } from "../../../protocol/index.ts";
import { positiveInt } from "../../flags.ts";
import { formatTable } from "../../render/table.ts";
import { type CommandSpec, type GroupSpec, JSON_OPTION, json, success } from "../../spec.ts";
import { byteProgress, upload } from "../../streams.ts";
import { buildPreparePayload, inspectRepo, tarStream } from "../../workspace/host.ts";
import { exportWorkspace } from "./workspace-export.ts";

interface PrepareArgs {
  name: string;
  repo?: string;
  path?: string;
  includeUntracked?: boolean;
  readonly?: boolean;
  depth?: string;
  json?: boolean;
}

const prepareSpec: CommandSpec<PrepareArgs> = {
  name: "prepare <name>",
  describe: "copy a host git repository into a running VM as a real repository",
  examples: [
    "banger vm workspace prepare box",
    "banger vm workspace prepare box --repo ~/src/app --include-untracked",
    "banger vm workspace prepare box --path /srv/app --depth 50 --readonly",
  ],
  notes:
    "The guest gets the same HEAD commit and branch, and the host's uncommitted changes as\nuncommitted changes, so `git status` and `git diff` there match the host's.",
  options: [
    { flags: "--repo <path>", description: "the host repository (default: the current directory)" },
    {
      flags: "--path <guest-path>",
      description: "where it goes in the guest (default: /root/work/<repo dir name>)",
    },
    { flags: "--include-untracked", description: "also copy untracked files (ignored files never go)" },
    { flags: "--readonly", description: "make the guest work tree read-only" },
    { flags: "--depth <n>", description: "send only the last N commits of history (a shallow repository)" },
    { flags: "--json", description: "print the workspace as JSON" },
  ],
  async handler(ctx, args) {
    const depth = args.depth === undefined ? null : positiveInt("--depth", args.depth);
    const repo = await inspectRepo(resolve(args.repo ?? "."), depth);
    const path = args.path ?? defaultGuestPath(repo.path);
    const includeUntracked = args.includeUntracked === true;
    // Ctrl-C cancels the import in the daemon, which removes its staging directory; the payload goes too.
    const signal = ctx.interrupted();
    let payload: Awaited<ReturnType<typeof buildPreparePayload>> | undefined;
    try {
      payload = await buildPreparePayload({ repo, includeUntracked });
      throwIfAborted(signal, "prepare");
      const client = await ctx.client();
      const call = client.start(
        "vm.workspace.prepare",
        { name: args.name, path, readonly: args.readonly === true, includeUntracked, repo },
        { signal },
      );
      const progress = byteProgress(ctx.stderr, `sending ${repo.path}`);
      const tar = tarStream(payload.dir, ["."]);
      const [sent, info] = await Promise.all([
        upload(call, tar.stdout, (bytes) => progress.update(bytes)),
        call.result,
        tar.done,
      ]);
      progress.finish(sent);
      return success(args.json ? json(info) : describeWorkspace(info));
    } catch (error) {
      throw cancelledIfAborted(
        error,
        signal,
        "prepare",
        `nothing was imported: ${args.name} has no ${path}, and ${repo.path} was only read`,
      );
    } finally {
      await payload?.remove();
    }
  },
};

const showSpec: CommandSpec<{ name: string; json?: boolean }> = {
  name: "show <name>",
  describe: "show a VM's workspace: guest path, base commit, branch, host repository",
  examples: ["banger vm workspace show box", "banger vm workspace show box --json | jq -r .baseCommit"],
  options: [JSON_OPTION],
  async handler(ctx, args) {
    const info = await (await ctx.client()).call("vm.workspace.show", { name: args.name });
    return success(args.json ? json(info) : describeWorkspace(info));
  },
};

interface ExportArgs {
  name: string;
  format: string;
  output?: string;
  force?: boolean;
  json?: boolean;
}

const exportSpec: CommandSpec<ExportArgs> = {
  name: "export <name>",
  describe: "take everything since the base commit, committed or not, back to the host",
  examples: [
    "banger vm workspace export box                      # ./banger-box.patches/: git am 0*.patch; git apply uncommitted.patch",
    "banger vm workspace export box --format bundle      # ./banger-box.bundle (git bundle verify)",
    "banger vm workspace export box --format bundle -o /tmp/box.bundle",
    "banger vm workspace export box --format branch      # branch banger/box in the prepared repository",
  ],
  notes: "A stopped VM is exported from its disk, so nothing is lost when a guest cannot boot.",
  options: [
    { flags: "--format <format>", description: "patch | bundle | branch", default: "patch" },
    {
      flags: "-o, --output <path>",
      description: "patch: a directory; bundle: a file; branch: the host repository",
    },
    { flags: "--force", description: "replace an existing output, or move a branch that has diverged" },
    { flags: "--json", description: "print what was exported as JSON" },
  ],
  async handler(ctx, args) {
    const format = EXPORT_FORMATS.find((known) => known === args.format);
    if (format === undefined) {
      throw new BangerError(
        ErrorCode.INVALID_PARAMS,
        `--format must be patch, bundle or branch, not '${args.format}'`,
      );
    }
    const client = await ctx.client();
    const info = await client.call("vm.workspace.show", { name: args.name });
    const result = await exportWorkspace(client, {
      info,
      format,
      output: args.output,
      force: args.force === true,
      signal: ctx.interrupted(),
    });
    return success(args.json ? json(result) : result.summary);
  },
};

export const workspaceGroup: GroupSpec = {
  name: "workspace",
  describe: "put a git repository in a VM and take the work back",
  commands: [prepareSpec, showSpec, exportSpec],
};

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
