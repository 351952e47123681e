/**
 * Methods of git workspaces (`vm.workspace.*`), file copy (`vm.cp.*`) and
 * auth sync (`vm.auth.*`). Payloads travel as tar on the `$/stream`
 * channels: into the guest on `stdin`, out of it on `stdout`.
 */
import { z } from "zod";
import { EXPORT_FORMATS } from "./wire.ts";

/** An absolute guest path without NUL or newline (it reaches guest argv, never a shell string). */
const GuestPath = z
  .string()
  .min(1)
  .max(4096)
  .regex(/^\/[^\0\n]*$/, { message: "must be an absolute path without NUL or newline" });

const Sha = z.string().regex(/^[0-9a-f]{40,64}$/, { message: "must be a full commit id" });
const BranchName = z
  .string()
  .min(1)
  .max(255)
  .regex(/^(?!-)[^\0\n ~^:?*[\\]+$/, { message: "must be a git branch name" });

/** What the CLI found in the host repository (it inspects as the user who owns it). */
export const HostRepoInfo = z
  .object({
    path: z.string().min(1).max(4096),
    head: Sha,
    branch: BranchName.nullable(),
    dirtyFiles: z.number().int().min(0),
    untrackedFiles: z.number().int().min(0),
    submodules: z.array(z.string().max(4096)).max(1024),
    lfsFiles: z.number().int().min(0),
    worktree: z.boolean(),
    alternates: z.boolean(),
    depth: z.number().int().min(1).nullable(),
  })
  .strict();
export type HostRepoInfo = z.infer<typeof HostRepoInfo>;

export const WorkspaceInfo = z.object({
  vm: z.string(),
  path: z.string(),
  baseCommit: z.string(),
  branch: z.string().nullable(),
  readonly: z.boolean(),
  includeUntracked: z.boolean(),
  hostRepo: HostRepoInfo,
  preparedAt: z.string(),
  /** The last export the CLI confirmed: the commit and tree it carried. */
  exported: z.object({ head: z.string(), tree: z.string(), at: z.string() }).nullable(),
});
export type WorkspaceInfo = z.infer<typeof WorkspaceInfo>;

export const ExportFormat = z.enum(EXPORT_FORMATS);
export type ExportFormat = z.infer<typeof ExportFormat>;

const AuthFile = z
  .object({
    guest: z
      .string()
      .min(1)
      .max(4096)
      .regex(/^(\/|~\/)[^\0\n]*$/, {
        message: "must be an absolute path or start with ~/, without NUL or newline",
      }),
    data: z.string().max(4 * 1024 * 1024, { message: "at most 3 MiB" }),
  })
  .strict();

export const workspaceMethods = {
  "vm.workspace.prepare": {
    params: z
      .object({
        name: z.string().min(1),
        path: GuestPath,
        readonly: z.boolean().optional(),
        includeUntracked: z.boolean().optional(),
        repo: HostRepoInfo,
      })
      .strict(),
    result: WorkspaceInfo,
  },
  "vm.workspace.show": { params: z.object({ name: z.string().min(1) }).strict(), result: WorkspaceInfo },
  "vm.workspace.export": {
    params: z.object({ name: z.string().min(1), format: ExportFormat }).strict(),
    result: z.object({ bytes: z.number(), fromDisk: z.boolean() }),
  },
  "vm.workspace.exported": {
    params: z.object({ name: z.string().min(1), head: Sha, tree: Sha }).strict(),
    result: WorkspaceInfo,
  },
  "vm.cp.in": {
    params: z
      .object({
        name: z.string().min(1),
        path: GuestPath,
        /** What the tar holds: one entry named `base` (a file or a directory), or a directory's contents. */
        source: z.enum(["file", "dir", "contents"]),
        base: z
          .string()
          .min(1)
          .max(255)
          .regex(/^[^/\0\n]+$/),
        archive: z.boolean().optional(),
      })
      .strict(),
    result: z.object({ path: z.string() }),
  },
  "vm.cp.out": {
    params: z.object({ name: z.string().min(1), path: GuestPath }).strict(),
    result: z.object({ bytes: z.number() }),
  },
  "vm.auth.config": {
    params: z.object({}).strict(),
    result: z.object({
      authorizedKeys: z.array(z.string()),
      gitIdentity: z.boolean(),
      files: z.array(z.object({ host: z.string(), guest: z.string() })),
    }),
  },
  "vm.auth.sync": {
    params: z
      .object({
        name: z.string().min(1),
        authorizedKeys: z
          .array(
            z
              .string()
              .max(16384)
              .regex(/^[^\n\0]+$/),
          )
          .max(256),
        gitIdentity: z
          .object({ name: z.string().max(1024), email: z.string().max(1024) })
          .strict()
          .nullable(),
        files: z.array(AuthFile).max(64),
        /** Skip the guest when its record says it already holds exactly this material (the sync after a start). */
        ifChanged: z.boolean().optional(),
      })
      .strict(),
    result: z.object({
      name: z.string(),
      keys: z.number(),
      files: z.array(z.string()),
      gitIdentity: z.boolean(),
      /** The guest already held this material; nothing was written. */
      unchanged: z.boolean().optional(),
    }),
  },
} as const;
