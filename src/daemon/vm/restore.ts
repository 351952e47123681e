/**
 * Starting a clone from a snapshot (`restoreLocked`, under its lock): the
 * boot's steps with the VMM's launch replaced by a restore of the saved
 * state, and the guest's identity applied before anything else runs in it.
 *
 * A restored guest wakes up as its source: same IP, MAC, hostname, host
 * key, machine-id, RNG state and a clock stopped at the snapshot. Its tap's
 * firewall entry carries the clone's MAC and IP, so nothing the guest sends
 * under the source's identity leaves the tap (no ARP or IP conflict with
 * the source). The restore readiness checks (the guest agent's hello) reach
 * the guest without its network; the identity program (src/core/snapshot)
 * then runs through the guest channel, changing the network last, and the
 * host key the daemon made for it is pinned once the guest prints it back.
 */
import { generateKeyPairSync, randomBytes } from "node:crypto";
import { basename, join } from "node:path";
import { Readable } from "node:stream";
import { errorMessage } from "../../core/async/index.ts";
import {
  checkRestore,
  clockStep,
  type GuestStep,
  planCloneIdentity,
  SnapshotFiles,
  type SnapshotManifest,
} from "../../core/snapshot/index.ts";
import { type Ed25519KeyFiles, ed25519KeyFiles, parseHostKeyLine } from "../../core/ssh/index.ts";
import type { VmRecord } from "../../core/vm/index.ts";
import { AUTH_FILES_JSON } from "../../core/workspace/index.ts";
import { BangerError, ErrorCode } from "../../protocol/index.ts";
import {
  attachDisk,
  attachNetwork,
  type BootStep,
  beforeBootHooks,
  bootSpecFor,
  claimDisk,
  guestReadyHooks,
  recordVmm,
  runBoot,
} from "./boot.ts";
import type { OpOptions, VmContext } from "./context.ts";
import { readAuthRecord } from "./snapshot.ts";

/** A published snapshot, as a restore needs it. */
export interface RestoreFrom {
  snapshotId: string;
  dir: string;
  manifest: SnapshotManifest;
  /** What progress calls the saved state; defaults to `snapshot NAME`. */
  label?: string;
}

/** Output a guest step may print (the host key line is short); more is cut off. */
const STEP_OUTPUT_CAP = 16 * 1024;

export function restoreLocked(
  ctx: VmContext,
  vm: VmRecord,
  from: RestoreFrom,
  options: OpOptions,
): Promise<VmRecord> {
  const steps: BootStep[] = [
    claimDisk,
    attachNetwork,
    attachDisk,
    beforeBootHooks,
    restoreVmm(from),
    awaitChannel,
    applyIdentity,
    inheritAuthRecord(from),
    guestReadyHooks,
  ];
  return runBoot(ctx, vm, steps, options);
}

/** Checks the snapshot against this VM's machine, then starts a VMM from its state (undo: kill it). */
export function restoreVmm(from: RestoreFrom): BootStep {
  return async (run, stack) => {
    const { ctx, vm, driver, signal } = run;
    const snapshots = driver.snapshots;
    if (!snapshots) {
      throw new BangerError(ErrorCode.SNAPSHOT_MISMATCH, `the ${vm.vmm} driver cannot restore snapshots`);
    }
    const spec = await bootSpecFor(ctx, vm, { ...run, disk: run.disk!, writeInitrd: true });
    const machine = await snapshots.describe(spec);
    checkRestore(from.manifest, {
      driver: vm.vmm,
      ...machine,
      cpus: vm.cpus,
      memoryMib: vm.memoryMib,
      kernel: { file: basename(spec.kernel), sizeBytes: await ctx.deps.files.size(spec.kernel) },
    });
    await ctx.deps.files.rotate(run.paths.console);
    const label = from.label ?? `snapshot ${from.manifest.name}`;
    run.progress({ step: "vm.restore", message: `restoring ${vm.name} from ${label}` });
    await recordVmm(run, stack, await snapshots.restore(spec, from.dir, signal));
  };
}

/** The restore readiness checks: the guest channel answers, without the guest's network. */
export async function awaitChannel(run: Parameters<BootStep>[0], stack: AsyncDisposableStack): Promise<void> {
  const { ctx, vm, driver, signal } = run;
  const vmm = run.vmm!;
  const guest = {
    vm,
    paths: run.paths,
    target: ctx.target(vm),
    deadlineMs: ctx.deps.config.vm.boot_timeout_s * 1000,
    stillAlive: () => driver.isRunning(vmm),
  };
  stack.defer(() => ctx.channel.close(guest.target));
  for (const check of ctx.restoreReadiness ?? []) {
    const announce = check.announce?.(vm.name);
    if (announce) run.progress(announce);
    run.failedCheck = check;
    await check.wait(guest, signal);
    delete run.failedCheck;
  }
}

