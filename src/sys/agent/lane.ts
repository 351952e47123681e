/**
 * File bytes over a LANE (guest/agent/lane.c): the agent listens on a TCP
 * port of the guest for one connection that opens with a token sent over
 * the guest channel, and writes exactly the announced bytes from it. Under
 * emulation the channel's virtio-serial port moves a page per interrupt and
 * the guest's network moves whole segments, several times faster; the
 * channel still carries the request, the token and the answer.
 */
import { randomBytes } from "node:crypto";
import { connect, type Socket } from "node:net";
import { LANE_TOKEN_BYTES } from "../../core/agent/index.ts";
import { drained, sleep } from "../../core/async/index.ts";
import { BangerError, ErrorCode } from "../../protocol/index.ts";
import type { AgentSession } from "./session.ts";

/** How long the host may take to connect to a lane's port before the write falls back to frames. */
const LANE_CONNECT_MS = 3000;
/** How long a broken lane waits for the agent's answer to explain it. */
const ANSWER_GRACE_MS = 1000;
/** The errno the agent answers with when it cannot listen (guest/agent/lane.c). */
const ENETDOWN = 100;

export interface LaneWrite {
  session: AgentSession;
  /** The guest's address on a network the host reaches. */
  host: string;
  path: string;
  mode: number;
  /** Exactly the bytes `source` yields. */
  size: number;
  source: AsyncIterable<Buffer | string>;
}

/**
 * Writes `source` to a guest file over a lane. "unavailable" when no lane
 * could be set up; nothing of `source` has then been read, so the caller
 * can send it another way. A failure once bytes flowed throws.
 */
export async function writeOverLane(options: LaneWrite): Promise<"written" | "unavailable"> {
  const token = randomBytes(LANE_TOKEN_BYTES);
  const lane = options.session.openLane({
    path: options.path,
    mode: options.mode,
    size: options.size,
    token,
  });
  let port: number;
  try {
    port = await lane.port;
  } catch (error) {
    if (error instanceof BangerError && error.data?.errno === ENETDOWN) return "unavailable";
    throw error;
  }
  const socket = await openSocket(options.host, port, LANE_CONNECT_MS);
  if (!socket) {
    lane.close();
    return "unavailable";
  }
  let broken: Error | undefined;
  socket.on("error", (error) => {
    broken ??= error;
  });
  // The agent's own answer (a write error, say) explains a broken connection better than the socket does.
  let refused: unknown;
  lane.done.catch((error: unknown) => {
    refused = error;
    socket.destroy();
  });
  try {
    socket.write(token);
    let sent = 0;
    for await (const raw of options.source) {
      const chunk = typeof raw === "string" ? Buffer.from(raw) : raw;
      sent += chunk.length;
      if (sent > options.size)
        throw laneFailed(options.path, `the source has more than ${options.size} bytes`);
      if (!socket.write(chunk)) await drained(socket);
      if (refused !== undefined || socket.destroyed) break;
    }
    if (socket.destroyed && refused === undefined) {
      // The connection broke: the agent's answer, if it comes soon, says why.
      await Promise.race([lane.done.catch(() => undefined), sleep(ANSWER_GRACE_MS)]);
      throw laneFailed(options.path, broken?.message ?? "the connection closed");
    }
    if (refused === undefined && sent < options.size)
      throw laneFailed(options.path, `the source ended at ${sent} of ${options.size} bytes`);
    socket.end();
    await lane.done;
    return "written";
  } catch (error) {
    socket.destroy();
    lane.close();
    if (refused !== undefined) throw refused;
    if (error instanceof BangerError) throw error;
    throw laneFailed(options.path, broken?.message ?? (error as Error).message);
  }
}

function openSocket(host: string, port: number, timeoutMs: number): Promise<Socket | undefined> {
  return new Promise((resolve) => {
    const socket = connect({ host, port });
    const give = (result: Socket | undefined) => {
      clearTimeout(timer);
      socket.off("connect", onConnect);
      socket.off("error", onError);
      if (!result) {
        socket.on("error", () => undefined);
        socket.destroy();
      }
      resolve(result);
    };
    const onConnect = () => give(socket);
    const onError = () => give(undefined);
    const timer = setTimeout(() => give(undefined), timeoutMs);
    socket.once("connect", onConnect);
    socket.once("error", onError);
  });
}

function laneFailed(path: string, why: string): BangerError {
  return new BangerError(
    ErrorCode.GUEST_UNREACHABLE,
    `writing ${path} in the guest over its network failed: ${why}`,
    {
      hint: "the copy stopped part way; run it again",
    },
  );
}
