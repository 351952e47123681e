/**
 * Guest access over OpenSSH: the daemon's client key (made once), one
 * ControlMaster session per VM kept in a disposable map that the daemon's
 * lifetime closes at stop.
 */
import { mkdir } from "node:fs/promises";
import type { Layout } from "../../../core/paths/index.ts";
import { vmPaths } from "../../../core/paths/index.ts";
import { knownHostsLine } from "../../../core/ssh/index.ts";
import { writeFileAtomic } from "../../../sys/fs/index.ts";
import type { Runner } from "../../../sys/runner/index.ts";
import {
  createSshSession,
  ensureClientKey,
  openTcp,
  pinHostKey,
  type SshSession,
  waitForSshBanner,
} from "../../../sys/ssh/index.ts";
import type { GuestAccess } from "../../vm/index.ts";

/**
 * The live ControlMaster sessions by VM id. Deleting one closes it; disposing
 * the map closes every session still open (each close is tried, the first
 * failure is reported after all ran).
 */
class SessionMap implements AsyncDisposable {
  readonly #sessions = new Map<string, SshSession>();

  get(vmId: string): SshSession | undefined {
    return this.#sessions.get(vmId);
  }

  set(vmId: string, session: SshSession): void {
    this.#sessions.set(vmId, session);
  }

  async deleteAndClose(vmId: string): Promise<void> {
    const session = this.#sessions.get(vmId);
    this.#sessions.delete(vmId);
    if (session) await session.close();
  }

  async [Symbol.asyncDispose](): Promise<void> {
    const open = [...this.#sessions.values()];
    this.#sessions.clear();
    const failed = (await Promise.allSettled(open.map((session) => session.close()))).find(
      (outcome) => outcome.status === "rejected",
    );
    if (failed) throw failed.reason;
  }
}

/** GuestAccess over OpenSSH; disposing it closes every VM's ControlMaster. */
export function createGuestAccess(options: {
  layout: Layout;
  runner: Runner;
}): GuestAccess & AsyncDisposable {
  const sessions = new SessionMap();
  let key: Promise<Awaited<ReturnType<typeof ensureClientKey>>> | undefined;
  const clientKey = () => {
    key ??= ensureClientKey(options.layout.sshDir, options.runner).catch((error: unknown) => {
      key = undefined;
      throw error;
    });
    return key;
  };
  const session = async (target: { vmId: string; ip: string; knownHostsFile: string }) => {
    let existing = sessions.get(target.vmId);
    if (!existing) {
      await mkdir(options.layout.sshControlDir, { recursive: true, mode: 0o700 });
      existing = createSshSession({
        identityFile: (await clientKey()).privateKey,
        knownHostsFile: target.knownHostsFile,
        controlPath: vmPaths(options.layout, target.vmId).sshControl,
        user: "root",
        host: target.ip,
        runner: options.runner,
      });
      sessions.set(target.vmId, existing);
    }
    return existing;
  };
  return {
    user: "root",
    identityFile: async () => (await clientKey()).privateKey,
    publicKey: async () => (await clientKey()).publicKey,
    waitForBanner: (o) =>
      waitForSshBanner({
        host: o.ip,
        port: 22,
        deadlineMs: o.deadlineMs,
        signal: o.signal,
        stillAlive: o.stillAlive,
      }),
    pinHostKey: async (o) => void (await pinHostKey(o)),
    pinKey: (o) => writeFileAtomic(o.knownHostsFile, knownHostsLine(o.ip, o.key), { mode: 0o600 }),
    exec: async (target, exec) => (await session(target)).exec(exec),
    close: (target) => sessions.deleteAndClose(target.vmId),
    openTcp: (target, port, signal) => openTcp(target.ip, port, signal),
    [Symbol.asyncDispose]: () => sessions[Symbol.asyncDispose](),
  };
}
