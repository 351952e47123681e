/**
 * Booting a VM (`startLocked`, under its lock) as a list of named steps.
 * Each step acquires one thing, registers its undo on the start's stack
 * before moving on, and records what a new daemon would need to undo it in
 * handles.json. A step that throws (or a cancel) unwinds the stack in
 * reverse and leaves the VM in `error` with the reason and console tail.
 *
 * A new capability that must run at boot is a VmHook (before-boot or
 * guest-ready) or a GuestReadiness check, registered where the service is
 * built; a new step here is only for something every VM needs.
 */
import { errorMessage } from "../../core/async/index.ts";
import type { DiskFormat } from "../../core/disk/index.ts";
import { planKernelCmdline } from "../../core/image/index.ts";
import type { VmPaths } from "../../core/paths/index.ts";
import { GIB } from "../../core/units.ts";
import {
  bootFailureSummary,
  emptyHandles,
  tapNameForVmId,
  type VmHandles,
  type VmRecord,
} from "../../core/vm/index.ts";
import type { BootSpec, VmmDriver, VmmHandle } from "../../core/vmm/contract.ts";
import { BangerError, ErrorCode, isCancelled, type Progress } from "../../protocol/index.ts";
import type { ImageRecord } from "../../sys/store/index.ts";
import type { OpOptions, VmContext } from "./context.ts";
import type { GuestReadiness, StoredDisk } from "./platform.ts";
import { killStrayVmms } from "./strays.ts";

/** One boot in progress: what the steps share, filled in as they go. */
export interface BootRun {
  readonly ctx: VmContext;
  readonly vm: VmRecord;
  readonly image: ImageRecord;
  readonly driver: VmmDriver;
  readonly paths: VmPaths;
  readonly signal: AbortSignal;
  readonly progress: Progress;
  /** What handles.json holds so far. */
  readonly handles: VmHandles;
  /** Set by claimDisk: the VM's root disk as stored. */
  stored?: StoredDisk;
  /** Set by attachDisk: what the VMM opens. */
  disk?: { path: string; format: DiskFormat };
  /** Set by launchVmm. */
  vmm?: VmmHandle;
  /** Set by awaitGuest when a readiness check fails: its hint leads the error's. */
  failedCheck?: GuestReadiness;
}

export type BootStep = (run: BootRun, stack: AsyncDisposableStack) => Promise<void>;

/**
 * The stored root disk first, so a VM whose directory was removed gets the
 * disk's hint rather than a failed handles.json write; then any VMM of this
 * VM that a lost handles.json left behind, which would hold the disk's lock.
 */
export async function claimDisk(run: BootRun): Promise<void> {
  const { ctx, vm } = run;
  run.stored = await ctx.storedDisk(vm);
  await killStrayVmms({ census: ctx.deps.census, logger: ctx.deps.logger, vmId: vm.id });
}

/** The bridge, then this VM's tap on it. */
export async function attachNetwork(run: BootRun, stack: AsyncDisposableStack): Promise<void> {
  const { ctx, vm, signal } = run;
  const network = ctx.deps.network;
  run.progress({ step: "vm.network", message: `setting up the network for ${vm.name}` });
  await network.ensureBridge(signal);
  const tap = tapNameForVmId(vm.id);
  run.handles.tap = tap;
  await ctx.handles.save(vm, run.handles);
  await network.createTap(tap, signal);
  stack.defer(() => network.deleteTap(tap));
  // The address may have had another VM (another MAC) a moment ago.
  await network.forgetNeighbor(vm.guestIp);
}

/** Makes the stored root disk openable for this boot (dm-snapshot devices; a no-op for files). */
export async function attachDisk(run: BootRun, stack: AsyncDisposableStack): Promise<void> {
  const { ctx, vm } = run;
  const disks = ctx.deps.disks;
  const stored = run.stored ?? (await ctx.storedDisk(vm));
  const attached = await disks.attach({
    disk: stored,
    base: ctx.diskBase(vm, run.image, stored),
    sizeBytes: vm.diskGib * GIB,
    signal: run.signal,
  });
  stack.defer(() => disks.detach(attached.handles));
  run.disk = { path: attached.path, format: stored.format };
  run.handles.disk = attached.handles;
  await ctx.handles.save(vm, run.handles);
}

export async function beforeBootHooks(run: BootRun, stack: AsyncDisposableStack): Promise<void> {
  await run.ctx.hooks.start(run.vm, "before-boot", stack, run.signal);
}

/** The guest's second disk when an OCI image boots: the kernel's own image, read-only. */
const BASE_DEVICE = "/dev/vdb";

