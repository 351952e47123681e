/**
 * `vm workspace export`'s host side: the daemon streams a tar of the VM's
 * work (patches, a bundle, the meta file); the CLI writes it as patches in
 * a directory, a bundle file, or a `banger/<vm>` branch fetched into the
 * host repository, then tells the daemon what was exported.
 */
import { mkdir, mkdtemp, readdir, readFile, rename, rm, stat } from "node:fs/promises";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { cancelledIfAborted } from "../../../core/async/index.ts";
import { type ExportMeta, parseExportMeta } from "../../../core/workspace/index.ts";
import { BangerError, ErrorCode, type ExportFormat, type WorkspaceInfo } from "../../../protocol/index.ts";
import type { DaemonClient } from "../../rpc/client.ts";
import { localSink } from "../../streams.ts";
import { git } from "../../workspace/host.ts";

export interface ExportResult {
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

export async function exportWorkspace(
  client: DaemonClient,
  options: {
    info: WorkspaceInfo;
    format: ExportFormat;
    output: string | undefined;
    force: boolean;
    /**
     * Cancels the transfer from the guest (nothing is written then); once
     * every byte is here, the export is finished whatever the signal says.
     */
    signal?: AbortSignal | undefined;
  },
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
            if (ch === "stdout" && data) return sink.write(data);
          },
          ...(options.signal ? { signal: options.signal } : {}),
        },
      ));
    } catch (error) {
      sink.abort();
      throw cancelledIfAborted(
        error,
        options.signal,
        "export",
        `nothing was written: ${output} is as it was; the work is still in ${name}`,
      );
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

async function exists(path: string): Promise<boolean> {
  return stat(path).then(
    () => true,
    () => false,
  );
}
