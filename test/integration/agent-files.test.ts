/**
 * The daemon's guest agents adapter (createGuestAgents) against the real
 * agent binary, reached as a VM's agent is: a Unix socket whose every
 * connection is a fresh `banger-agent --fd 3`. File writes of known size
 * take a lane when it is large, frames when it is small, frames again when
 * the lane cannot be reached (once noted, then remembered), and a guest's
 * error names the file.
 */
import assert from "node:assert/strict";
import { type ChildProcess, spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { existsSync } from "node:fs";
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { createServer, type Server } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import type { AgentEndpoint } from "../../src/core/agent/index.ts";
import type { Logger } from "../../src/core/log/index.ts";
import { ErrorCode } from "../../src/protocol/index.ts";
import { agentBinaryPath, createGuestAgents, type GuestAgentsAdapter } from "../../src/sys/agent/index.ts";
import { rejectsWithCode } from "../helpers/assert.ts";

const AGENT = agentBinaryPath();

function recordingLogger(lines: string[]): Logger {
  const logger: Logger = {
    debug: (msg) => void lines.push(msg),
    info: (msg) => void lines.push(msg),
    warn: (msg) => void lines.push(msg),
    error: (msg) => void lines.push(msg),
    child: () => logger,
  };
  return logger;
}

async function* chunks(data: Buffer, size: number) {
  for (let at = 0; at < data.length; at += size) yield data.subarray(at, at + size);
}

describe("guest agents adapter: file writes", {
  skip: !existsSync(AGENT) && "dist/banger-agent is not built",
}, () => {
  let dir: string;
  let server: Server;
  const children: ChildProcess[] = [];
  let endpoint: AgentEndpoint;
  const lines: string[] = [];
  let agents: GuestAgentsAdapter;

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), "banger-agent-files-"));
    endpoint = { kind: "unix", path: join(dir, "agent.sock") };
    server = createServer({ pauseOnConnect: true }, (socket) => {
      children.push(spawn(AGENT, ["--fd", "3"], { stdio: ["ignore", "ignore", "ignore", socket] }));
      // The agent has its own copy of the connection; this one would hold the server open.
      socket.destroy();
    });
    await new Promise<void>((resolve) => server.listen(endpoint.path, resolve));
    agents = createGuestAgents({ agentBinary: AGENT, guestFilesDir: dir, logger: recordingLogger(lines) });
    for (const vm of ["vm-lane", "vm-nolane"])
      await agents.connect(vm, endpoint, {
        deadlineMs: Date.now() + 10_000,
        signal: AbortSignal.timeout(10_000),
        stillAlive: async () => true,
      });
  });
  after(async () => {
    agents.close("vm-lane");
    agents.close("vm-nolane");
    for (const child of children) child.kill("SIGKILL");
    await new Promise((resolve) => server.close(resolve));
    await rm(dir, { recursive: true, force: true });
  });

  it("sends a large write over a lane and a small one as frames", async () => {
    const files = agents.files("vm-lane", endpoint, { laneHost: "127.0.0.1" });
    const big = randomBytes(1024 * 1024);
    const small = randomBytes(1000);
    lines.length = 0;
    await files.writeFile(join(dir, "big"), 0o644, chunks(big, 65536), big.length);
    await files.writeFile(join(dir, "small"), 0o644, chunks(small, 100), small.length);
    assert.deepEqual(lines, ["file written over a lane"]);
    assert.ok((await readFile(join(dir, "big"))).equals(big));
    assert.ok((await readFile(join(dir, "small"))).equals(small));
  });

  it("falls back to frames where the lane cannot be reached, says so once, and remembers", async () => {
    // The agent's listener is IPv4 only: nothing answers on ::1.
    const files = agents.files("vm-nolane", endpoint, { laneHost: "::1" });
    const first = randomBytes(512 * 1024);
    const second = randomBytes(512 * 1024);
    lines.length = 0;
    await files.writeFile(join(dir, "first"), 0o600, chunks(first, 65536), first.length);
    await files.writeFile(join(dir, "second"), 0o600, chunks(second, 65536), second.length);
    assert.deepEqual(lines, ["no lane to the guest; its file writes go over the guest channel"]);
    assert.ok((await readFile(join(dir, "first"))).equals(first));
    assert.ok((await readFile(join(dir, "second"))).equals(second));
  });

  it("names the file in a guest's error: a full disk is RESOURCE_EXHAUSTED, by lane or by frames", async () => {
    const files = agents.files("vm-lane", endpoint, { laneHost: "127.0.0.1" });
    for (const size of [1024 * 1024, 10]) {
      await rejectsWithCode(
        files.writeFile("/dev/full", 0o600, chunks(Buffer.alloc(size), 65536), size),
        ErrorCode.RESOURCE_EXHAUSTED,
        /^guest: \/dev\/full: write: No space left on device/,
      );
    }
  });
});
