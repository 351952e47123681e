/**
 * Forwards a query to upstream resolvers, in order: UDP first (TCP for a
 * query that came over TCP and got a truncated UDP answer), each server
 * given `timeoutMs`. The query goes out under a fresh random id, and only a
 * reply from that server with that id is taken. Resolves undefined when
 * every server failed, so the caller answers SERVFAIL.
 */
import { randomInt } from "node:crypto";
import { createSocket } from "node:dgram";
import { readFileSync } from "node:fs";
import { connect } from "node:net";
import { createDnsFrameReader, frameDnsMessage, parseResolvConf } from "../../core/network/index.ts";

export interface Upstream {
  forward(message: Buffer, transport: "udp" | "tcp"): Promise<Buffer | undefined>;
}

export function createUpstream(options: {
  servers(): readonly string[];
  timeoutMs: number;
  port?: number;
}): Upstream {
  const port = options.port ?? 53;
  return {
    async forward(message, transport) {
      const clientId = message.readUInt16BE(0);
      for (const server of options.servers()) {
        const id = randomInt(0, 65_536);
        const query = Buffer.from(message);
        query.writeUInt16BE(id, 0);
        let reply = await viaUdp(query, server, port, options.timeoutMs).catch(() => undefined);
        if (reply !== undefined && transport === "tcp" && (reply.readUInt16BE(2) & 0x0200) !== 0) {
          reply = await viaTcp(query, server, port, options.timeoutMs).catch(() => undefined);
        }
        if (reply === undefined || reply.length < 12 || reply.readUInt16BE(0) !== id) continue;
        const out = Buffer.from(reply);
        out.writeUInt16BE(clientId, 0);
        return out;
      }
      return undefined;
    },
  };
}

function viaUdp(query: Buffer, server: string, port: number, timeoutMs: number): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const socket = createSocket("udp4");
    const done = (error: Error | undefined, reply?: Buffer) => {
      clearTimeout(timer);
      socket.close();
      if (reply !== undefined) resolve(reply);
      else reject(error ?? new Error("no reply"));
    };
    const timer = setTimeout(() => done(new Error(`${server}: timed out`)), timeoutMs);
    socket.on("error", (error) => done(error));
    socket.on("message", (reply, remote) => {
      if (remote.address !== server || reply.length < 2 || reply.readUInt16BE(0) !== query.readUInt16BE(0))
        return;
      done(undefined, reply);
    });
    socket.send(query, port, server);
  });
}

function viaTcp(query: Buffer, server: string, port: number, timeoutMs: number): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const socket = connect({ host: server, port });
    const frames = createDnsFrameReader();
    const timer = setTimeout(() => socket.destroy(new Error(`${server}: timed out`)), timeoutMs);
    socket.on("error", (error) => {
      clearTimeout(timer);
      reject(error);
    });
    socket.on("connect", () => socket.write(frameDnsMessage(query)));
    socket.on("data", (chunk: Buffer) => {
      const [reply] = frames.push(chunk).messages;
      if (reply === undefined) return;
      clearTimeout(timer);
      socket.destroy();
      resolve(reply);
    });
    socket.on("close", () => {
      clearTimeout(timer);
      reject(new Error(`${server}: closed`));
    });
  });
}

/**
 * The upstream list of a resolv.conf (in a namespace made by `ip netns`,
 * /etc/resolv.conf is /etc/netns/NAME/resolv.conf), re-read at most every
 * `refreshMs`. A missing file means no upstreams (every forward SERVFAILs).
 */
export function resolvConfServers(options: {
  file: string;
  exclude: ReadonlySet<string>;
  refreshMs?: number;
}): () => readonly string[] {
  let readAt = Number.NEGATIVE_INFINITY;
  let servers: string[] = [];
  return () => {
    const now = performance.now();
    if (now - readAt >= (options.refreshMs ?? 5000)) {
      let text = "";
      try {
        text = readFileSync(options.file, "utf8");
      } catch {
        // Absent or unreadable: no upstreams.
      }
      servers = parseResolvConf(text, options.exclude);
      readAt = now;
    }
    return servers;
  };
}
