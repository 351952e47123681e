/**
 * Published ports: a listener on a host address that relays to a guest
 * address. Contracts:
 * - `startPortProxy` resolves once listening; an address in use is
 *   NETWORK_FAILED naming it ("host port 127.0.0.1:8080/tcp is in use");
 * - TCP: one guest connection per accepted connection, bytes relayed both
 *   ways with back-pressure and half-closes passed on, Nagle off on both
 *   legs (the relay adds no delay of its own); either side failing closes
 *   both. Client to guest is a pipe; guest to client reads into one
 *   256 KiB buffer per connection (`onread`: no allocation per read, a
 *   quarter of the reads of a pipe), and while a write to the client is
 *   queued (it still points into that buffer) reading from the guest stops
 *   until that write's callback (a queued write smaller than the socket's
 *   high-water mark never emits 'drain');
 * - UDP: one socket towards the guest per client address and port, so
 *   replies find their way back; a session idle for `udpIdleMs` is closed,
 *   and at most `maxUdpSessions` live at once (the oldest goes first);
 * - `close` stops listening and ends every relayed connection.
 */
import { createSocket, type Socket as UdpSocket } from "node:dgram";
import { connect, createServer, type Socket } from "node:net";
import type { Logger } from "../../core/log/index.ts";
import { BangerError, ErrorCode } from "../../protocol/index.ts";

export interface PortProxyOptions {
  protocol: "tcp" | "udp";
  listen: { host: string; port: number };
  target: { host: string; port: number };
  logger: Logger;
  udpIdleMs?: number;
  maxUdpSessions?: number;
}

export interface PortProxy {
  close(): Promise<void>;
}

export function startPortProxy(options: PortProxyOptions): Promise<PortProxy> {
  return options.protocol === "tcp" ? startTcp(options) : startUdp(options);
}

function inUse(options: PortProxyOptions, error: unknown): BangerError {
  const { host, port } = options.listen;
  const code = (error as NodeJS.ErrnoException).code;
  const where = `${host}:${port}/${options.protocol}`;
  if (code === "EADDRINUSE") {
    return new BangerError(ErrorCode.NETWORK_FAILED, `host port ${where} is in use`, {
      cause: error,
      hint: "pick another host port, or stop what listens there (`ss -ltnup`)",
    });
  }
  return new BangerError(ErrorCode.NETWORK_FAILED, `cannot listen on ${where}: ${(error as Error).message}`, {
    cause: error,
    hint: code === "EADDRNOTAVAIL" ? "the host has no such address" : "run `banger doctor`",
  });
}

/** What one relayed connection reads from the guest at a time. */
const GUEST_READ_BYTES = 256 * 1024;

/** Connects to the guest and relays `client` to it and back. */
function relayTcp(client: Socket, target: PortProxyOptions["target"]): Socket {
  const guest: Socket = connect({
    host: target.host,
    port: target.port,
    allowHalfOpen: true,
    noDelay: true,
    onread: {
      buffer: Buffer.allocUnsafe(GUEST_READ_BYTES),
      callback(bytes: number, buffer: Uint8Array) {
        let waiting = false;
        client.write(buffer.subarray(0, bytes), () => {
          if (waiting) guest.resume();
        });
        if (client.writableLength === 0) return true;
        waiting = true;
        return false;
      },
    },
  });
  guest.on("end", () => client.end());
  client.pipe(guest);
  return guest;
}

async function startTcp(options: PortProxyOptions): Promise<PortProxy> {
  const connections = new Set<Socket>();
  const server = createServer({ allowHalfOpen: true, noDelay: true }, (client) => {
    const guest = relayTcp(client, options.target);
    for (const socket of [client, guest]) {
      connections.add(socket);
      socket.on("close", () => connections.delete(socket));
      socket.on("error", () => {
        client.destroy();
        guest.destroy();
      });
    }
  });
  await new Promise<void>((resolve, reject) => {
    server.once("error", (error) => reject(inUse(options, error)));
    server.listen({ host: options.listen.host, port: options.listen.port, exclusive: true }, () => resolve());
  });
  server.on("error", (error) => options.logger.warn("published port failed", { err: String(error) }));
  return {
    close: () =>
      new Promise<void>((resolve) => {
        for (const socket of connections) socket.destroy();
        server.close(() => resolve());
      }),
  };
}

async function startUdp(options: PortProxyOptions): Promise<PortProxy> {
  const idleMs = options.udpIdleMs ?? 60_000;
  const maxSessions = options.maxUdpSessions ?? 256;
  const sessions = new Map<string, { socket: UdpSocket; timer: NodeJS.Timeout }>();
  const listener = createSocket({ type: "udp4" });
  const end = (key: string) => {
    const session = sessions.get(key);
    if (session === undefined) return;
    sessions.delete(key);
    clearTimeout(session.timer);
    session.socket.close();
  };
  listener.on("message", (message, remote) => {
    const key = `${remote.address}:${remote.port}`;
    let session = sessions.get(key);
    if (session === undefined) {
      if (sessions.size >= maxSessions) end(sessions.keys().next().value as string);
      const socket = createSocket({ type: "udp4" });
      socket.on("message", (reply) => {
        listener.send(reply, remote.port, remote.address);
        const current = sessions.get(key);
        current?.timer.refresh();
      });
      socket.on("error", () => end(key));
      session = { socket, timer: setTimeout(() => end(key), idleMs) };
      sessions.set(key, session);
    }
    session.timer.refresh();
    session.socket.send(message, options.target.port, options.target.host);
  });
  await new Promise<void>((resolve, reject) => {
    listener.once("error", (error) => reject(inUse(options, error)));
    listener.bind({ address: options.listen.host, port: options.listen.port, exclusive: true }, () =>
      resolve(),
    );
  });
  listener.on("error", (error) => options.logger.warn("published port failed", { err: String(error) }));
  return {
    close: () =>
      new Promise<void>((resolve) => {
        for (const key of [...sessions.keys()]) end(key);
        listener.close(() => resolve());
      }),
  };
}
