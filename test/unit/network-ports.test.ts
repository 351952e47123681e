import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { type AddressInfo, createServer } from "node:net";
import { describe, it } from "node:test";
import {
  assertDistinctHostPorts,
  formatPublishedPort,
  parseForwardSpec,
  parseGuestPorts,
  parsePublishSpec,
  planGuestPortsScript,
} from "../../src/core/network/index.ts";
import { BangerError, ErrorCode } from "../../src/protocol/index.ts";

const invalid = (pattern: RegExp) => (error: unknown) =>
  error instanceof BangerError &&
  error.code === ErrorCode.INVALID_PARAMS &&
  error.hint !== undefined &&
  pattern.test(error.message);

describe("--publish specs", () => {
  it("reads docker's syntax with 127.0.0.1 and tcp as defaults", () => {
    assert.deepEqual(parsePublishSpec("8080:80"), {
      hostIp: "127.0.0.1",
      hostPort: 8080,
      guestPort: 80,
      protocol: "tcp",
    });
    assert.deepEqual(parsePublishSpec("0.0.0.0:5353:53/udp"), {
      hostIp: "0.0.0.0",
      hostPort: 5353,
      guestPort: 53,
      protocol: "udp",
    });
    assert.equal(formatPublishedPort(parsePublishSpec("8080:80/tcp")), "127.0.0.1:8080->80/tcp");
  });

  it("refuses bad specs, naming the culprit", () => {
    assert.throws(() => parsePublishSpec("80"), invalid(/'80': expected HOST_PORT:GUEST_PORT/));
    assert.throws(() => parsePublishSpec("8080:80/sctp"), invalid(/tcp or udp/));
    assert.throws(() => parsePublishSpec("8080:70000"), invalid(/guest port 70000 is out of range/));
    assert.throws(() => parsePublishSpec("0:80"), invalid(/host port 0/));
    assert.throws(() => parsePublishSpec("localhost:8080:80"), invalid(/'localhost' is not an IPv4 address/));
    assert.throws(() => parsePublishSpec("a:b"), invalid(/host port 'a'/));
    assert.throws(
      () => assertDistinctHostPorts([parsePublishSpec("8080:80"), parsePublishSpec("127.0.0.1:8080:81")]),
      invalid(/127\.0\.0\.1:8080\/tcp is given twice/),
    );
    assertDistinctHostPorts([parsePublishSpec("8080:80"), parsePublishSpec("8080:80/udp")]);
  });
});

describe("port-forward specs", () => {
  it("takes GUEST_PORT or LOCAL_PORT:GUEST_PORT, 0 meaning any local port", () => {
    assert.deepEqual(parseForwardSpec("5432"), { localPort: 5432, guestPort: 5432 });
    assert.deepEqual(parseForwardSpec("8080:80"), { localPort: 8080, guestPort: 80 });
    assert.deepEqual(parseForwardSpec("0:80"), { localPort: 0, guestPort: 80 });
    assert.throws(() => parseForwardSpec("1:2:3"), invalid(/expected/));
    assert.throws(() => parseForwardSpec("x"), invalid(/guest port 'x'/));
  });
});

describe("guest listening sockets", () => {
  const sample = [
    "## tcp",
    "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode",
    "   0: 00000000:0016 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1111 1 0 100 0 0 10 0",
    "   1: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 2222 1 0 100 0 0 10 0",
    "   2: 02004D0A:0016 01004D0A:D2F0 01 00000000:00000000 02:0008E8C6 00000000     0        0 3333 2 0 20 4 30 10 -1",
    "## tcp6",
    "  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode",
    "   0: 00000000000000000000000000000000:0016 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1112 1 0 100 0 0 10 0",
    "## udp",
    "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops",
    "  10: 00000000:14E9 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 4444 2 0 0",
    "## udp6",
    "## comm",
    "/proc/1/comm:banger-init",
    "/proc/310/comm:sshd",
    "/proc/412/comm:python3",
    "## fds",
    "/proc/1/fd:",
    "total 0",
    "lrwx------    1 root     root            64 Nov 30 22:00 3 -> socket:[9999]",
    "",
    "/proc/310/fd:",
    "lr-x------ 1 root root 64 Nov 30 22:00 0 -> /dev/null",
    "lrwx------ 1 root root 64 Nov 30 22:00 3 -> socket:[1111]",
    "lrwx------ 1 root root 64 Nov 30 22:00 4 -> socket:[1112]",
    "",
    "/proc/412/fd:",
    "lrwx------ 1 root root 64 Nov 30 22:00 5 -> socket:[2222]",
  ].join("\n");

  it("lists listening TCP and bound UDP sockets with their process, by port", () => {
    assert.deepEqual(parseGuestPorts(sample), [
      { protocol: "tcp", address: "0.0.0.0", port: 22, process: "sshd", pid: 310 },
      { protocol: "tcp6", address: "::", port: 22, process: "sshd", pid: 310 },
      { protocol: "udp", address: "0.0.0.0", port: 5353, process: null, pid: null },
      { protocol: "tcp", address: "127.0.0.1", port: 8080, process: "python3", pid: 412 },
    ]);
  });

  it("ignores garbage lines", () => {
    assert.deepEqual(parseGuestPorts("## tcp\nnot a line\n## fds\nnonsense\n"), []);
  });

  it("the guest script is valid POSIX sh and finds this host's listening socket and its process", async () => {
    // A listener of this test's own, so the owner is known whatever else the host runs.
    const server = createServer();
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    try {
      const { port } = server.address() as AddressInfo;
      const output = execFileSync("sh", ["-c", planGuestPortsScript()], { encoding: "utf8" });
      assert.match(output, /^## tcp$/m);
      assert.match(output, /^## fds$/m);
      const sockets = parseGuestPorts(output);
      for (const socket of sockets) assert.ok(socket.port > 0 && socket.port <= 65535);
      const mine = sockets.find((socket) => socket.port === port && socket.address === "127.0.0.1");
      assert.ok(mine, `the listener on 127.0.0.1:${port} is listed`);
      assert.equal(mine.pid, process.pid, "and owned by this process");
    } finally {
      server.close();
    }
  });
});