/**
 * The clone's host key, RNG, machine-id, hostname and network in one guest
 * program, then its clock again (the program took a while). The agent's
 * hello set the clock before; a guest channel without an agent gets `date`
 * first.
 */
async function applyIdentity(run: Parameters<BootStep>[0]): Promise<void> {
  const { ctx, vm, signal } = run;
  const target = ctx.target(vm);
  run.progress({ step: "vm.identity", message: `giving ${vm.name} its own identity` });
  const identity = planCloneIdentity({
    hostname: vm.name,
    ip: vm.guestIp,
    prefixLength: ctx.deps.network.prefixLength,
    gateway: ctx.deps.network.gateway,
    mac: vm.mac,
    machineId: randomBytes(16).toString("hex"),
    seed: randomBytes(64),
    hostKey: newHostKey(),
  });
  const agents = ctx.deps.agents;
  // With an agent, the restore readiness (its hello) has just set the clock.
  if (!agents) await runGuestStep(ctx, target, clockStep(ctx.deps.now().getTime()), signal);
  const started = performance.now();
  const key = parseHostKeyLine(await runGuestStep(ctx, target, identity, signal));
  ctx.deps.logger.debug("clone identity applied", {
    vm: vm.name,
    ms: Math.round(performance.now() - started),
  });
  if (key) await ctx.deps.guest.pinKey({ key, ip: vm.guestIp, knownHostsFile: target.knownHostsFile });
  await agents
    ?.setClock(vm.id, target.agent)
    .catch((error: unknown) =>
      ctx.deps.logger.warn("setting the guest clock failed", { vm: vm.name, err: String(error) }),
    );
}

/**
 * The clone holds what its source's auth sync wrote: it keeps the source's
 * record, so promote scrubs those paths, a snapshot of the clone refuses
 * them, and the sync after this start is skipped when it would write the same.
 */
function inheritAuthRecord(from: RestoreFrom): BootStep {
  return async (run) => {
    const inherited = await readAuthRecord(run.ctx, join(from.dir, SnapshotFiles.authRecord));
    // A save copies only a readable record; a torn copy leaves the clone to a full sync.
    if (inherited === undefined || inherited === "unreadable") return;
    await run.ctx.deps.files.writeJson(join(run.paths.dir, AUTH_FILES_JSON), inherited);
  };
}

/** A fresh ed25519 key pair in OpenSSH's file format. */
function newHostKey(): Ed25519KeyFiles {
  const jwk = generateKeyPairSync("ed25519").privateKey.export({ format: "jwk" });
  return ed25519KeyFiles(
    Buffer.from(jwk.d ?? "", "base64url"),
    Buffer.from(jwk.x ?? "", "base64url"),
    randomBytes(4).readUInt32BE(0),
  );
}

/** Runs one identity step through the guest channel; its stdout, or BOOT_FAILED with the step's last stderr line. */
export async function runGuestStep(
  ctx: VmContext,
  target: ReturnType<VmContext["target"]>,
  step: GuestStep,
  signal: AbortSignal,
): Promise<string> {
  let stdout = "";
  let stderr = "";
  const keep = (text: string, chunk: Buffer) => (text + chunk.toString("utf8")).slice(0, STEP_OUTPUT_CAP);
  const result = await ctx.channel
    .exec(target, {
      argv: step.argv,
      stdin: step.stdin === undefined ? undefined : Readable.from([Buffer.from(step.stdin)]),
      onStdout: (chunk) => {
        stdout = keep(stdout, chunk);
      },
      onStderr: (chunk) => {
        stderr = keep(stderr, chunk);
      },
      signal,
    })
    .catch((error: unknown) => {
      throw new BangerError(
        ErrorCode.BOOT_FAILED,
        `clone identity step '${step.name}' failed: ${errorMessage(error)}`,
        {
          cause: error,
        },
      );
    });
  if (result.exitCode !== 0) {
    // The failing command's message and, from a program that names its steps, the step.
    const why = stderr.trim().split("\n").slice(-2).join("; ");
    throw new BangerError(
      ErrorCode.BOOT_FAILED,
      `clone identity step '${step.name}' failed (${result.signal ?? `exit ${result.exitCode}`})${why ? `: ${why}` : ""}`,
    );
  }
  return stdout;
}
