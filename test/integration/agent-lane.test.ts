/**
 * LANE writes: the guest agent binary run on the host over a socketpair
 * (`--fd 3`), its lane listener reached on the host's loopback. The bytes
 * must arrive whole, only a connection with the token may bring them, a
 * source that is short or long fails loudly, and a lane that cannot be
 * reached is "unavailable" with nothing read from the source.
 */
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { existsSync } from "node:fs";
import { mkdtemp, readFile, rm, stat } from "node:fs/promises";
import { connect, createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { Duplex } from "node:stream";
import { after, before, describe, it } from "node:test";
import { BangerError, ErrorCode } from "../../src/protocol/index.ts";
import { agentBinaryPath } from "../../src/sys/agent/index.ts";
import { writeOverLane } from "../../src/sys/agent/lane.ts";
import { type AgentSession, type GuestLane, openAgentSession } from "../../src/sys/agent/session.ts";
import { rejectsWithCode } from "../helpers/assert.ts";

const AGENT = agentBinaryPath();
const LOOPBACK = "127.0.0.1";

/** Yields `data` in chunks of `size`, counting what was taken. */
function chunked(data: Buffer, size: number, taken = { chunks: 0 }) {
  return (async function* () {
    for (let at = 0; at < data.length; at += size) {
      taken.chunks += 1;
      yield data.subarray(at, at + size);
    }
  })();
}

/** Resolves when the agent closes `socket` (it read the token and refused it). */
function closedByPeer(socket: Duplex): Promise<void> {
  return new Promise((resolve) => {
    socket.on("error", () => undefined);
    socket.once("close", () => resolve());
    socket.resume();
  });
}

describe("lanes to the guest agent", { skip: !existsSync(AGENT) && "dist/banger-agent is not built" }, () => {
  let session: AgentSession;
  let kill: () => void;
  let dir: string;
  before(async () => {
    const child = spawn(AGENT, ["--fd", "3"], { stdio: ["ignore", "ignore", "ignore", "pipe"] });
    kill = () => child.kill("SIGKILL");
    session = await openAgentSession(child.stdio[3] as Duplex, AbortSignal.timeout(10_000));
    dir = await mkdtemp(join(tmpdir(), "banger-lane-"));
  });
  after(async () => {
    session.close();
    kill();
    await rm(dir, { recursive: true, force: true });
  });

  it("is offered by the agent (protocol 3)", () => {
    assert.equal(session.protocol, 3);
  });

  it("writes every byte with the mode asked for", async () => {
    const data = randomBytes(3 * 1024 * 1024 + 17);
    const path = join(dir, "big.bin");
    const result = await writeOverLane({
      session,
      host: LOOPBACK,
      path,
      mode: 0o640,
      size: data.length,
      source: chunked(data, 100_000),
    });
    assert.equal(result, "written");
    assert.ok((await readFile(path)).equals(data));
    assert.equal((await stat(path)).mode & 0o777, 0o640);
  });

  it("takes bytes only from a connection that shows the token", async () => {
    const token = randomBytes(16);
    const path = join(dir, "guarded");
    const lane: GuestLane = session.openLane({ path, mode: 0o600, size: 5, token });
    const port = await lane.port;
    const intruder = connect({ host: LOOPBACK, port });
    const refused = closedByPeer(intruder);
    intruder.write(Buffer.concat([randomBytes(16), Buffer.from("EVIL!")]));
    await refused;
    const host = connect({ host: LOOPBACK, port });
    host.on("error", () => undefined);
    host.end(Buffer.concat([token, Buffer.from("hello")]));
    await lane.done;
    assert.equal(await readFile(path, "utf8"), "hello");
  });

  it("fails when the source is shorter or longer than announced, and the session goes on", async () => {
    await rejectsWithCode(
      writeOverLane({
        session,
        host: LOOPBACK,
        path: join(dir, "short"),
        mode: 0o600,
        size: 1000,
        source: chunked(randomBytes(600), 300),
      }),
      ErrorCode.GUEST_UNREACHABLE,
      /short.*the source ended at 600 of 1000 bytes/,
    );
    await rejectsWithCode(
      writeOverLane({
        session,
        host: LOOPBACK,
        path: join(dir, "long"),
        mode: 0o600,
        size: 1000,
        source: chunked(randomBytes(1500), 500),
      }),
      ErrorCode.GUEST_UNREACHABLE,
      /long.*more than 1000 bytes/,
    );
    const path = join(dir, "after");
    await session.writeFile(path, 0o600, chunked(Buffer.from("still here"), 4));
    assert.equal(await readFile(path, "utf8"), "still here");
  });

  it("reports the agent's own refusal, naming the path", async () => {
    await rejectsWithCode(
      writeOverLane({
        session,
        host: LOOPBACK,
        path: join(dir, "no-such-dir", "f"),
        mode: 0o600,
        size: 4,
        source: chunked(Buffer.from("data"), 4),
      }),
      ErrorCode.INVALID_PARAMS,
      /no-such-dir\/f/,
    );
  });

  it("is unavailable, with nothing read from the source, when its port cannot be reached", async () => {
    // A loopback port nothing listens on stands in for a guest whose network drops the connection.
    const server = createServer();
    await new Promise<void>((resolve) => server.listen(0, LOOPBACK, resolve));
    const { port: closed } = server.address() as { port: number };
    await new Promise((resolve) => server.close(resolve));
    let closedLane = false;
    const unreachable = {
      openLane: (): GuestLane => ({
        port: Promise.resolve(closed),
        done: new Promise(() => undefined),
        close: () => {
          closedLane = true;
        },
      }),
    } as unknown as AgentSession;
    const taken = { chunks: 0 };
    const result = await writeOverLane({
      session: unreachable,
      host: LOOPBACK,
      path: "/unused",
      mode: 0o600,
      size: 10,
      source: chunked(Buffer.alloc(10), 5, taken),
    });
    assert.equal(result, "unavailable");
    assert.equal(taken.chunks, 0);
    assert.equal(closedLane, true);
  });

  it("is unavailable when the agent cannot listen (ENETDOWN), and passes on any other refusal", async () => {
    const refusing = (errno: number) =>
      ({
        openLane: (): GuestLane => {
          const failed = Promise.reject(
            new BangerError(ErrorCode.INTERNAL, "guest: lane listener: Address family not supported", {
              data: { errno },
            }),
          );
          failed.catch(() => undefined);
          return { port: failed, done: failed, close: () => undefined };
        },
      }) as unknown as AgentSession;
    const attempt = (errno: number) =>
      writeOverLane({
        session: refusing(errno),
        host: LOOPBACK,
        path: "/unused",
        mode: 0o600,
        size: 10,
        source: chunked(Buffer.alloc(10), 5),
      });
    assert.equal(await attempt(100), "unavailable");
    await rejectsWithCode(attempt(28), ErrorCode.INTERNAL, /lane listener/);
  });
});
