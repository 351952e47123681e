/**
 * Git workspaces in VMs: prepare (a host repository's payload, made by the
 * CLI as the user who owns it, imported into the guest), show, export
 * (from the running guest, or from a stopped VM's disk) and the check that
 * keeps `vm delete` from losing unexported work.
 *
 * Lock split (ARCHITECTURE.md §4): the VM lock is held only to validate the
 * VM's state and snapshot what the I/O needs; the guest I/O runs under the
 * VM's workspace lock, so stop, delete and restart never queue behind an
 * import, two prepares on one VM run one after the other, and an export
 * never reads a half-written import. The two are never held together. A
 * stopped VM's disk is copied out under the VM lock alone (so it cannot
 * boot and write meanwhile); git then runs on that copy with no lock held.
 */
import type { Readable } from "node:stream";
import type { KeyedLocks } from "../../core/concurrency/index.ts";
import {
  EXPORT_SCRIPT,
  type ExportMeta,
  hasUnexportedWork,
  PREPARE_SCRIPT,
  parseExportMeta,
  STAGE_SCRIPT,
  shellProgram,
  UNSTAGE_SCRIPT,
} from "../../core/workspace/index.ts";
import {
  BangerError,
  ErrorCode,
  type ExportFormat,
  type HostRepoInfo,
  type VmInfo,
  type WorkspaceInfo,
} from "../../protocol/index.ts";
import type { GuestExec, GuestFiles } from "../vm/index.ts";
import { receiveTar } from "./guest-tree.ts";

/** The part of the VM service workspaces use; every guest command goes through `exec`, every copy through `files`. */
export interface WorkspaceVms {
  show(name: string): Promise<VmInfo>;
  exec(name: string, exec: GuestExec): Promise<{ exitCode: number | null; signal: string | null }>;
  /** The running guest's files through its agent (`vm cp`). */
  files(name: string): Promise<GuestFiles>;
  runtime(name: string): Promise<{ diskFile: string | null }>;
}

/** Reads a stopped VM's root disk without booting it. */
export interface WorkspaceDiskReader {
  /**
   * Copies `guestPath` out of the disk into a fresh host directory that an
   * unprivileged user may read, with its git config replaced by a neutral
   * one and alternates dropped (the guest wrote them; the host must not
   * obey them). Returns the copy and its undo.
   */
  copyOut(options: {
    diskFile: string;
    guestPath: string;
    scratchDir: string;
    signal: AbortSignal;
  }): Promise<{ path: string; remove(): Promise<void> }>;
  /** Runs a constant shell program on the host, unprivileged, streaming its stdout. */
  run(options: {
    argv: readonly string[];
    onStdout(chunk: Buffer): void | Promise<void>;
    signal: AbortSignal;
  }): Promise<{ exitCode: number | null; stderr: string }>;
}

/** A VM's workspace record (vms/<id>/workspace.json). */
export interface WorkspaceRecords {
  read(vmId: string): Promise<WorkspaceInfo | undefined>;
  write(vmId: string, record: WorkspaceInfo): Promise<void>;
}

export interface WorkspaceServiceDeps {
  vms: WorkspaceVms;
  vmLocks: KeyedLocks;
  workspaceLocks: KeyedLocks;
  disk: WorkspaceDiskReader;
  records: WorkspaceRecords;
  now(): Date;
}

export interface PrepareRequest {
  name: string;
  path: string;
  readonly: boolean;
  includeUntracked: boolean;
  repo: HostRepoInfo;
  payload: Readable;
  signal: AbortSignal;
}

export interface WorkspaceService {
  prepare(request: PrepareRequest): Promise<WorkspaceInfo>;
  show(name: string): Promise<WorkspaceInfo>;
  export(options: {
    name: string;
    format: ExportFormat;
    onData(chunk: Buffer): void | Promise<void>;
    signal: AbortSignal;
  }): Promise<{ bytes: number; fromDisk: boolean }>;
  markExported(name: string, exported: { head: string; tree: string }): Promise<WorkspaceInfo>;
  /** Throws UNEXPORTED_WORK when the VM's workspace holds work no export carried. */
  assertNothingUnexported(name: string, signal: AbortSignal): Promise<void>;
}

const STDERR_KEPT = 4096;
/** How long undoing a failed import may take in the guest. */
const UNSTAGE_MS = 60_000;