/**
 * The image whose kernel and initrd boot this VM: its own, or, for an image
 * with no kernel (an OCI image; its row's kernel is empty), the configured
 * default image's, made on first use like a create's.
 */
async function kernelImage(
  ctx: VmContext,
  image: ImageRecord,
  options: { signal: AbortSignal; progress: Progress },
): Promise<ImageRecord> {
  if (image.kernel !== "") return image;
  const base = await ctx.deps.images.resolve(ctx.deps.config.vm.default_image, options);
  if (base.kernel === "" || base.initrd === null) {
    throw new BangerError(
      ErrorCode.BAD_STATE,
      `image '${image.name}' has no kernel, and neither has the default image '${base.name}' to boot it with`,
      { hint: "set vm.default_image in config.toml to an image with a kernel, such as debian-bookworm" },
    );
  }
  return base;
}

/** The VMM's view of this boot: kernel, cmdline, initrd, disks, tap and the VM's files. */
export async function bootSpecFor(
  ctx: VmContext,
  vm: VmRecord,
  options: {
    image: ImageRecord;
    driver: VmmDriver;
    paths: VmPaths;
    disk: { path: string; format: DiskFormat };
    signal: AbortSignal;
    progress: Progress;
    /** Write this boot's initrd (true for a VMM about to start). */
    writeInitrd: boolean;
  },
): Promise<BootSpec> {
  const { deps } = ctx;
  const { image, paths } = options;
  const boot = await kernelImage(ctx, image, options);
  const kernelless = boot !== image;
  const kernel = options.driver.features.kernelFormats.includes("bzImage")
    ? boot.kernel
    : await deps.images.vmlinux(boot, { signal: options.signal });
  const cmdline = planKernelCmdline({
    guestIp: vm.guestIp,
    gatewayIp: deps.network.gateway,
    prefixLength: deps.network.prefixLength,
    hostname: vm.name,
    sshPublicKey: await deps.guest.publicKey(),
    tscKhz: await deps.tscKhz(),
    searchDomain: deps.config.network.domain,
    kernelless: kernelless ? { baseDevice: BASE_DEVICE } : undefined,
    extraArgs: deps.config.vm.kernel_args,
  });
  // This boot's initrd carries the guest agent (ARCHITECTURE.md "Guest channel"); it is
  // written only for a VMM about to start (a save describes the running one).
  let initrd = boot.initrd;
  if (initrd !== null && deps.agents) {
    if (options.writeInitrd) {
      await deps.agents.prepareInitrd({ imageInitrd: initrd, out: paths.initrd, kernelless });
    }
    initrd = paths.initrd;
  } else if (kernelless) {
    throw new BangerError(ErrorCode.BAD_STATE, `image '${image.name}' boots only with banger's guest agent`, {
      hint: "build it with `npm run build`",
    });
  }
  return {
    vmId: vm.id,
    vmName: vm.name,
    cpus: vm.cpus,
    memoryMib: vm.memoryMib,
    kernel,
    initrd,
    kernelCmdline: cmdline,
    disk: options.disk,
    baseDisk: kernelless ? boot.rootfs : undefined,
    tap: tapNameForVmId(vm.id),
    mac: vm.mac,
    consoleLog: paths.console,
    vmmLog: paths.vmmLog,
    vmDir: paths.dir,
  };
}

/** Records the started VMM in handles.json and defers its kill. */
export async function recordVmm(run: BootRun, stack: AsyncDisposableStack, handle: VmmHandle): Promise<void> {
  stack.defer(() => run.driver.kill(handle));
  run.vmm = handle;
  run.handles.pid = handle.pid;
  run.handles.pidStartTicks = handle.pidStartTicks;
  run.handles.controlSocket = handle.controlSocket;
  await run.ctx.handles.save(run.vm, run.handles);
}

/** Plans the kernel and its cmdline, then starts the VMM (undo: kill it). */
async function launchVmm(run: BootRun, stack: AsyncDisposableStack): Promise<void> {
  const { ctx, vm, driver, paths, signal } = run;
  const spec = await bootSpecFor(ctx, vm, { ...run, disk: run.disk!, writeInitrd: true });
  await ctx.deps.files.rotate(paths.console);
  run.progress({ step: "vm.boot", message: `booting ${vm.name} (${vm.vmm})` });
  await recordVmm(run, stack, await driver.start(spec, signal));
}

/**
 * Waits until the guest answers, one readiness check after the other, each
 * bounded by the boot timeout and by the VMM staying alive. The guest
 * channel the checks open is closed if a later step fails.
 */
