import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { newcArchive } from "../../src/core/agent/cpio.ts";
import {
  agentEndpoint,
  decodeEntries,
  encodeAttrsRequest,
  encodeClock,
  encodeExecRequest,
  encodeFrame,
  encodeLane,
  encodeLink,
  encodeList,
  encodeStat,
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

/** One entry record as the agent's files.c writes it. */
function entryRecord(e: {
  stMode: number;
  uid: number;
  gid: number;
  size: bigint;
  seconds: bigint;
  nanos: number;
  name: string;
  link: string;
}) {
  const name = Buffer.from(e.name);
  const link = Buffer.from(e.link);
  const fixed = Buffer.alloc(36);
  fixed.writeUInt32BE(e.stMode, 0);
  fixed.writeUInt32BE(e.uid, 4);
  fixed.writeUInt32BE(e.gid, 8);
  fixed.writeBigUInt64BE(e.size, 12);
  fixed.writeBigInt64BE(e.seconds, 20);
  fixed.writeUInt32BE(e.nanos, 28);
  fixed.writeUInt16BE(name.length, 32);
  fixed.writeUInt16BE(link.length, 34);
  return Buffer.concat([fixed, name, link]);
}

describe("agent tree requests", () => {
  it("decode entry records of every kind, back to back, and refuse truncated ones", () => {
    const data = Buffer.concat([
      entryRecord({
        stMode: 0o100750,
        uid: 1,
        gid: 2,
        size: 6_000_000_000n,
        seconds: 1_700_000_000n,
        nanos: 5,
        name: "bïg",
        link: "",
      }),
      entryRecord({
        stMode: 0o040711,
        uid: 0,
        gid: 0,
        size: 4096n,
        seconds: -1n,
        nanos: 0,
        name: "d",
        link: "",
      }),
      entryRecord({
        stMode: 0o120777,
        uid: 0,
        gid: 0,
        size: 3n,
        seconds: 0n,
        nanos: 0,
        name: "l",
        link: "../t",
      }),
      entryRecord({
        stMode: 0o010644,
        uid: 0,
        gid: 0,
        size: 0n,
        seconds: 0n,
        nanos: 0,
        name: "fifo",
        link: "",
      }),
    ]);
    const entries = decodeEntries(data);
    assert.deepEqual(
      entries.map((e) => [e.name, e.kind, e.mode.toString(8), e.size, e.mtime.seconds, e.link]),
      [
        ["bïg", "file", "750", 6_000_000_000, 1_700_000_000, ""],
        ["d", "dir", "711", 4096, -1, ""],
        ["l", "symlink", "777", 3, 0, "../t"],
        ["fifo", "other", "644", 0, 0, ""],
      ],
    );
    assert.deepEqual([entries[0]!.uid, entries[0]!.gid, entries[0]!.mtime.nanos], [1, 2, 5]);
    assert.deepEqual(decodeEntries(Buffer.alloc(0)), []);
    for (const cut of [10, data.length - 1]) {
      assert.throws(
        () => decodeEntries(data.subarray(0, cut)),
        (e: unknown) => e instanceof BangerError && e.code === ErrorCode.GUEST_UNREACHABLE,
      );
    }
  });

  it("encode stat, list, attributes and links; refuse empty, NUL and oversize paths", () => {
    assert.deepEqual(encodeStat("/a", { follow: true }), Buffer.from([0, 0, 0, 1, 0x2f, 0x61]));
    assert.deepEqual(encodeList("/a"), Buffer.from("/a"));
    const none = encodeAttrsRequest("/p", {});
    assert.equal(none.length, 28 + 2);
    assert.equal(none.readUInt32BE(0), 0);
    const all = encodeAttrsRequest("/p", {
      mode: 0o104755,
      owner: { uid: 7, gid: 8 },
      mtime: { seconds: 2 ** 33, nanos: 9 },
    });
    assert.deepEqual(
      [
        all.readUInt32BE(0),
        all.readUInt32BE(4),
        all.readUInt32BE(8),
        all.readUInt32BE(12),
        all.readBigInt64BE(16),
        all.readUInt32BE(24),
      ],
      [7, 0o4755, 7, 8, 2n ** 33n, 9],
    );
    const hard = encodeLink("/p", "/t", { hard: true, attrs: {} });
    assert.equal(hard.readUInt32BE(0), 8);
    assert.deepEqual(hard.subarray(28), Buffer.from("/p\0/t"));
    assert.equal(
      encodeLink("/p", "t", { hard: false, attrs: { owner: { uid: 0, gid: 0 } } }).readUInt32BE(0),
      2,
    );
    for (const bad of ["", "a\0b", `/${"x".repeat(4096)}`]) {
      assert.throws(
        () => encodeStat(bad, { follow: false }),
        (e: unknown) => e instanceof BangerError && e.code === ErrorCode.INVALID_PARAMS,
      );
    }
  });

  it("encodes a LANE as mode, size, token and path, and refuses a bad token or size", () => {
    const token = Buffer.alloc(16, 0xab);
    const payload = encodeLane({ path: "/root/f", mode: 0o100644, size: 2 ** 40 + 5, token });
    assert.equal(payload.readUInt32BE(0), 0o644);
    assert.equal(payload.readBigUInt64BE(4), BigInt(2 ** 40 + 5));
    assert.ok(payload.subarray(12, 28).equals(token));
    assert.equal(payload.subarray(28).toString("utf8"), "/root/f");
    assert.throws(
      () => encodeLane({ path: "/f", mode: 0o644, size: 1, token: Buffer.alloc(15) }),
      RangeError,
    );
    assert.throws(() => encodeLane({ path: "/f", mode: 0o644, size: -1, token }), RangeError);
  });

  it("frame the new request types; the decoder knows them", () => {
    const requests = [
      FrameType.STAT,
      FrameType.LIST,
      FrameType.MKDIR,
      FrameType.LINK,
      FrameType.SETATTR,
      FrameType.LANE,
    ];
    for (const type of requests) {
      const [frame] = new FrameDecoder().push(encodeFrame({ type, channel: 3, payload: encodeList("/x") }));
      assert.equal(frame?.type, type);
    }
    const past = encodeFrame({ type: FrameType.LANE, channel: 3 });
    past[2] = FrameType.LANE + 1;
    assert.throws(
      () => new FrameDecoder().push(past),
      (e: unknown) => e instanceof BangerError,
    );
  });
});