export function createWorkspaceService(deps: WorkspaceServiceDeps): WorkspaceService {
  const { vms, vmLocks, workspaceLocks, records } = deps;

  /** Validates the state under the VM lock and returns the snapshot the I/O needs. */
  const snapshot = async (name: string) => {
    const first = await vms.show(name);
    return vmLocks.run(first.id, async () => {
      const vm = await vms.show(name);
      const diskFile = vm.state === "running" ? undefined : ((await vms.runtime(name)).diskFile ?? undefined);
      return { vm, diskFile };
    });
  };

  const requireRecord = (vm: VmInfo, record: WorkspaceInfo | undefined): WorkspaceInfo => {
    if (record) return record;
    throw new BangerError(ErrorCode.WORKSPACE_NOT_FOUND, `VM '${vm.name}' has no workspace`);
  };

  const requireRunning = (vm: VmInfo, doing: string) => {
    if (vm.state === "running") return;
    throw new BangerError(ErrorCode.BAD_STATE, `cannot ${doing}: VM '${vm.name}' is ${vm.state}`, {
      hint:
        vm.state === "paused"
          ? `resume it with \`banger vm resume ${vm.name}\``
          : `start it with \`banger vm start ${vm.name}\``,
    });
  };

  /** Runs a guest program, streaming stdout; a non-zero exit is WORKSPACE_FAILED with the guest's stderr. */
  const guestRun = async (vm: VmInfo, what: string, exec: Omit<GuestExec, "onStderr">): Promise<void> => {
    let stderr = "";
    const result = await vms.exec(vm.name, {
      ...exec,
      onStderr: (chunk) => {
        stderr = (stderr + chunk.toString("utf8")).slice(-STDERR_KEPT);
      },
    });
    if (result.exitCode !== 0) throw guestFailed(vm.name, what, result.exitCode, stderr);
  };

  /** Runs the export program against the workspace, in the guest or on a copy of the stopped disk. */
  const runExport = async (
    name: string,
    format: ExportFormat | "state",
    onData: (chunk: Buffer) => void | Promise<void>,
    signal: AbortSignal,
  ): Promise<{ fromDisk: boolean }> => {
    const { vm, diskFile } = await snapshot(name);
    if (vm.state === "running") {
      // The record is read under the workspace lock: an import in flight finishes first.
      await workspaceLocks.run(vm.id, async () => {
        const record = requireRecord(vm, await records.read(vm.id));
        await guestRun(vm, `export the workspace at ${record.path}`, {
          argv: shellProgram("banger-export", EXPORT_SCRIPT, [record.path, record.baseCommit, format]),
          onStdout: onData,
          signal,
        });
      });
      return { fromDisk: false };
    }
    const record = requireRecord(vm, await records.read(vm.id));
    if (vm.state !== "stopped" && vm.state !== "created" && vm.state !== "error") {
      throw new BangerError(ErrorCode.BAD_STATE, `cannot export: VM '${vm.name}' is ${vm.state}`, {
        hint: vm.state === "paused" ? `resume it with \`banger vm resume ${vm.name}\`` : "wait and retry",
      });
    }
    const copy = await vmLocks.run(vm.id, async () => {
      const now = await vms.show(name);
      if (now.state === "running" || now.state === "starting" || now.state === "paused") {
        throw new BangerError(ErrorCode.BAD_STATE, `VM '${name}' started while export read its disk`, {
          hint: "run the export again; it will read from the running guest",
        });
      }
      return deps.disk.copyOut({
        diskFile: diskFile!,
        guestPath: record.path,
        scratchDir: vm.dir,
        signal,
      });
    });
    try {
      const result = await deps.disk.run({
        argv: shellProgram("banger-export", EXPORT_SCRIPT, [copy.path, record.baseCommit, format]),
        onStdout: onData,
        signal,
      });
      if (result.exitCode !== 0)
        throw guestFailed(name, "export the workspace from the disk", result.exitCode, result.stderr);
    } finally {
      await copy.remove();
    }
    return { fromDisk: true };
  };

  return {
    async prepare(request) {
      const { vm } = await snapshot(request.name);
      requireRunning(vm, "prepare a workspace");
      return workspaceLocks.run(vm.id, async () => {
        // The payload goes straight into a staging directory through the agent (no tar in the
        // guest); the import program then builds the repository there and renames it into place.
        let printed = "";
        await guestRun(vm, `make a staging directory beside ${request.path}`, {
          argv: shellProgram("banger-stage", STAGE_SCRIPT, [request.path]),
          onStdout: (chunk) => {
            printed += chunk.toString("utf8");
          },
          signal: request.signal,
        });
        const stage = printed.trim();
        if (!/^\/[^\n]*$/.test(stage))
          throw guestFailed(vm.name, "make a staging directory", 0, `it printed ${JSON.stringify(stage)}`);
        try {
          await receiveTar({
            files: await vms.files(vm.name),
            dest: `${stage}/in`,
            source: "contents",
            base: ".",
            archive: false,
            payload: request.payload,
            signal: request.signal,
          });
          await guestRun(vm, `import the repository at ${request.path}`, {
            argv: shellProgram("banger-prepare", PREPARE_SCRIPT, [
              request.path,
              request.readonly ? "1" : "0",
              request.repo.branch ?? "",
              request.repo.head,
              stage,
            ]),
            signal: request.signal,
          });
        } catch (error) {
          // A cancel kills the import program before its own cleanup: undo what it left, with time of its own.
          await vms
            .exec(vm.name, {
              argv: shellProgram("banger-unstage", UNSTAGE_SCRIPT, [stage, request.path]),
              signal: AbortSignal.timeout(UNSTAGE_MS),
            })
            .catch(() => undefined);
          throw error;
        }
        const record: WorkspaceInfo = {
          vm: vm.name,
          path: request.path,
          baseCommit: request.repo.head,
          branch: request.repo.branch,
          readonly: request.readonly,
          includeUntracked: request.includeUntracked,
          hostRepo: request.repo,
          preparedAt: deps.now().toISOString(),
          exported: null,
        };
        await records.write(vm.id, record);
        return record;
      });
    },

    async show(name) {
      const vm = await vms.show(name);
      return requireRecord(vm, await records.read(vm.id));
    },

    async export(options) {
      let bytes = 0;
      const { fromDisk } = await runExport(
        options.name,
        options.format,
        (chunk) => {
          bytes += chunk.length;
          return options.onData(chunk);
        },
        options.signal,
      );
      return { bytes, fromDisk };
    },

    async markExported(name, exported) {
      const vm = await vms.show(name);
      return workspaceLocks.run(vm.id, async () => {
        const record = requireRecord(vm, await records.read(vm.id));
        const updated = { ...record, exported: { ...exported, at: deps.now().toISOString() } };
        await records.write(vm.id, updated);
        return updated;
      });
    },

    async assertNothingUnexported(name, signal) {
      const vm = await vms.show(name);
      const record = await records.read(vm.id);
      if (!record) return;
      let state: ExportMeta;
      try {
        const chunks: Buffer[] = [];
        await runExport(name, "state", (chunk) => void chunks.push(chunk), signal);
        state = parseExportMeta(Buffer.concat(chunks).toString("utf8"));
      } catch (error) {
        if (error instanceof BangerError && error.code === ErrorCode.CANCELLED) throw error;
        throw new BangerError(
          ErrorCode.UNEXPORTED_WORK,
          `cannot tell whether VM '${name}' holds unexported work in ${record.path}: ${(error as Error).message}`,
        );
      }
      if (!hasUnexportedWork({ base: record.baseCommit, state, exported: record.exported })) return;
      const what = [
        state.commits > 0 ? `${state.commits} commit(s)` : "",
        state.dirty ? "uncommitted changes" : "",
      ]
        .filter(Boolean)
        .join(" and ");
      throw new BangerError(
        ErrorCode.UNEXPORTED_WORK,
        `VM '${name}' has ${what || "work"} in ${record.path} that no export has taken`,
      );
    },
  };
}

function guestFailed(name: string, what: string, exitCode: number | null, stderr: string): BangerError {
  const detail = stderr.trim().split("\n").slice(-4).join("; ");
  return new BangerError(
    ErrorCode.WORKSPACE_FAILED,
    `VM '${name}': could not ${what} (exit ${exitCode ?? "by signal"})${detail ? `: ${detail}` : ""}`,
  );
}
