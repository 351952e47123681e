import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { formatUptime } from "../../src/cli/render/stats.ts";
import {
  cpuPercent,
  guestStatsArgv,
  hasAnyGuestStat,
  parseGuestStats,
  parseProcKeyValues,
} from "../../src/core/stats/index.ts";

const GUEST_OUTPUT = [
  "@uptime",
  "1234.56 2222.10",
  "@meminfo",
  "MemTotal:        2030092 kB",
  "MemFree:         1700000 kB",
  "MemAvailable:    1850000 kB",
  "HugePages_Total:       0",
  "@df",
  "Filesystem     1024-blocks   Used Available Capacity Mounted on",
  "/dev/vda          10218772 812340   8865760       9% /",
  "",
].join("\n");

describe("guest stats parser", () => {
  it("reads uptime, memory and root filesystem from one command's output", () => {
    assert.deepEqual(parseGuestStats(GUEST_OUTPUT), {
      uptimeSeconds: 1234.56,
      memoryTotalBytes: 2030092 * 1024,
      memoryAvailableBytes: 1850000 * 1024,
      rootfsSizeBytes: 10218772 * 1024,
      rootfsUsedBytes: 812340 * 1024,
      rootfsAvailableBytes: 8865760 * 1024,
    });
  });

  it("tolerates CRLF and a filesystem name with spaces", () => {
    const text = GUEST_OUTPUT.replace("/dev/vda ", "my root fs ").replaceAll("\n", "\r\n");
    const stats = parseGuestStats(text);
    assert.equal(stats.rootfsUsedBytes, 812340 * 1024);
    assert.equal(stats.uptimeSeconds, 1234.56);
  });

  it("leaves the fields of a missing or garbled section null", () => {
    const noDf = parseGuestStats("@uptime\n99.5 1.0\n@meminfo\nMemTotal: 1000 kB\n@df\ndf: not found\n");
    assert.equal(noDf.uptimeSeconds, 99.5);
    assert.equal(noDf.memoryTotalBytes, 1024000);
    assert.equal(noDf.memoryAvailableBytes, null);
    assert.equal(noDf.rootfsSizeBytes, null);
    assert.equal(noDf.rootfsUsedBytes, null);
    assert.ok(hasAnyGuestStat(noDf));

    const garbage = parseGuestStats("Permission denied (publickey).\n");
    assert.ok(!hasAnyGuestStat(garbage));
    assert.equal(parseGuestStats("@uptime\nnot-a-number\n").uptimeSeconds, null);
  });

  it("asks the guest for every section in one POSIX sh command", () => {
    const [shell, flag, script] = guestStatsArgv();
    assert.equal(shell, "sh");
    assert.equal(flag, "-c");
    for (const section of ["@uptime", "@meminfo", "@df"]) assert.ok(script?.includes(`echo ${section}`));
  });
});

describe("/proc key-value files", () => {
  it("converts kB values to bytes and keeps unitless numbers", () => {
    const values = parseProcKeyValues(
      "Name:\tqemu-system-x86\nVmRSS:\t  524288 kB\nThreads:\t4\nCpus_allowed_list:\t0-1\n",
    );
    assert.equal(values.get("VmRSS"), 524288 * 1024);
    assert.equal(values.get("Threads"), 4);
    assert.equal(values.has("Name"), false);
    assert.equal(values.has("Cpus_allowed_list"), false);
  });
});

describe("CPU share", () => {
  it("divides CPU time by wall time, 100 per busy core", () => {
    assert.equal(cpuPercent({ cpuSecondsBefore: 10, cpuSecondsAfter: 10.25, elapsedMs: 250 }), 100);
    assert.equal(cpuPercent({ cpuSecondsBefore: 10, cpuSecondsAfter: 10.5, elapsedMs: 250 }), 200);
    assert.equal(cpuPercent({ cpuSecondsBefore: 3, cpuSecondsAfter: 3.01, elapsedMs: 250 }), 4);
    assert.equal(cpuPercent({ cpuSecondsBefore: 3, cpuSecondsAfter: 3, elapsedMs: 250 }), 0);
    assert.equal(cpuPercent({ cpuSecondsBefore: 1, cpuSecondsAfter: 1.001, elapsedMs: 300 }), 0.3);
  });

  it("gives null for an empty interval or a counter that went backwards", () => {
    assert.equal(cpuPercent({ cpuSecondsBefore: 1, cpuSecondsAfter: 2, elapsedMs: 0 }), null);
    assert.equal(cpuPercent({ cpuSecondsBefore: 5, cpuSecondsAfter: 2, elapsedMs: 250 }), null);
    assert.equal(cpuPercent({ cpuSecondsBefore: 1, cpuSecondsAfter: Number.NaN, elapsedMs: 250 }), null);
  });
});

describe("uptime rendering", () => {
  it("shows the two largest units", () => {
    assert.equal(formatUptime(12.9), "12s");
    assert.equal(formatUptime(250), "4m 10s");
    assert.equal(formatUptime(7500), "2h 5m");
    assert.equal(formatUptime(3 * 86400 + 4 * 3600 + 59), "3d 4h");
  });
});
