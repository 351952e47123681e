/**
 * QEMU's snapshot save: the paused VM's migration stream, sent to a Unix
 * socket this process listens on and written to `<dir>/state` (the plan is
 * src/core/snapshot/qemu.ts). When the migration completes QEMU has flushed
 * and released the disk, so the caller may copy it before `cont`.
 */
import { once } from "node:events";
import { createWriteStream } from "node:fs";
import { rm } from "node:fs/promises";
import { createServer, type Socket } from "node:net";
import { dirname, join } from "node:path";
import { pipeline } from "node:stream/promises";
import { sleep, throwIfAborted } from "../../core/async/index.ts";
import { migrationProgress, planQemuSave, SnapshotFiles } from "../../core/snapshot/index.ts";
import type { VmmHandle } from "../../core/vmm/index.ts";
import { BangerError, ErrorCode } from "../../protocol/index.ts";
import { connectQmp } from "../qmp/index.ts";

const QMP_TIMEOUT_MS = 5_000;
const POLL_MS = 10;

/** Saves the state of the paused VM behind `handle` into `dir`; returns the bytes written. */
export async function saveQemuState(handle: VmmHandle, dir: string, signal: AbortSignal): Promise<number> {
  throwIfAborted(signal, "snapshot");
  // Beside the QMP socket: a path as short as one that already works (sun_path is 108 bytes).
  const socketPath = join(dirname(handle.controlSocket), "migrate.sock");
  const statePath = join(dir, SnapshotFiles.state);
  await rm(socketPath, { force: true });
  const output = createWriteStream(statePath, { mode: 0o600 });
  await once(output, "open");
  const server = createServer();
  const accepted = new Promise<Socket>((resolve, reject) => {
    server.once("connection", resolve);
    server.once("error", reject);
  });
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(socketPath, () => resolve());
  });
  const received = accepted.then((socket) => {
    server.close();
    return pipeline(socket, output);
  });
  // A failed migration never connects, or leaves the stream half written; either way `received` must not go unobserved.
  received.catch(() => undefined);
  const qmp = await connectQmp({ socketPath: handle.controlSocket, timeoutMs: QMP_TIMEOUT_MS, signal });
  try {
    for (const call of planQemuSave(socketPath)) await qmp.execute(call.execute, call.arguments);
    for (;;) {
      const progress = migrationProgress(await qmp.execute("query-migrate"));
      if (progress.done && !progress.ok) {
        throw new BangerError(ErrorCode.INTERNAL, `QEMU could not save the VM's state: ${progress.reason}`, {
          hint: "the VM goes on running; `banger daemon logs` has the details",
        });
      }
      if (progress.done) break;
      if (signal.aborted) {
        await qmp.execute("migrate_cancel").catch(() => undefined);
        throwIfAborted(signal, "snapshot");
      }
      await sleep(POLL_MS);
    }
    await received;
    return output.bytesWritten;
  } finally {
    qmp.close();
    server.close();
    output.destroy();
    await rm(socketPath, { force: true });
  }
}
