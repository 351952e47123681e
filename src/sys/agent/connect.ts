/**
 * Connecting to a VM's agent: QEMU's virtio-serial Unix-socket chardev, or
 * Firecracker's hybrid vsock socket with its `CONNECT PORT` handshake, then
 * the HELLO readiness wait, retried until a deadline.
 */
import { connect, type Socket } from "node:net";
import type { AgentEndpoint } from "../../core/agent/index.ts";
import { BangerError, ErrorCode } from "../../protocol/index.ts";
import { type AgentSession, openAgentSession } from "./session.ts";

const RETRY_MS = 100;
/**
 * How long one connection waits for the agent's HELLO (sent again within
 * it, see openAgentSession) before it is closed and made again: 250 ms,
 * doubling per attempt up to 8 s. Closing tells the
 * guest the host went away, so an agent whose stream state came from
 * elsewhere (a guest restored from a snapshot or a suspend, whose agent
 * still holds its source's session) resets and resynchronises on the next
 * HELLO instead of waiting out the deadline. A running agent answers in
 * milliseconds, so a restore that hits this pays a quarter second; the
 * doubling keeps a guest that is merely slow (a loaded host, a boot still
 * under way) from being cut off again and again.
 */
const FIRST_HELLO_ATTEMPT_MS = 250;
const MAX_HELLO_ATTEMPT_MS = 8000;

/**
 * Connects to the agent and waits for its HELLO, retrying while the socket
 * is missing or refuses (the VMM is still starting, or the guest is not
 * listening yet) until `deadlineMs` (epoch ms), `signal` aborts or
 * `stillAlive` says the VMM is gone.
 */
export async function connectAgent(options: {
  endpoint: AgentEndpoint;
  deadlineMs: number;
  signal: AbortSignal;
  stillAlive?: () => Promise<boolean>;
}): Promise<AgentSession> {
  const { endpoint, deadlineMs, signal } = options;
  let lastError: unknown;
  /** Connections that got no HELLO in their time (refused ones do not count). */
  let unanswered = 0;
  while (Date.now() < deadlineMs) {
    if (signal.aborted) throw signal.reason ?? new BangerError(ErrorCode.CANCELLED, "cancelled");
    if (options.stillAlive && !(await options.stillAlive())) {
      throw new BangerError(ErrorCode.BOOT_FAILED, "the VMM exited before the guest agent answered", {
        hint: "`banger vm logs NAME` shows the guest console",
      });
    }
    const attemptMs = Math.min(MAX_HELLO_ATTEMPT_MS, FIRST_HELLO_ATTEMPT_MS * 2 ** unanswered);
    const attempt = AbortSignal.any([
      signal,
      AbortSignal.timeout(Math.max(1, Math.min(attemptMs, deadlineMs - Date.now()))),
    ]);
    try {
      const socket = await openStream(endpoint, attempt);
      return await openAgentSession(socket, attempt);
    } catch (error) {
      if (signal.aborted) throw signal.reason ?? error;
      if (attempt.aborted) unanswered++;
      lastError = error;
      await new Promise((resolve) => setTimeout(resolve, RETRY_MS));
    }
  }
  throw new BangerError(ErrorCode.GUEST_UNREACHABLE, "the guest agent did not answer in time", {
    hint: "raise vm.boot_timeout_s, or read the guest console with `banger vm logs NAME`",
    cause: lastError,
  });
}

async function openStream(endpoint: AgentEndpoint, signal: AbortSignal): Promise<Socket> {
  const socket = await new Promise<Socket>((resolve, reject) => {
    const s = connect(endpoint.path);
    const fail = (error: unknown) => {
      s.destroy();
      reject(error);
    };
    s.once("connect", () => {
      s.off("error", fail);
      signal.removeEventListener("abort", onAbort);
      resolve(s);
    });
    s.once("error", fail);
    const onAbort = () => fail(signal.reason);
    signal.addEventListener("abort", onAbort, { once: true });
  });
  if (endpoint.kind === "unix") return socket;
  return hybridVsockConnect(socket, endpoint.port, signal);
}

/** Firecracker's host-initiated vsock: write `CONNECT PORT\n`, read `OK HOSTPORT\n`, then the stream is the guest's. */
function hybridVsockConnect(socket: Socket, port: number, signal: AbortSignal): Promise<Socket> {
  return new Promise((resolve, reject) => {
    let line = Buffer.alloc(0);
    const cleanup = () => {
      socket.pause();
      socket.off("data", onData);
      socket.off("close", onClose);
      socket.off("error", onClose);
      signal.removeEventListener("abort", onClose);
    };
    const onClose = () => {
      cleanup();
      discard(socket);
      reject(new BangerError(ErrorCode.GUEST_UNREACHABLE, `vsock port ${port} refused the connection`));
    };
    const onData = (chunk: Buffer) => {
      line = Buffer.concat([line, chunk]);
      const end = line.indexOf(0x0a);
      if (end < 0) {
        if (line.length > 64) onClose();
        return;
      }
      cleanup();
      const text = line.subarray(0, end).toString("latin1");
      if (!text.startsWith("OK ")) {
        discard(socket);
        reject(new BangerError(ErrorCode.GUEST_UNREACHABLE, `vsock CONNECT ${port} answered "${text}"`));
        return;
      }
      const rest = line.subarray(end + 1);
      if (rest.length > 0) socket.unshift(rest);
      resolve(socket);
    };
    socket.on("data", onData);
    socket.once("close", onClose);
    socket.once("error", onClose);
    signal.addEventListener("abort", onClose, { once: true });
    socket.write(`CONNECT ${port}\n`);
  });
}

/**
 * Ends a socket given up on. Its late errors (a reset from a VMM that is
 * going away) have nobody to tell and must not reach the process as an
 * unhandled 'error'.
 */
function discard(socket: Socket): void {
  socket.on("error", () => {});
  socket.destroy();
}
