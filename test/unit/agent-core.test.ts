import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { newcArchive } from "../../src/core/agent/cpio.ts";
import {
  agentEndpoint,
  encodeClock,
  encodeExecRequest,
  encodeFrame,
  FrameDecoder,
  FrameType,
  MAX_PAYLOAD,
  Stream,
  signalName,
  u32,
} from "../../src/core/agent/index.ts";
import { BangerError, ErrorCode } from "../../src/protocol/index.ts";

describe("agent frames", () => {
  it("round-trip through the decoder, whole or split at any byte", () => {
    const frames = [
      encodeFrame({ type: FrameType.HELLO, channel: 0, payload: u32(1) }),
      encodeFrame({ type: FrameType.DATA, stream: Stream.stderr, channel: 7, payload: Buffer.from("hi") }),
      encodeFrame({ type: FrameType.EOF, stream: Stream.stdout, channel: 0xfffffffe }),
    ];
    const bytes = Buffer.concat(frames);
    for (let split = 0; split <= bytes.length; split++) {
      const decoder = new FrameDecoder();
      const decoded = [...decoder.push(bytes.subarray(0, split)), ...decoder.push(bytes.subarray(split))];
      assert.deepEqual(
        decoded.map((f) => [f.type, f.stream, f.channel, f.payload.toString()]),
        [
          [FrameType.HELLO, 0, 0, "\0\0\0\u0001"],
          [FrameType.DATA, 2, 7, "hi"],
          [FrameType.EOF, 1, 0xfffffffe, ""],
        ],
      );
    }
  });

  it("refuses a bad magic, an unknown type, a bad stream and an oversize length", () => {
    const good = encodeFrame({ type: FrameType.DATA, channel: 1, payload: Buffer.from("x") });
    const variants: [number, number][] = [
      [0, 0x00],
      [2, 0x7f],
      [3, 0x03],
      [8, 0xff],
    ];
    for (const [offset, value] of variants) {
      const bad = Buffer.from(good);
      bad[offset] = value;
      assert.throws(
        () => new FrameDecoder().push(bad),
        (e: unknown) => e instanceof BangerError && e.code === ErrorCode.GUEST_UNREACHABLE,
      );
    }
    assert.throws(() =>
      encodeFrame({ type: FrameType.DATA, channel: 1, payload: Buffer.alloc(MAX_PAYLOAD + 1) }),
    );
  });
});

describe("agent requests", () => {
  it("encode exec records, refusing NULs, bad env and oversize requests", () => {
    const payload = encodeExecRequest({
      argv: ["sh", "-c", "echo a b"],
      env: ["A=1"],
      cwd: "/tmp",
      user: "nobody",
      tty: { cols: 80, rows: 24 },
      stdin: true,
      detach: false,
    });
    assert.equal(payload.toString(), "a=sh\0a=-c\0a=echo a b\0e=A=1\0w=/tmp\0u=nobody\0t=80,24\0i=1\0");
    const refused = (request: Parameters<typeof encodeExecRequest>[0]) =>
      assert.throws(
        () => encodeExecRequest(request),
        (e: unknown) => e instanceof BangerError && e.code === ErrorCode.INVALID_PARAMS,
      );
    refused({ argv: [] });
    refused({ argv: ["a\0b"] });
    refused({ argv: ["true"], env: ["NOEQUALS"] });
    refused({ argv: ["true"], env: ["=x"] });
    refused({ argv: ["x".repeat(MAX_PAYLOAD)] });
  });

  it("encode the clock, name signals and pick the endpoint per VMM", () => {
    const clock = encodeClock(1_700_000_000_123);
    assert.equal(clock.readBigInt64BE(0), 1_700_000_000n);
    assert.equal(clock.readUInt32BE(8), 123_000_000);
    assert.equal(signalName(15), "SIGTERM");
    assert.equal(signalName(40), "SIG40");
    assert.deepEqual(agentEndpoint("qemu", "/v"), { kind: "unix", path: "/v/agent.sock" });
    assert.deepEqual(agentEndpoint("firecracker", "/v"), {
      kind: "hybrid-vsock",
      path: "/v/vsock.sock",
      port: 7100,
    });
  });
});

describe("newc archive", () => {
  it("writes headers, names and data 4-byte aligned, ends with the trailer, pads to 512", () => {
    const archive = newcArchive([
      { name: "banger", mode: 0o040755 },
      { name: "banger/agent", mode: 0o100755, data: Buffer.from("ELF!!") },
    ]);
    assert.equal(archive.length % 512, 0);
    const text = archive.toString("latin1");
    assert.equal(text.slice(0, 6), "070701");
    const agentAt = text.indexOf("banger/agent\0");
    const header = text.slice(agentAt - 110, agentAt);
    assert.equal(header.slice(0, 6), "070701");
    assert.equal(Number.parseInt(header.slice(14, 22), 16), 0o100755);
    assert.equal(Number.parseInt(header.slice(54, 62), 16), 5);
    const dataAt = agentAt + "banger/agent\0".length + ((4 - ((110 + 13) % 4)) % 4);
    assert.equal(text.slice(dataAt, dataAt + 5), "ELF!!");
    assert.ok(text.includes("TRAILER!!!\0"));
  });
});
