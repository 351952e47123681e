import assert from "node:assert/strict";
import { mkdtemp, rm } from "node:fs/promises";
import { createServer, type Server, type Socket } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { isCancelled } from "../../src/protocol/index.ts";
import { connectQmp, QmpError, type QmpEvent } from "../../src/sys/qmp/index.ts";

const GREETING = {
  QMP: {
    version: { qemu: { major: 7, minor: 2, micro: 22 }, package: "Debian 1:7.2+dfsg-7+deb12u18+b3" },
    capabilities: ["oob"],
  },
};

interface FakeQmpOptions {
  /** Commands answered before qmp_capabilities are refused, like QEMU does. */
  requireCapabilities?: boolean;
  /** Delay before the greeting, in ms. */
  greetingDelayMs?: number;
  /** Close the socket instead of replying to `quit`. */
  quitClosesSilently?: boolean;
}

/** A fake QEMU QMP endpoint: greeting, capabilities negotiation, a few commands, events interleaved. */
function fakeQmpServer(
  path: string,
  options: FakeQmpOptions = {},
): Promise<{ server: Server; received: string[] }> {
  const received: string[] = [];
  const server = createServer((socket: Socket) => {
    let negotiated = false;
    let running = true;
    const send = (message: unknown) => socket.write(`${JSON.stringify(message)}\r\n`);
    const event = (name: string, data?: unknown) =>
      send({
        timestamp: { seconds: 1, microseconds: 2 },
        event: name,
        ...(data === undefined ? {} : { data }),
      });
    setTimeout(() => send(GREETING), options.greetingDelayMs ?? 0);
    let buffer = "";
    socket.setEncoding("utf8");
    socket.on("data", (chunk: string) => {
      buffer += chunk;
      let newline = buffer.indexOf("\n");
      while (newline >= 0) {
        const line = buffer.slice(0, newline);
        buffer = buffer.slice(newline + 1);
        newline = buffer.indexOf("\n");
        const request = JSON.parse(line) as {
          execute: string;
          arguments?: Record<string, unknown>;
          id?: unknown;
        };
        received.push(request.execute);
        const reply = (body: Record<string, unknown>) =>
          send({ ...body, ...("id" in request ? { id: request.id } : {}) });
        if (request.execute === "qmp_capabilities") {
          negotiated = true;
          reply({ return: {} });
          continue;
        }
        if (!negotiated && options.requireCapabilities !== false) {
          reply({
            error: {
              class: "CommandNotFound",
              desc: "Expecting capabilities negotiation with 'qmp_capabilities'",
            },
          });
          continue;
        }
        switch (request.execute) {
          case "query-status":
            event("RTC_CHANGE", { offset: 0 });
            reply({ return: { status: running ? "running" : "paused", singlestep: false, running } });
            break;
          case "stop":
            running = false;
            event("STOP");
            reply({ return: {} });
            break;
          case "system_powerdown":
            reply({ return: {} });
            event("POWERDOWN");
            break;
          case "quit":
            if (options.quitClosesSilently) {
              socket.destroy();
              break;
            }
            reply({ return: {} });
            event("SHUTDOWN", { guest: false, reason: "host-qmp-quit" });
            socket.end();
            break;
          case "human-monitor-command":
            reply({ return: `echo: ${String(request.arguments?.["command-line"])}` });
            break;
          default:
            reply({
              error: { class: "CommandNotFound", desc: `The command ${request.execute} has not been found` },
            });
        }
      }
    });
  });
  return new Promise((resolve) => server.listen(path, () => resolve({ server, received })));
}

