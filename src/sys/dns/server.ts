/**
 * DNS transport: UDP and TCP listeners on the given addresses, handing each
 * message to `handle` and sending back what it returns. Contracts:
 * - one address that cannot be bound fails `listen` naming it, except those
 *   marked `optional` (logged and skipped);
 * - UDP replies longer than the asker's limit (512 bytes without EDNS) are
 *   cut to the header and question with TC set, so the asker retries on TCP;
 * - TCP: each message is length-prefixed (core/network `createDnsFrameReader`:
 *   any chunking, pipelined messages); at most `maxConnections` at once,
 *   each closed after `idleMs` without traffic; a length of 0 ends it
 *   (after the answers to what came before), more than 16 queries waiting
 *   for `handle` on one connection closes it at once, so
 *   one connection holds at most one partial message and 16 whole ones of
 *   64 KiB, plus 256 KiB of answers it has not read;
 * - `answerNow`, when given, is tried first, synchronously in the message
 *   callback (the hot path: no promise between the datagram and its reply;
 *   over TCP while no earlier answer on the connection is still waiting);
 *   undefined, or a throw (logged), hands the message to `handle`;
 * - `handle` throwing is logged and that query gets no answer; a listener
 *   never stops on bad input.
 */
import { createSocket, type RemoteInfo, type Socket as UdpSocket } from "node:dgram";
import { createServer, isIPv4, type Server, type Socket } from "node:net";
import type { Logger } from "../../core/log/index.ts";
import { createDnsFrameReader, frameDnsMessage } from "../../core/network/index.ts";
import { BangerError, ErrorCode } from "../../protocol/index.ts";

export interface DnsClient {
  address: string;
  transport: "udp" | "tcp";
}

export interface DnsListenAddress {
  host: string;
  port: number;
  /** A failure to bind is logged, not thrown (the loopback listener). */
  optional?: boolean;
}

export interface DnsServerOptions {
  listen: readonly DnsListenAddress[];
  handle(message: Buffer, client: DnsClient): Promise<Buffer | undefined>;
  /** A reply computed without waiting (the zone's fast path), or undefined to ask `handle`. */
  answerNow?(message: Buffer, address: string): Buffer | undefined;
  logger: Logger;
  maxConnections?: number;
  idleMs?: number;
}

export interface DnsServer {
  /** The addresses actually bound, as "host:port". */
  readonly bound: readonly string[];
  close(): Promise<void>;
}

const UDP_LIMIT = 512;
/** Queries one TCP connection may have waiting for answers. */
const MAX_PIPELINED = 16;
const EDNS_MAX = 4096;
/** Answer bytes a TCP client may leave unread before its connection stops being read. */
const MAX_UNREAD_BYTES = 256 * 1024;

export async function startDnsServer(options: DnsServerOptions): Promise<DnsServer> {
  const logger = options.logger.child({ component: "dns" });
  const closers: (() => Promise<void>)[] = [];
  const bound: string[] = [];
  try {
    for (const address of options.listen) {
      try {
        closers.push(await listenUdp(address, options, logger));
        closers.push(await listenTcp(address, options, logger));
        bound.push(`${address.host}:${address.port}`);
      } catch (error) {
        if (!address.optional) throw error;
        logger.warn("dns listener skipped", { host: address.host, port: address.port, err: String(error) });
      }
    }
  } catch (error) {
    for (const close of closers.reverse()) await close();
    throw error;
  }
  return {
    bound,
    async close() {
      for (const close of closers.reverse()) await close();
    },
  };
}

function bindError(address: DnsListenAddress, transport: string, error: unknown): BangerError {
  const code = (error as NodeJS.ErrnoException).code;
  return new BangerError(
    code === "EACCES" ? ErrorCode.PERMISSION_DENIED : ErrorCode.NETWORK_FAILED,
    `cannot listen for DNS on ${address.host}:${address.port}/${transport}: ${(error as Error).message}`,
    {
      cause: error,
      hint:
        code === "EADDRINUSE"
          ? "another DNS server uses that address; stop it, or change `network.dns_port`"
          : "run `banger doctor`",
    },
  );
}

async function listenUdp(
  address: DnsListenAddress,
  options: DnsServerOptions,
  logger: Logger,
): Promise<() => Promise<void>> {
  const socket: UdpSocket = createSocket({ type: "udp4", lookup: literalLookup });
  await new Promise<void>((resolve, reject) => {
    socket.once("error", (error) => reject(bindError(address, "udp", error)));
    socket.bind({ address: address.host, port: address.port, exclusive: true }, () => resolve());
  });
  socket.on("error", (error) => logger.warn("dns udp socket error", { err: String(error) }));
  const reply = (message: Buffer, remote: RemoteInfo, answer: Buffer) => {
    const limit =
      answer.length <= UDP_LIMIT ? UDP_LIMIT : Math.min(EDNS_MAX, Math.max(UDP_LIMIT, ednsPayload(message)));
    socket.send(answer.length > limit ? truncate(answer) : answer, remote.port, remote.address);
  };
  socket.on("message", (message: Buffer, remote: RemoteInfo) => {
    const now = answerNow(options, message, remote.address, logger);
    if (now !== undefined) {
      reply(message, remote, now);
      return;
    }
    options
      .handle(message, { address: remote.address, transport: "udp" })
      .then((answer) => {
        if (answer !== undefined) reply(message, remote, answer);
      })
      .catch((error: unknown) => logger.warn("dns query failed", { err: String(error) }));
  });
  return () => new Promise<void>((resolve) => socket.close(() => resolve()));
}

