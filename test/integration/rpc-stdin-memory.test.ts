import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { once } from "node:events";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { describe, it } from "node:test";
import { RpcClient } from "../../src/cli/rpc/client.ts";
import { BUILD_VERSION, PROTOCOL_VERSION } from "../../src/protocol/index.ts";
import { makeTempDir } from "../helpers/tmp.ts";

const GIB = 1024 * 1024 * 1024;

function rssBytes(pid: number): number {
  const line = readFileSync(`/proc/${pid}/status`, "utf8")
    .split("\n")
    .find((entry) => entry.startsWith("VmRSS:"));
  return Number(line?.split(/\s+/)[1]) * 1024;
}

describe("exec stdin through the RPC server", () => {
  it("carries 1 GiB of stdin with the server's RSS growing less than 64 MiB", {
    timeout: 300_000,
  }, async () => {
    const dir = makeTempDir();
    const socket = join(dir.path, "sink.sock");
    const server = spawn(
      process.execPath,
      [join(import.meta.dirname, "..", "fixtures", "stdin-sink-server.ts"), socket],
      { stdio: ["pipe", "pipe", "inherit"] },
    );
    try {
      await once(server.stdout, "data");
      const client = await RpcClient.connect(socket);
      await client.call("daemon.hello", { protocol: PROTOCOL_VERSION, build: BUILD_VERSION });
      const before = rssBytes(server.pid!);
      let peak = before;
      const sampler = setInterval(() => {
        peak = Math.max(peak, rssBytes(server.pid!));
      }, 50);
      const call = client.start("vm.exec", { name: "sink", argv: ["cat"], stdin: true });
      const block = Buffer.alloc(1024 * 1024, 0x79);
      for (let sent = 0; sent < GIB; sent += block.length) await call.write("stdin", block);
      call.end("stdin");
      const result = await call.result;
      clearInterval(sampler);
      peak = Math.max(peak, rssBytes(server.pid!));
      client.close();
      assert.equal(result.exitCode, 0);
      const growthMiB = (peak - before) / 1024 / 1024;
      assert.ok(growthMiB < 64, `RSS grew by ${growthMiB.toFixed(1)} MiB`);
    } finally {
      server.stdin.end();
      server.kill("SIGKILL");
      dir.cleanup();
    }
  });
});