describe("QMP client", () => {
  let dir: string;
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), "banger-qmp-"));
  });
  after(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it("negotiates capabilities, runs commands and routes events to the callback", async () => {
    const path = join(dir, "a.sock");
    const { server, received } = await fakeQmpServer(path);
    const events: QmpEvent[] = [];
    let sawPowerdown!: () => void;
    const powerdownEvent = new Promise<void>((resolve) => {
      sawPowerdown = resolve;
    });
    const qmp = await connectQmp({
      socketPath: path,
      onEvent: (event) => {
        events.push(event);
        if (event.event === "POWERDOWN") sawPowerdown();
      },
    });
    try {
      assert.equal(qmp.greeting.version.qemu.major, 7);
      assert.deepEqual(await qmp.status(), { running: true, status: "running" });
      await qmp.execute("stop");
      assert.deepEqual(await qmp.status(), { running: false, status: "paused" });
      assert.equal(
        await qmp.execute("human-monitor-command", { "command-line": "info registers" }),
        "echo: info registers",
      );
      await qmp.powerdown();
      await powerdownEvent;
      assert.deepEqual(received, [
        "qmp_capabilities",
        "query-status",
        "stop",
        "query-status",
        "human-monitor-command",
        "system_powerdown",
      ]);
      assert.deepEqual(
        events.map((event) => event.event),
        ["RTC_CHANGE", "STOP", "RTC_CHANGE", "POWERDOWN"],
        "events arrive in order and are never taken for replies",
      );
      assert.deepEqual(events[0]?.data, { offset: 0 });
    } finally {
      qmp.close();
      await qmp.closed;
      server.close();
    }
  });

  it("rejects with QEMU's desc and error class", async () => {
    const path = join(dir, "b.sock");
    const { server } = await fakeQmpServer(path);
    const qmp = await connectQmp({ socketPath: path });
    try {
      await assert.rejects(qmp.execute("no-such-command"), (error: unknown) => {
        assert.ok(error instanceof QmpError);
        assert.equal(error.errorClass, "CommandNotFound");
        assert.match(error.message, /The command no-such-command has not been found/);
        return true;
      });
      assert.deepEqual(
        await qmp.status(),
        { running: true, status: "running" },
        "the connection stays usable",
      );
    } finally {
      qmp.close();
      server.close();
    }
  });

  it("keeps retrying until the socket appears", async () => {
    const path = join(dir, "late.sock");
    let server: Server | undefined;
    const timer = setTimeout(async () => {
      server = (await fakeQmpServer(path, { greetingDelayMs: 20 })).server;
    }, 150);
    try {
      const qmp = await connectQmp({ socketPath: path, timeoutMs: 5000, retryIntervalMs: 20 });
      assert.equal((await qmp.status()).status, "running");
      qmp.close();
    } finally {
      clearTimeout(timer);
      server?.close();
    }
  });

  it("gives up at the deadline when nothing listens", async () => {
    await assert.rejects(
      connectQmp({ socketPath: join(dir, "never.sock"), timeoutMs: 200, retryIntervalMs: 20 }),
      (error: unknown) =>
        error instanceof QmpError && /did not accept a connection in time/.test(error.message),
    );
  });

  it("stops retrying when aborted", async () => {
    const controller = new AbortController();
    setTimeout(() => controller.abort(new Error("qemu exited")), 50);
    await assert.rejects(
      connectQmp({ socketPath: join(dir, "never2.sock"), timeoutMs: 60_000, signal: controller.signal }),
      (error: unknown) => {
        assert.ok(isCancelled(error), `expected CANCELLED, got ${String(error)}`);
        assert.match(String((error.cause as Error).message), /qemu exited/);
        return true;
      },
    );
  });

  it("quit resolves whether QEMU replies first or just closes", async () => {
    for (const quitClosesSilently of [false, true]) {
      const path = join(dir, `quit-${quitClosesSilently}.sock`);
      const { server } = await fakeQmpServer(path, { quitClosesSilently });
      const events: string[] = [];
      const qmp = await connectQmp({ socketPath: path, onEvent: (event) => events.push(event.event) });
      await qmp.quit();
      await qmp.closed;
      if (!quitClosesSilently) assert.deepEqual(events, ["SHUTDOWN"]);
      await assert.rejects(qmp.status(), /connection closed/);
      server.close();
    }
  });

  it("gives up when QEMU greets but never answers qmp_capabilities", async () => {
    const path = join(dir, "mute.sock");
    const server = createServer((socket) => socket.write(`${JSON.stringify(GREETING)}\n`));
    await new Promise<void>((resolve) => server.listen(path, resolve));
    try {
      await assert.rejects(connectQmp({ socketPath: path, timeoutMs: 200 }), /no reply to qmp_capabilities/);
    } finally {
      server.close();
    }
  });

  it("fails pending commands when the connection drops", async () => {
    const path = join(dir, "drop.sock");
    const server = createServer((socket) => {
      socket.write(`${JSON.stringify(GREETING)}\n`);
      socket.on("data", (chunk) => {
        if (String(chunk).includes("qmp_capabilities")) socket.write('{"return": {}}\n');
        else socket.destroy();
      });
    });
    await new Promise<void>((resolve) => server.listen(path, resolve));
    const qmp = await connectQmp({ socketPath: path });
    await assert.rejects(qmp.execute("query-status"), /connection closed/);
    server.close();
  });
});