async function listenTcp(
  address: DnsListenAddress,
  options: DnsServerOptions,
  logger: Logger,
): Promise<() => Promise<void>> {
  const connections = new Set<Socket>();
  const idleMs = options.idleMs ?? 10_000;
  const server: Server = createServer((socket) => {
    if (connections.size >= (options.maxConnections ?? 64)) {
      socket.destroy();
      return;
    }
    connections.add(socket);
    socket.on("close", () => connections.delete(socket));
    socket.on("error", () => socket.destroy());
    socket.setTimeout(idleMs, () => socket.destroy());
    serveTcp(socket, options, logger);
  });
  await new Promise<void>((resolve, reject) => {
    server.once("error", (error) => reject(bindError(address, "tcp", error)));
    server.listen({ host: address.host, port: address.port, exclusive: true }, () => resolve());
  });
  return () =>
    new Promise<void>((resolve) => {
      for (const socket of connections) socket.destroy();
      server.close(() => resolve());
    });
}

/** `options.answerNow` guarded: a throw is logged and leaves the message to `handle`. */
function answerNow(
  options: DnsServerOptions,
  message: Buffer,
  address: string,
  logger: Logger,
): Buffer | undefined {
  if (options.answerNow === undefined) return undefined;
  try {
    return options.answerNow(message, address);
  } catch (error) {
    logger.warn("dns fast path failed", { err: String(error) });
    return undefined;
  }
}

/**
 * Where a UDP reply goes: always a datagram's source address, an IPv4
 * literal, so it is used as it is (the default `dns.lookup` would defer
 * every send by a tick to "resolve" it).
 */
function literalLookup(
  address: string,
  _family: unknown,
  callback: (error: Error | null, address: string, family: number) => void,
): void {
  if (isIPv4(address)) callback(null, address, 4);
  else callback(new Error(`not an IPv4 address: ${address}`), address, 4);
}

/**
 * One TCP connection: messages are cut out of the stream by the frame
 * reader (any chunking, any number per chunk) and answered in order. While
 * no answer is waiting, a message the fast path answers is written at once
 * in the data callback; others go through `handle` one after another.
 * A client that does not read its answers stops being read
 * (`MAX_UNREAD_BYTES`), so it cannot make the daemon hold more.
 */
function serveTcp(socket: Socket, options: DnsServerOptions, logger: Logger): void {
  const frames = createDnsFrameReader();
  // An IPv4 peer of a dual-stack socket shows as ::ffff:a.b.c.d.
  const address = (socket.remoteAddress ?? "").replace(/^::ffff:/, "");
  let chain = Promise.resolve();
  let waiting = 0;
  let paused = false;
  const send = (reply: Buffer) => {
    if (socket.destroyed) return;
    if (!socket.write(frameDnsMessage(reply)) && !paused && socket.writableLength > MAX_UNREAD_BYTES) {
      paused = true;
      socket.pause();
      socket.once("drain", () => {
        paused = false;
        socket.resume();
      });
    }
  };
  socket.on("data", (chunk: Buffer) => {
    const { messages, broken } = frames.push(chunk);
    for (const message of messages) {
      if (waiting === 0) {
        const now = answerNow(options, message, address, logger);
        if (now !== undefined) {
          send(now);
          continue;
        }
      }
      if (++waiting > MAX_PIPELINED) {
        socket.destroy();
        return;
      }
      chain = chain.then(async () => {
        try {
          const reply = await options.handle(message, { address, transport: "tcp" });
          if (reply !== undefined) send(reply);
        } catch (error) {
          logger.warn("dns query failed", { err: String(error) });
        } finally {
          waiting--;
        }
      });
    }
    if (broken) {
      // What came before the zero length is still answered; then the connection ends.
      socket.pause();
      void chain.then(() => socket.end());
    }
  });
}

/** The UDP payload size an EDNS OPT record in the query advertises, or 0. */
function ednsPayload(message: Buffer): number {
  // The OPT record is the last thing in a query: root name (0), type 41, class = payload size.
  if (message.length < 12 + 11 || message.readUInt16BE(10) !== 1) return 0;
  const opt = message.length - 11;
  if (message[opt] !== 0 || message.readUInt16BE(opt + 1) !== 41) return 0;
  return message.readUInt16BE(opt + 3);
}

/** Header and question only, with TC set and the answer counts zeroed. */
function truncate(reply: Buffer): Buffer {
  let offset = 12;
  if (reply.readUInt16BE(4) >= 1) {
    while (offset < reply.length && reply[offset] !== 0) {
      const label = reply[offset] ?? 0;
      if ((label & 0xc0) === 0xc0) {
        offset += 1;
        break;
      }
      offset += label + 1;
    }
    offset = Math.min(reply.length, offset + 1 + 4);
  }
  const cut = Buffer.from(reply.subarray(0, offset));
  cut.writeUInt16BE(cut.readUInt16BE(2) | 0x0200, 2);
  cut.writeUInt16BE(Math.min(1, cut.readUInt16BE(4)), 4);
  cut.fill(0, 6, 12);
  return cut;
}
