/**
 * The daemon's guest channels: at most one agent session per VM, opened at
 * readiness (the agent's HELLO) or lazily on first use (a VM a previous
 * daemon started), shared by every exec on that VM, and closed with a reason
 * when the VM stops. Every readiness sets the guest clock from the host.
 */
import { type AgentEndpoint, LANE_PROTOCOL } from "../../core/agent/index.ts";
import type { Logger } from "../../core/log/index.ts";
import { BangerError } from "../../protocol/index.ts";
import { connectAgent } from "./connect.ts";
import { agentInitrd } from "./initrd.ts";
import { writeOverLane } from "./lane.ts";
import type { AgentExecOptions, AgentFiles, AgentProcess, AgentSession } from "./session.ts";

/**
 * Writes of at least this many bytes take a lane when the guest has one:
 * below it, the lane's setup (a listener, a TCP handshake) costs more than
 * the frames it saves.
 */
const LANE_MIN_BYTES = 256 * 1024;

/** How long a lazy connect (to a VM that is already running) may take. */
const LAZY_CONNECT_MS = 10_000;

export interface GuestAgentsAdapter {
  /**
   * Writes this boot's initrd: the image's initrd with the agent appended,
   * and banger's guest files when the image has no kernel of its own.
   */
  prepareInitrd(options: { imageInitrd: string; out: string; kernelless?: boolean }): Promise<void>;
  /** Waits for the agent's HELLO (the guest is ready), keeps the session and sets the guest clock. */
  connect(
    vmId: string,
    endpoint: AgentEndpoint,
    options: { deadlineMs: number; signal: AbortSignal; stillAlive(): Promise<boolean> },
  ): Promise<{ version: string }>;
  exec(vmId: string, endpoint: AgentEndpoint, options: AgentExecOptions): Promise<AgentProcess>;
  /**
   * The VM's files through its agent; each call uses the VM's session of
   * that moment. With `laneHost` (the guest's address, reachable from the
   * daemon), a large write of known size travels over a lane (lane.ts).
   */
  files(vmId: string, endpoint: AgentEndpoint, options?: { laneHost?: string | undefined }): AgentFiles;
  /** Sets the guest's clock to the host's (after a resume). */
  setClock(vmId: string, endpoint: AgentEndpoint): Promise<void>;
  /** Ends the VM's session, if any; its open channels fail with `reason`. */
  close(vmId: string, reason?: Error): void;
}

export function createGuestAgents(options: {
  agentBinary: string;
  /** banger's guest/ directory (init and scripts for OCI images). */
  guestFilesDir: string;
  logger: Logger;
}): GuestAgentsAdapter {
  const sessions = new Map<string, Promise<AgentSession>>();
  /** VMs whose guest a lane could not reach: their writes use the channel's frames until the VM stops. */
  const lanesDown = new Set<string>();

  const remember = (vmId: string, pending: Promise<AgentSession>): Promise<AgentSession> => {
    sessions.set(vmId, pending);
    pending.then(
      (session) =>
        session.onClose(() => {
          if (sessions.get(vmId) === pending) sessions.delete(vmId);
        }),
      () => {
        if (sessions.get(vmId) === pending) sessions.delete(vmId);
      },
    );
    return pending;
  };

  const sessionFor = async (vmId: string, endpoint: AgentEndpoint): Promise<AgentSession> => {
    const existing = sessions.get(vmId);
    if (existing) {
      const session = await existing;
      if (!session.isClosed) return session;
    }
    return remember(
      vmId,
      connectAgent({
        endpoint,
        deadlineMs: Date.now() + LAZY_CONNECT_MS,
        signal: AbortSignal.timeout(LAZY_CONNECT_MS),
      }),
    );
  };

  return {
    prepareInitrd: ({ imageInitrd, out, kernelless }) =>
      agentInitrd({
        imageInitrd,
        agentBinary: options.agentBinary,
        out,
        guestFilesDir: kernelless === true ? options.guestFilesDir : undefined,
      }),

    async connect(vmId, endpoint, connectOptions) {
      this.close(vmId);
      const session = await remember(vmId, connectAgent({ endpoint, ...connectOptions }));
      await syncClock(session);
      options.logger.debug("guest agent ready", { vm: vmId, agent: session.version });
      return { version: session.version };
    },

    async exec(vmId, endpoint, execOptions) {
      return (await sessionFor(vmId, endpoint)).exec(execOptions);
    },

    files(vmId, endpoint, filesOptions = {}) {
      const session = () => sessionFor(vmId, endpoint);
      const { laneHost } = filesOptions;
      return {
        stat: async (path, statOptions) => (await session()).stat(path, statOptions),
        list: async (path) => (await session()).list(path),
        readFile: async (path, onData) => (await session()).readFile(path, onData),
        writeFile: (path, mode, source, size) =>
          namingPath(path, async () => {
            const current = await session();
            const laneFits =
              laneHost !== undefined &&
              size !== undefined &&
              size >= LANE_MIN_BYTES &&
              current.protocol >= LANE_PROTOCOL &&
              !lanesDown.has(vmId);
            if (laneFits) {
              const lane = await writeOverLane({
                session: current,
                host: laneHost,
                path,
                mode,
                size,
                source,
              });
              if (lane === "written") {
                options.logger.debug("file written over a lane", { vm: vmId, bytes: size });
                return;
              }
              lanesDown.add(vmId);
              options.logger.info("no lane to the guest; its file writes go over the guest channel", {
                vm: vmId,
              });
            }
            await current.writeFile(path, mode, source);
          }),
        mkdir: async (path, attrs) => (await session()).mkdir(path, attrs),
        link: async (path, target, linkOptions) => (await session()).link(path, target, linkOptions),
        setAttrs: async (path, attrs) => (await session()).setAttrs(path, attrs),
      };
    },

    async setClock(vmId, endpoint) {
      await syncClock(await sessionFor(vmId, endpoint));
    },

    close(vmId, reason) {
      lanesDown.delete(vmId);
      const pending = sessions.get(vmId);
      if (!pending) return;
      sessions.delete(vmId);
      pending.then(
        (session) => session.close(reason),
        () => undefined,
      );
    },
  };
}

/** Runs a file request; an error the guest answered names the file it was about. */
async function namingPath<T>(path: string, request: () => Promise<T>): Promise<T> {
  try {
    return await request();
  } catch (error) {
    if (
      !(error instanceof BangerError) ||
      !error.message.startsWith("guest: ") ||
      error.message.includes(path)
    )
      throw error;
    throw new BangerError(error.code, `guest: ${path}: ${error.message.slice("guest: ".length)}`, {
      hint: error.hint,
      data: error.data,
      cause: error,
    });
  }
}

/** A clock set whose round trip took longer than this is sent again (at most CLOCK_TRIES times). */
const CLOCK_RTT_MS = 250;
const CLOCK_TRIES = 3;

/**
 * Sets the guest's clock to the host's. The guest is behind by the time the
 * frame took to reach it, which a loaded host can stretch to seconds: a set
 * whose round trip was slow is sent again with a fresh time.
 */
async function syncClock(session: Pick<AgentSession, "setClock">): Promise<void> {
  for (let attempt = 1; attempt <= CLOCK_TRIES; attempt++) {
    const sentAt = Date.now();
    await session.setClock(sentAt);
    if (Date.now() - sentAt < CLOCK_RTT_MS) return;
  }
}
