/**
 * The HELLO handshake when the guest loses what the host first writes (as
 * a guest restored from a snapshot sometimes does): the host sends HELLO
 * again on the same connection, the real agent answers, and the session
 * works, the agent's extra answers and resets notwithstanding.
 */
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { existsSync } from "node:fs";
import { Duplex } from "node:stream";
import { describe, it } from "node:test";
import { agentBinaryPath } from "../../src/sys/agent/index.ts";
import { openAgentSession } from "../../src/sys/agent/session.ts";

const AGENT = agentBinaryPath();

/** A stream to `inner` that drops the first `lost` writes, as a guest that missed them would. */
function losing(inner: Duplex, lost: number): Duplex & { dropped: number; written: number } {
  const outer = new Duplex({
    write(chunk: Buffer, _encoding, done) {
      outer.written += 1;
      if (outer.dropped < lost) {
        outer.dropped += 1;
        done();
        return;
      }
      inner.write(chunk, done);
    },
    read() {
      inner.resume();
    },
    final(done) {
      inner.end(done);
    },
  }) as Duplex & { dropped: number; written: number };
  outer.dropped = 0;
  outer.written = 0;
  inner.on("data", (chunk: Buffer) => {
    if (!outer.push(chunk)) inner.pause();
  });
  inner.on("end", () => outer.push(null));
  // The agent is killed when the test ends; its end of the pipe then resets.
  inner.on("error", () => undefined);
  return outer;
}

describe("HELLO over a stream that lost the first one", {
  skip: !existsSync(AGENT) && "dist/banger-agent is not built",
}, () => {
  it("is sent again, answered, and the session runs commands", async () => {
    const child = spawn(AGENT, ["--fd", "3"], { stdio: ["ignore", "ignore", "ignore", "pipe"] });
    try {
      const stream = losing(child.stdio[3] as Duplex, 2);
      const session = await openAgentSession(stream, AbortSignal.timeout(10_000));
      // The first two HELLOs were dropped; a third reached the agent and was answered.
      assert.equal(stream.dropped, 2);
      assert.ok(stream.written >= 3);
      for (let i = 0; i < 3; i++) {
        const out: Buffer[] = [];
        const result = await session.exec({ argv: ["echo", `run ${i}`], onStdout: (c) => void out.push(c) })
          .done;
        assert.deepEqual(result, { exitCode: 0, signal: null });
        assert.equal(Buffer.concat(out).toString(), `run ${i}\n`);
      }
      session.close();
    } finally {
      child.kill("SIGKILL");
    }
  });
});
