/**
 * `vm cp` and `vm auth sync`. cp's tar streams go into and out of a guest
 * over the agent's file requests (guest-tree.ts), so a guest needs no shell
 * or tar; auth sync runs a shell program through exec. Backpressure holds
 * end to end: the RPC stream pauses the client, the agent's credits pause
 * the guest. Neither takes the VM lock, nor the workspace lock.
 */
import { Readable } from "node:stream";
import {
  AUTH_SCRIPT,
  type AuthRecord,
  authDigest,
  gitConfigValue,
  holdsMaterial,
  shellProgram,
  type TarEntry,
  tarArchive,
} from "../../core/workspace/index.ts";
import { BangerError, ErrorCode, type ParamsOf, type ResultOf } from "../../protocol/index.ts";
import { receiveTar, sendTar } from "./guest-tree.ts";
import type { WorkspaceVms } from "./service.ts";

const STDERR_KEPT = 4096;

export interface TransferService {
  copyIn(options: {
    name: string;
    path: string;
    source: "file" | "dir" | "contents";
    base: string;
    archive: boolean;
    payload: Readable;
    signal: AbortSignal;
  }): Promise<{ path: string }>;
  copyOut(options: {
    name: string;
    path: string;
    onData(chunk: Buffer): void | Promise<void>;
    signal: AbortSignal;
  }): Promise<{ bytes: number }>;
  syncAuth(params: ParamsOf<"vm.auth.sync">, signal: AbortSignal): Promise<ResultOf<"vm.auth.sync">>;
}

export interface TransferDeps {
  vms: Pick<WorkspaceVms, "exec" | "files">;
  /**
   * The VM's auth record (never the material itself): the guest paths auth
   * sync wrote, for `image promote` to scrub, and the digest of what it
   * wrote, so an unchanged sync can be skipped.
   */
  authRecords?: {
    read(name: string): Promise<AuthRecord | undefined>;
    write(name: string, record: AuthRecord): Promise<void>;
  };
  /** Random hex for a record's salt. */
  newSalt?: () => string;
}

/** The guest user is root: `~/` in a guest path is /root/. */
const guestAbsolute = (path: string) => (path.startsWith("~/") ? `/root/${path.slice(2)}` : path);

export function createTransferService(deps: TransferDeps): TransferService {
  const run = async (
    name: string,
    what: string,
    argv: string[],
    options: { stdin?: Readable; signal: AbortSignal },
  ) => {
    let stderr = "";
    const result = await deps.vms.exec(name, {
      argv,
      stdin: options.stdin,
      onStderr: (chunk) => {
        stderr = (stderr + chunk.toString("utf8")).slice(-STDERR_KEPT);
      },
      signal: options.signal,
    });
    if (result.exitCode === 0) return;
    const detail = stderr.trim().split("\n").slice(-3).join("; ");
    throw new BangerError(
      result.exitCode === 2 || result.exitCode === 20 ? ErrorCode.INVALID_PARAMS : ErrorCode.WORKSPACE_FAILED,
      `VM '${name}': cannot ${what}${detail ? `: ${detail.replace(/^banger: /, "")}` : ""}`,
      { hint: "check the guest path with `banger vm exec NAME -- ls -la PATH`" },
    );
  };

  return {
    async copyIn(options) {
      return receiveTar({
        files: await deps.vms.files(options.name),
        dest: options.path,
        source: options.source,
        base: options.base,
        archive: options.archive,
        payload: options.payload,
        signal: options.signal,
      });
    },

    async copyOut(options) {
      return sendTar({
        files: await deps.vms.files(options.name),
        path: options.path,
        onData: options.onData,
        signal: options.signal,
      });
    },

    async syncAuth(params, signal) {
      const result = {
        name: params.name,
        keys: params.authorizedKeys.length,
        files: params.files.map((f) => f.guest),
        gitIdentity: params.gitIdentity !== null,
      };
      if (params.ifChanged === true && holdsMaterial(await deps.authRecords?.read(params.name), params)) {
        return { ...result, unchanged: true };
      }
      const entries: TarEntry[] = [];
      const text = (value: string) => new TextEncoder().encode(value);
      if (params.authorizedKeys.length > 0)
        entries.push({
          name: "authorized_keys",
          data: text(`${params.authorizedKeys.join("\n")}\n`),
          mode: 0o600,
        });
      if (params.gitIdentity)
        entries.push({
          name: "identity",
          data: text(
            [
              params.gitIdentity.name,
              params.gitIdentity.email,
              ...[params.gitIdentity.name, params.gitIdentity.email].map(gitConfigValue),
            ]
              .map((line) => `${oneLine(line)}\n`)
              .join(""),
          ),
          mode: 0o600,
        });
      if (params.files.length > 0) {
        entries.push({
          name: "paths",
          data: text(params.files.map((f) => `${f.guest}\n`).join("")),
          mode: 0o600,
        });
        for (const [index, file] of params.files.entries())
          entries.push({ name: `files/${index}`, data: Buffer.from(file.data, "base64"), mode: 0o600 });
      }
      // The paths are recorded before anything is written, so a sync cut off halfway is still scrubbed.
      const paths = params.files.map((file) => guestAbsolute(file.guest));
      await deps.authRecords?.write(params.name, { paths });
      await run(params.name, "sync auth files", shellProgram("banger-auth", AUTH_SCRIPT, []), {
        stdin: Readable.from([Buffer.from(tarArchive(entries))]),
        signal,
      });
      const salt = deps.newSalt?.() ?? "";
      await deps.authRecords?.write(params.name, { paths, salt, digest: authDigest(salt, params) });
      return { ...result, unchanged: false };
    },
  };
}

function oneLine(value: string): string {
  return value.replace(/[\r\n\0]/g, " ");
}