async function awaitGuest(run: BootRun, stack: AsyncDisposableStack): Promise<void> {
  const { ctx, vm, driver, signal } = run;
  const vmm = run.vmm!;
  const deadlineMs = ctx.deps.config.vm.boot_timeout_s * 1000;
  const guest = {
    vm,
    paths: run.paths,
    target: ctx.target(vm),
    deadlineMs,
    stillAlive: () => driver.isRunning(vmm),
  };
  stack.defer(() => ctx.channel.close(guest.target));
  for (const check of ctx.readiness) {
    const announce = check.announce?.(vm.name);
    if (announce) run.progress(announce);
    run.failedCheck = check;
    await check.wait(guest, signal);
    delete run.failedCheck;
  }
}

export async function guestReadyHooks(run: BootRun, stack: AsyncDisposableStack): Promise<void> {
  await run.ctx.hooks.start(run.vm, "guest-ready", stack, run.signal);
}

/** The boot, in order. */
const BOOT_STEPS: readonly BootStep[] = [
  claimDisk,
  attachNetwork,
  attachDisk,
  beforeBootHooks,
  launchVmm,
  awaitGuest,
  guestReadyHooks,
];

/** Boots a VM that is at rest (or in error) and returns its running row; see the module comment. */
export function startLocked(ctx: VmContext, vm: VmRecord, options: OpOptions): Promise<VmRecord> {
  return runBoot(ctx, vm, BOOT_STEPS, options);
}

/**
 * Runs `steps` as a start: state `starting`, each step's undo on one stack,
 * `running` at the end; on failure the stack unwinds and the VM is left in
 * `failedState` (`error`, or `suspended` for a resume from disk, whose state
 * stays for a retry) with the reason. A restore from a snapshot and a
 * resume from disk are the other lists.
 */
/** The VM's image row; IMAGE_NOT_FOUND when it was deleted. */
export function imageOf(ctx: VmContext, vm: VmRecord): ImageRecord {
  const image = ctx.deps.store.getImageById(vm.imageId);
  if (!image) {
    throw new BangerError(
      ErrorCode.IMAGE_NOT_FOUND,
      `VM '${vm.name}' uses image ${vm.imageName}, which no longer exists`,
    );
  }
  return image;
}

export async function runBoot(
  ctx: VmContext,
  vm: VmRecord,
  steps: readonly BootStep[],
  options: OpOptions,
  failedState: "error" | "suspended" = "error",
): Promise<VmRecord> {
  const image = imageOf(ctx, vm);
  const paths = ctx.paths(vm);
  const run: BootRun = {
    ctx,
    vm,
    image,
    driver: ctx.deps.drivers.get(vm.vmm),
    paths,
    signal: options.signal,
    progress: options.progress,
    handles: emptyHandles(),
  };
  let current = ctx.setState(vm, "starting", null);
  await using stack = new AsyncDisposableStack();
  try {
    // handles.json is written after each acquisition, so a daemon that dies
    // mid-start leaves a reconcile enough to tear down what was made.
    stack.defer(() => ctx.handles.clear(vm));
    for (const step of steps) await step(run, stack);
    current = ctx.setState(current, "running", null);
    stack.move();
    options.progress({ step: "vm.ready", message: `${vm.name} is running (${vm.guestIp})`, status: "done" });
    return current;
  } catch (error) {
    const reason = await describeBootFailure(ctx, error, paths.console);
    ctx.deps.logger.warn("start failed", { vm: vm.name, err: reason });
    await stack
      .disposeAsync()
      .catch((undoError: unknown) =>
        ctx.deps.logger.error("undo after failed start failed", { vm: vm.name, err: String(undoError) }),
      );
    ctx.setState(current, failedState, reason);
    if (isCancelled(error)) throw error;
    // The failed check's hint, both logs (vmm.log is where a disk lock or ENOMEM shows), then the step's own hint.
    const logs = `the VMM's own log is ${paths.vmmLog}; the guest console is ${paths.console} (\`banger vm logs ${vm.name}\`)`;
    const ownHint = error instanceof BangerError ? error.hint : undefined;
    const lead = [run.failedCheck?.hint, logs].filter(Boolean).join("; ");
    const hint = ownHint && ownHint !== run.failedCheck?.hint ? `${lead}\n${ownHint}` : lead;
    throw new BangerError(
      error instanceof BangerError ? error.code : ErrorCode.BOOT_FAILED,
      `VM '${vm.name}' failed to start: ${reason}`,
      { hint, cause: error },
    );
  }
}

async function describeBootFailure(ctx: VmContext, error: unknown, consoleLog: string): Promise<string> {
  if (isCancelled(error)) return "cancelled";
  const message = errorMessage(error);
  const tail = await ctx.deps.files.tail(consoleLog, 1500).catch(() => "");
  return bootFailureSummary(message, tail);
}
