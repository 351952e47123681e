/**
 * `vm.stats` and `vm.health`: read-only probes of one VM. Host-side numbers
 * come from the VMM process (/proc) and the root disk file; guest-side ones
 * from one short command through the guest agent. Takes no VM lock and changes nothing.
 *
 * Every guest probe is bounded by `guestTimeoutMs` (its abort signal is
 * passed down, and the wait ends at the deadline even if the probe ignores
 * it), so a hung guest yields a partial answer instead of a hung RPC.
 */
import { errorMessage, throwIfAborted } from "../../core/async/index.ts";
import { cpuPercent, guestStatsArgv, hasAnyGuestStat, parseGuestStats } from "../../core/stats/index.ts";
import { KIB } from "../../core/units.ts";
import type { HealthCheck, VmHealth, VmStats } from "../../protocol/index.ts";
import type { VmRuntime, VmService } from "./service.ts";

export interface VmStatsDeps {
  vms: Pick<VmService, "runtime" | "exec">;
  /** CPU time and resident memory of a process; undefined when it is gone. */
  processUsage(pid: number): Promise<{ cpuSeconds: number; rssBytes: number } | undefined>;
  /** Allocated and apparent bytes of a file; undefined when it does not exist. */
  diskUsage(path: string): Promise<{ allocatedBytes: number; apparentBytes: number } | undefined>;
  /** One attempt to read sshd's banner; never throws. */
  probeBanner(options: {
    host: string;
    port: number;
    timeoutMs: number;
    signal: AbortSignal;
  }): Promise<{ ok: true } | { ok: false; error: string }>;
  now(): Date;
  /** A monotonic clock in milliseconds (performance.now). */
  monotonicMs(): number;
  /** Resolves after `ms`; rejects when `signal` aborts. */
  sleep(ms: number, signal: AbortSignal): Promise<void>;
  /** Interval between the two CPU samples; default 250 ms. */
  cpuSampleMs?: number | undefined;
  /** Bound on each guest probe (banner, command); default 4000 ms. */
  guestTimeoutMs?: number | undefined;
}

export interface VmStatsService {
  stats(name: string, signal: AbortSignal): Promise<VmStats>;
  health(name: string, signal: AbortSignal): Promise<VmHealth>;
}

const DEFAULT_CPU_SAMPLE_MS = 250;
const DEFAULT_GUEST_TIMEOUT_MS = 4000;
/** Guest output beyond this is dropped; the stats command prints a few KiB. */
const MAX_GUEST_OUTPUT = 64 * KIB;
const SSH_PORT = 22;

type Probe<T> = { ok: true; value: T } | { ok: false; reason: string };

