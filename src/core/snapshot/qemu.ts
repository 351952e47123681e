/**
 * QEMU's side of a snapshot, as data: the QMP calls that save a VM's state
 * through migration, and the argv that loads it into a new QEMU.
 *
 * QEMU 7.2 has no `file:` migration URI, and `exec:` would run a shell, so
 * the state travels over sockets and descriptors only:
 * - save: `migrate` to `unix:SOCK`, where the daemon listens and writes
 *   the stream to the state file;
 * - restore: the new QEMU gets the opened state file as descriptor 3 and
 *   `-incoming fd:3` (p50 241 ms against 605 ms for streaming the same
 *   163 MiB into `-incoming unix:`; bench/snapshot-transport.ts).
 * The VM is stopped before `migrate`, so the stream is one pass over
 * memory (zero pages cost a few bytes each) and the disk is flushed and
 * released when it completes: the disk can then be copied while QEMU holds
 * no writes in flight.
 */

/** One QMP command. */
export interface QmpCall {
  execute: string;
  arguments?: Record<string, unknown>;
}

/** Bytes per second QEMU may send; its default (128 MiB/s) would make a 512 MiB guest take seconds. */
const MIGRATION_BANDWIDTH = 64 * 1024 * 1024 * 1024;

/** The descriptor the restoring QEMU reads its state from (after stdin, stdout, stderr). */
const INCOMING_FD = 3;

/**
 * QMP calls that start saving a stopped VM's state to `socketPath` (a Unix
 * socket the caller listens on). Poll `query-migrate` with
 * `migrationProgress` until it is done.
 */
export function planQemuSave(socketPath: string): QmpCall[] {
  return [
    { execute: "migrate-set-parameters", arguments: { "max-bandwidth": MIGRATION_BANDWIDTH } },
    { execute: "migrate", arguments: { uri: `unix:${socketPath}` } },
  ];
}

/** Arguments appended to a VM's usual argv to load a state from descriptor INCOMING_FD. */
export function planQemuIncoming(): string[] {
  return ["-incoming", `fd:${INCOMING_FD}`];
}

export type MigrationProgress =
  | { done: false }
  | { done: true; ok: true; bytes: number }
  | { done: true; ok: false; reason: string };

/** Reads a `query-migrate` reply. */
export function migrationProgress(reply: unknown): MigrationProgress {
  const info = (typeof reply === "object" && reply !== null ? reply : {}) as {
    status?: unknown;
    "error-desc"?: unknown;
    ram?: { transferred?: unknown };
  };
  const status = typeof info.status === "string" ? info.status : "none";
  if (status === "completed") {
    const bytes = typeof info.ram?.transferred === "number" ? info.ram.transferred : 0;
    return { done: true, ok: true, bytes };
  }
  if (status === "failed" || status === "cancelled") {
    const reason = typeof info["error-desc"] === "string" ? info["error-desc"] : status;
    return { done: true, ok: false, reason };
  }
  return { done: false };
}

/**
 * Whether a restoring QEMU has loaded its state: `query-status` leaves
 * `inmigrate` once the stream is in (the guest is then paused until `cont`).
 */
export function incomingLoaded(status: string): boolean {
  return status !== "inmigrate";
}