export function createVmStats(deps: VmStatsDeps): VmStatsService {
  const cpuSampleMs = deps.cpuSampleMs ?? DEFAULT_CPU_SAMPLE_MS;
  const guestTimeoutMs = deps.guestTimeoutMs ?? DEFAULT_GUEST_TIMEOUT_MS;

  /** Runs one guest probe under the deadline; only the caller's own cancel escapes as an error. */
  async function bounded<T>(
    signal: AbortSignal,
    probe: (probeSignal: AbortSignal) => Promise<T>,
  ): Promise<Probe<T>> {
    throwIfAborted(signal);
    const deadline = new AbortController();
    const probeSignal = AbortSignal.any([signal, deadline.signal]);
    let timer: NodeJS.Timeout | undefined;
    const expired = new Promise<Probe<T>>((resolve) => {
      timer = setTimeout(() => {
        // Settle before aborting, so the race reports the deadline and not a cancel.
        resolve({ ok: false, reason: `no answer within ${formatDuration(guestTimeoutMs)}` });
        deadline.abort();
      }, guestTimeoutMs);
    });
    const cancelled = new Promise<Probe<T>>((resolve) => {
      probeSignal.addEventListener("abort", () => resolve({ ok: false, reason: "cancelled" }), {
        once: true,
      });
    });
    const running = probe(probeSignal).then(
      (value): Probe<T> => ({ ok: true, value }),
      (error: unknown): Probe<T> => ({ ok: false, reason: errorMessage(error) }),
    );
    try {
      const outcome = await Promise.race([running, expired, cancelled]);
      throwIfAborted(signal);
      return outcome;
    } finally {
      clearTimeout(timer);
      deadline.abort();
    }
  }

  /** Runs argv in the guest, collecting stdout and a little stderr. */
  async function guestCommand(
    name: string,
    argv: readonly string[],
    signal: AbortSignal,
  ): Promise<Probe<{ exitCode: number | null; stdout: string; stderr: string }>> {
    const stdout = boundedCollector(MAX_GUEST_OUTPUT);
    const stderr = boundedCollector(4096);
    const result = await bounded(signal, (probeSignal) =>
      deps.vms.exec(name, { argv, onStdout: stdout.add, onStderr: stderr.add, signal: probeSignal }),
    );
    if (!result.ok) return result;
    return {
      ok: true,
      value: { exitCode: result.value.exitCode, stdout: stdout.text(), stderr: stderr.text() },
    };
  }

  async function sampleVmm(pid: number, signal: AbortSignal): Promise<Probe<NonNullable<VmStats["vmm"]>>> {
    const before = await deps.processUsage(pid);
    const startedMs = deps.monotonicMs();
    if (!before) return { ok: false, reason: `the VMM process (pid ${pid}) is gone` };
    await deps.sleep(cpuSampleMs, signal).catch((error: unknown) => {
      throwIfAborted(signal);
      throw error;
    });
    const after = await deps.processUsage(pid);
    const elapsedMs = deps.monotonicMs() - startedMs;
    if (!after) return { ok: false, reason: `the VMM process (pid ${pid}) exited while being sampled` };
    return {
      ok: true,
      value: {
        pid,
        cpuPercent: cpuPercent({
          cpuSecondsBefore: before.cpuSeconds,
          cpuSecondsAfter: after.cpuSeconds,
          elapsedMs,
        }),
        sampleMs: Math.round(elapsedMs),
        rssBytes: after.rssBytes,
      },
    };
  }

  async function sampleDisk(path: string | null): Promise<Probe<NonNullable<VmStats["disk"]>>> {
    if (path === null) return { ok: false, reason: "the VM has no root disk in its directory" };
    try {
      const usage = await deps.diskUsage(path);
      if (!usage) return { ok: false, reason: `the root disk ${path} does not exist` };
      return { ok: true, value: { path, ...usage } };
    } catch (error) {
      return { ok: false, reason: `cannot stat the root disk ${path}: ${errorMessage(error)}` };
    }
  }

  async function sampleGuest(
    runtime: VmRuntime,
    signal: AbortSignal,
  ): Promise<Probe<NonNullable<VmStats["guest"]>>> {
    if (runtime.info.state !== "running") return { ok: false, reason: `the VM is ${runtime.info.state}` };
    const outcome = await guestCommand(runtime.info.name, guestStatsArgv(), signal);
    if (!outcome.ok)
      return { ok: false, reason: `the guest did not answer through its agent: ${outcome.reason}` };
    const stats = parseGuestStats(outcome.value.stdout);
    if (hasAnyGuestStat(stats)) return { ok: true, value: stats };
    return {
      ok: false,
      reason: `the guest's stats command ${describeExit(outcome.value.exitCode, outcome.value.stderr)}`,
    };
  }

  return {
    async stats(name, signal) {
      const runtime = await deps.vms.runtime(name);
      const { info } = runtime;
      const sampledAt = deps.now().toISOString();
      const disk = await sampleDisk(runtime.diskFile);
      const notRunning = `the VMM is not running (the VM is ${info.state})`;
      const vmm: Probe<NonNullable<VmStats["vmm"]>> =
        runtime.alive && runtime.pid !== null
          ? await sampleVmm(runtime.pid, signal)
          : { ok: false, reason: notRunning };
      const guest: Probe<NonNullable<VmStats["guest"]>> = runtime.alive
        ? await sampleGuest(runtime, signal)
        : { ok: false, reason: notRunning };
      return {
        name: info.name,
        state: info.state,
        sampledAt,
        vmm: vmm.ok ? vmm.value : null,
        vmmUnavailable: vmm.ok ? null : vmm.reason,
        disk: disk.ok ? disk.value : null,
        diskUnavailable: disk.ok ? null : disk.reason,
        guest: guest.ok ? guest.value : null,
        guestUnavailable: guest.ok ? null : guest.reason,
      };
    },

    async health(name, signal) {
      const runtime = await deps.vms.runtime(name);
      const { info } = runtime;
      const checks: HealthCheck[] = [
        {
          name: "vmm",
          ok: runtime.alive,
          detail: runtime.alive
            ? `VMM process ${runtime.pid} is running`
            : `the VMM process is not running (the VM is ${info.state})`,
        },
      ];
      if (!runtime.alive) {
        checks.push(
          skipped("agent", "the VMM is not running"),
          skipped("ssh-banner", "the VMM is not running"),
        );
        return { name: info.name, state: info.state, healthy: false, checks };
      }
      if (info.state === "paused") {
        checks.push(skipped("agent", "the VM is paused"), skipped("ssh-banner", "the VM is paused"));
        return { name: info.name, state: info.state, healthy: false, checks };
      }
      const run = await guestCommand(info.name, ["true"], signal);
      const ran = run.ok && run.value.exitCode === 0;
      checks.push({
        name: "agent",
        ok: ran,
        detail: ran
          ? "`true` succeeded through the guest agent"
          : run.ok
            ? `\`true\` through the guest agent ${describeExit(run.value.exitCode, run.value.stderr)}`
            : `\`true\` through the guest agent failed: ${run.reason}`,
      });
      const banner = await bounded(signal, async (probeSignal) => {
        const attempt = await deps.probeBanner({
          host: info.guestIp,
          port: SSH_PORT,
          timeoutMs: guestTimeoutMs,
          signal: probeSignal,
        });
        if (!attempt.ok) throw new Error(attempt.error);
      });
      const address = `${info.guestIp}:${SSH_PORT}`;
      checks.push({
        name: "ssh-banner",
        ok: banner.ok,
        detail: banner.ok ? `sshd answered on ${address}` : `no SSH banner from ${address}: ${banner.reason}`,
      });
      return { name: info.name, state: info.state, healthy: checks.every((check) => check.ok), checks };
    },
  };
}

function skipped(name: string, because: string): HealthCheck {
  return { name, ok: false, detail: `not checked: ${because}` };
}

/** Collects chunks up to `limit` bytes; the rest is dropped. */
function boundedCollector(limit: number) {
  const chunks: Buffer[] = [];
  let size = 0;
  return {
    add: (chunk: Buffer) => {
      if (size >= limit) return;
      const kept = chunk.subarray(0, limit - size);
      chunks.push(kept);
      size += kept.length;
    },
    text: () => Buffer.concat(chunks).toString("utf8"),
  };
}

function describeExit(exitCode: number | null, stderr: string): string {
  const firstLine = stderr.trim().split("\n")[0] ?? "";
  const status = exitCode === 255 ? "failed: ssh exited 255" : `exited ${exitCode ?? "on a signal"}`;
  return firstLine ? `${status} (${firstLine})` : status;
}

function formatDuration(ms: number): string {
  return ms < 1000 ? `${ms} ms` : `${Number((ms / 1000).toFixed(1))} s`;
}
