/**
 * A complete `VmServiceDeps` built from fakes, for lifecycle tests and the
 * bench. Real where it is cheap and safe: the SQLite store (on a temp file),
 * the per-VM files (`createVmFiles` over a temp dir), the locks, the IP
 * allocator. Fake: the VMM driver, host network, root disks (an empty file;
 * attaching acquires something that detach releases), guest access (exec
 * opens a per-VM SSH session that close ends), two capability hooks and
 * image resolution.
 *
 * Every call into a fake adapter is one numbered "step" of the operation in
 * progress, and every acquisition and undo lands in one ordered event log
 * (`events`) and in a resource ledger (`held()`: acquired minus released).
 * Controls:
 * - `failAt(k)`: the k-th step call from now throws a BangerError;
 * - `cancelAt(k, controller)`: the k-th step call from now aborts the
 *   controller first; every fake that gets a signal then throws CANCELLED;
 * - `boots` / `stops`: gates that hold `driver.start` / `driver.stop` of a VM
 *   until released (or `bootDelayMs` for a fixed boot time);
 * - `waitForEvents`: resolves once the log holds enough matching events.
 *
 * Every default of the VM service's deps lives here, so a new dependency of
 * the service changes this one file; `overrides` replaces any of them.
 */
import { existsSync, mkdirSync, mkdtempSync, rmSync } from "node:fs";
import { rm, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { cancelled, sleep } from "../../src/core/async/index.ts";
import { KeyedLocks, Mutex } from "../../src/core/concurrency/index.ts";
import { type Config, defaultConfig } from "../../src/core/config/index.ts";
import type { Logger } from "../../src/core/log/index.ts";
import { allocateGuestIp, parseSubnet } from "../../src/core/network/index.ts";
import { type Layout, resolveLayout, vmPaths } from "../../src/core/paths/index.ts";
import type { VmmDriver, VmmHandle } from "../../src/core/vmm/contract.ts";
import type {
  GuestAccess,
  VmDisks,
  VmFiles,
  VmHook,
  VmmDrivers,
  VmNetwork,
  VmServiceDeps,
} from "../../src/daemon/vm/index.ts";
import { BangerError, ErrorCode } from "../../src/protocol/index.ts";
import { type ImageRecord, openStore, type Store } from "../../src/sys/store/index.ts";
import { createVmFiles } from "../../src/sys/vmfiles/index.ts";
import { createMemoryLogger, type LogLine } from "../helpers/memory-logger.ts";

export interface FakeVmPlatformOptions {
  /** Each boot takes this long (a timer, abortable); 0 = instant. Gates apply on top. */
  bootDelayMs?: number;
  /** Replaces the fake driver's liveness (the bench passes real /proc liveness). */
  isRunning?: (handle: VmmHandle) => Promise<boolean>;
  /** The temp dir (BANGER_HOME) is made under this directory; default /tmp. */
  parentDir?: string;
  /** Adjusts the default config before the deps are built. */
  configure?: (config: Config) => void;
  /**
   * Two recording capability hooks by default ("fake-net" before boot,
   * "fake-auth" once the guest answers); false for none.
   */
  hooks?: boolean;
  /** Replaces any default dependency (applied last). */
  overrides?: Partial<VmServiceDeps>;
}

/** Holds an operation of a VM (by id) until released. */
export interface Gate {
  /** From now on, every passing VM waits until released. */
  hold(): void;
  /** Lets one VM pass (now, or when it arrives). */
  release(vmId: string): void;
  /** Lets every waiting VM pass and stops holding. */
  releaseAll(): void;
  /** VM ids waiting at the gate. */
  readonly waiting: readonly string[];
}

export interface FakeVmPlatform extends AsyncDisposable {
  deps: VmServiceDeps;
  store: Store;
  layout: Layout;
  config: Config;
  /** The one image in the store, returned by the fake `images.resolve`. */
  image: ImageRecord;
  logLines: LogLine[];
  /** Ordered log: "boot-start <vmId>", "tap-create <tap>", "dir-make <path>", … */
  readonly events: readonly string[];
  /** Names of the step calls since the last `failAt`/`cancelAt`/`resetSteps`, in order. */
  readonly steps: readonly string[];
  /** Acquired, not released: "tap …", "vmm …", "disk …", "attach …", "hook …", "dir …", "handles …", "ssh …". */
  held(): string[];
  /** Held resources that belong to one VM (by id). */
  heldBy(vmId: string): string[];
  /** The k-th step call from now (1-based) throws a BangerError with `code`. */
  failAt(k: number, code?: ErrorCode): void;
  /** The k-th step call from now (1-based) aborts `controller` before it runs. */
  cancelAt(k: number, controller: AbortController): void;
  /** Disarms faults and restarts step counting. */
  resetSteps(): void;
  /** Whether the armed fault or cancel has fired, and at which step name. */
  readonly injected: { step: string; index: number } | null;
  boots: Gate;
  stops: Gate;
  /** Resolves once at least `count` events satisfy `match` (already logged ones count). */
  waitForEvents(match: (event: string) => boolean, count?: number): Promise<void>;
  /** Closes the store and removes the temp dir. */
  close(): Promise<void>;
}

const FIRST_PID = 100_000;

function createGate(): Gate & { pass(vmId: string, step: string, signal?: AbortSignal): Promise<void> } {
  let holding = false;
  const waiting = new Map<string, () => void>();
  const passed = new Set<string>();
  const gate = {
    hold() {
      holding = true;
    },
    release(vmId: string) {
      const resolve = waiting.get(vmId);
      waiting.delete(vmId);
      if (resolve) resolve();
      else passed.add(vmId);
    },
    releaseAll() {
      holding = false;
      for (const resolve of waiting.values()) resolve();
      waiting.clear();
    },
    get waiting() {
      return [...waiting.keys()];
    },
    /** Waits while held; an abort rejects with CANCELLED. */
    pass(vmId: string, step: string, signal?: AbortSignal): Promise<void> {
      if (!holding || passed.delete(vmId)) return Promise.resolve();
      return new Promise<void>((resolve, reject) => {
        const onAbort = () => {
          waiting.delete(vmId);
          reject(cancelled(undefined, step));
        };
        waiting.set(vmId, () => {
          signal?.removeEventListener("abort", onAbort);
          resolve();
        });
        signal?.addEventListener("abort", onAbort, { once: true });
      });
    },
  };
  return gate;
}

export function createFakeVmPlatform(options: FakeVmPlatformOptions = {}): FakeVmPlatform {
  // Short: Unix socket paths under it must stay within 108 bytes.
  const home = mkdtempSync(join(options.parentDir ?? "/tmp", "bvp-"));
  const layout = resolveLayout({ env: { BANGER_HOME: home }, uid: 0, homeDir: "/" });
  mkdirSync(layout.stateDir, { recursive: true, mode: 0o700 });
  mkdirSync(layout.vmsDir, { recursive: true, mode: 0o700 });
  const config = defaultConfig();
  options.configure?.(config);
  const store = openStore(layout.dbFile);
  const imageDir = join(layout.imagesDir, "fake0000000000");
  const image: ImageRecord = {
    id: "img-fake-0001",
    name: config.vm.default_image,
    kind: "debian",
    dir: imageDir,
    kernel: join(imageDir, "vmlinuz"),
    initrd: join(imageDir, "initrd.gz"),
    rootfs: join(imageDir, "rootfs.ext4"),
    sizeBytes: 1024 ** 3,
    createdAt: new Date(0).toISOString(),
  };
  store.insertImage(image);
  const logger: Logger & { lines: LogLine[] } = createMemoryLogger();

  const events: string[] = [];
  const waiters: { match: (event: string) => boolean; count: number; resolve: () => void }[] = [];
  const record = (event: string) => {
    events.push(event);
    for (const waiter of [...waiters]) {
      if (events.filter(waiter.match).length >= waiter.count) {
        waiters.splice(waiters.indexOf(waiter), 1);
        waiter.resolve();
      }
    }
  };

  /** Resource ledger: keys of what is acquired and not yet released. */
  const held = new Set<string>();
  const acquire = (key: string, event: string) => {
    held.add(key);
    record(event);
  };
  const release = (key: string, event: string) => {
    held.delete(key);
    record(event);
  };

  // Fault injection.
  let steps: string[] = [];
  let fault: { k: number; code: ErrorCode } | null = null;
  let cancel: { k: number; controller: AbortController } | null = null;
  let injected: { step: string; index: number } | null = null;
  /** Every fake adapter call goes through here first; true when it is the cancel point. */
  const step = (name: string): boolean => {
    steps.push(name);
    const index = steps.length;
    if (fault && index === fault.k) {
      injected = { step: name, index };
      record(`fault ${name}`);
      throw new BangerError(fault.code, `injected fault at step ${index} (${name})`);
    }
    if (cancel && index === cancel.k) {
      injected = { step: name, index };
      record(`cancel ${name}`);
      cancel.controller.abort(cancelled(undefined, name));
      return true;
    }
    return false;
  };
  const checkSignal = (name: string, signal?: AbortSignal) => {
    if (signal?.aborted) throw cancelled(undefined, name);
  };

  const subnet = parseSubnet(config.network.subnet);
  const network: VmNetwork = {
    gateway: subnet.gateway,
    prefixLength: subnet.prefixLength,
    allocateIp(used) {
      step("network.allocateIp");
      return allocateGuestIp(subnet, used);
    },
    async ensureBridge(signal) {
      step("network.ensureBridge");
      checkSignal("network.ensureBridge", signal);
      record(`bridge-ensure ${config.network.bridge}`);
    },
    async createTap(tap, signal) {
      step("network.createTap");
      checkSignal("network.createTap", signal);
      acquire(`tap ${tap}`, `tap-create ${tap}`);
    },
    async deleteTap(tap) {
      step("network.deleteTap");
      release(`tap ${tap}`, `tap-delete ${tap}`);
    },
    async removeLeftoverTaps(owned) {
      step("network.removeLeftoverTaps");
      const removed: string[] = [];
      for (const key of [...held]) {
        const tap = key.startsWith("tap ") ? key.slice(4) : undefined;
        if (tap === undefined || owned.has(tap)) continue;
        release(key, `tap-delete ${tap}`);
        removed.push(tap);
      }
      return removed;
    },
  };

  const diskFile = (vmDir: string, vmm: string) => join(vmDir, vmm === "qemu" ? "root.qcow2" : "root.raw");
  const disks: VmDisks = {
    async create(disk) {
      step("disks.create");
      checkSignal("disks.create", disk.signal);
      const file = diskFile(disk.vmDir, disk.vmm);
      // A real (empty) file, so `locate` finds it the way the real adapter does.
      await writeFile(file, "");
      acquire(`disk ${file}`, `disk-create ${file}`);
      return disk.vmm === "qemu"
        ? { strategy: "qcow2-overlay", file, format: "qcow2" }
        : { strategy: "sparse-copy", file, format: "raw" };
    },
    async locate(vmDir) {
      step("disks.locate");
      for (const [name, strategy, format] of [
        ["root.qcow2", "qcow2-overlay", "qcow2"],
        ["root.raw", "sparse-copy", "raw"],
      ] as const) {
        const file = join(vmDir, name);
        if (existsSync(file)) return { strategy, file, format };
      }
      return undefined;
    },
    // Attaching acquires something (like dm-snapshot's loop devices), so detach is accounted for.
    async attach(attach) {
      step("disks.attach");
      checkSignal("disks.attach", attach.signal);
      acquire(`attach ${attach.disk.file}`, `disk-attach ${attach.disk.file}`);
      return { path: attach.disk.file, handles: { fakeAttached: attach.disk.file } };
    },
    async detach(handles) {
      step("disks.detach");
      const file = handles.fakeAttached;
      if (file !== undefined) release(`attach ${file}`, `disk-detach ${file}`);
    },
    async remove(disk) {
      step("disks.remove");
      await rm(disk.file, { force: true });
      release(`disk ${disk.file}`, `disk-remove ${disk.file}`);
    },
    async grow(disk, sizeBytes) {
      step("disks.grow");
      record(`disk-grow ${disk.file} ${sizeBytes}`);
    },
  };

  /** A capability hook whose start acquires a per-VM resource and whose stop releases it. */
  const fakeHook = (name: string, phase: VmHook["phase"]): VmHook => ({
    name,
    phase,
    async start(context) {
      step(`hook.${name}.start`);
      checkSignal(`hook.${name}.start`, context.signal);
      acquire(`hook ${name} ${context.vmId}`, `hook-start ${name} ${context.vmId}`);
    },
    async stop(context) {
      step(`hook.${name}.stop`);
      if (held.has(`hook ${name} ${context.vmId}`)) {
        release(`hook ${name} ${context.vmId}`, `hook-stop ${name} ${context.vmId}`);
      }
    },
  });

  const real = createVmFiles();
  const files: VmFiles = {
    async makeDir(dir) {
      step("files.makeDir");
      await real.makeDir(dir);
      acquire(`dir ${dir}`, `dir-make ${dir}`);
    },
    async removeDir(dir) {
      step("files.removeDir");
      await real.removeDir(dir);
      // Files inside go with the directory; a disk needs its own undo (it may hold more than a file).
      for (const key of [...held]) {
        if (key.startsWith("handles ") && key.slice(8).startsWith(`${dir}/`)) {
          release(key, `handles-remove ${key.slice(8)} (with dir)`);
        }
      }
      release(`dir ${dir}`, `dir-remove ${dir}`);
    },
    async readHandles(path) {
      step("files.readHandles");
      return real.readHandles(path);
    },
    async writeHandles(path, handles) {
      step("files.writeHandles");
      await real.writeHandles(path, handles);
      acquire(`handles ${path}`, `handles-write ${path}`);
    },
    async removeFile(path) {
      step("files.removeFile");
      await real.removeFile(path);
      if (held.has(`handles ${path}`)) release(`handles ${path}`, `handles-remove ${path}`);
      else record(`file-remove ${path}`);
    },
    async rotate(path) {
      step("files.rotate");
      await real.rotate(path);
    },
    async tail(path, bytes) {
      step("files.tail");
      return real.tail(path, bytes);
    },
    async exists(path) {
      step("files.exists");
      return real.exists(path);
    },
    async size(path) {
      step("files.size");
      return real.size(path);
    },
    async stream(path, streamOptions) {
      step("files.stream");
      return real.stream(path, streamOptions);
    },
  };

  const boots = createGate();
  const stops = createGate();
  let nextPid = FIRST_PID;
  /** Live fake VMM processes: pid -> VM id. */
  const live = new Map<number, string>();
  const ending = (handle: VmmHandle, how: string) => {
    const vmId = live.get(handle.pid);
    if (vmId === undefined) return;
    live.delete(handle.pid);
    release(`vmm ${vmId} pid=${handle.pid}`, `vmm-${how} ${vmId} pid=${handle.pid}`);
  };
  const driver: VmmDriver = {
    kind: "qemu",
    features: {
      diskFormats: ["qcow2", "raw"],
      kernelFormats: ["bzImage"],
      pauseResume: true,
      vsock: false,
      softwareEmulation: true,
    },
    async start(spec, signal) {
      step("driver.start");
      record(`boot-start ${spec.vmId}`);
      try {
        if (options.bootDelayMs) {
          await sleep(options.bootDelayMs, signal).catch(() => undefined);
        }
        await boots.pass(spec.vmId, "driver.start", signal);
        checkSignal("driver.start", signal);
      } catch (error) {
        record(`boot-abort ${spec.vmId}`);
        throw error;
      }
      const pid = nextPid++;
      live.set(pid, spec.vmId);
      acquire(`vmm ${spec.vmId} pid=${pid}`, `vmm-start ${spec.vmId} pid=${pid}`);
      record(`boot-end ${spec.vmId}`);
      return { pid, pidStartTicks: pid * 10, controlSocket: spec.controlSocket };
    },
    async stop(handle) {
      step("driver.stop");
      const vmId = live.get(handle.pid) ?? "?";
      record(`stop-begin ${vmId}`);
      await stops.pass(vmId, "driver.stop");
      ending(handle, "stop");
    },
    async kill(handle) {
      step("driver.kill");
      ending(handle, "kill");
    },
    async isRunning(handle) {
      step("driver.isRunning");
      if (options.isRunning) return options.isRunning(handle);
      return live.has(handle.pid) && handle.pidStartTicks === handle.pid * 10;
    },
    async pause(handle) {
      step("driver.pause");
      record(`pause ${live.get(handle.pid) ?? "?"}`);
    },
    async resume(handle) {
      step("driver.resume");
      record(`resume ${live.get(handle.pid) ?? "?"}`);
    },
    async reattach(handle) {
      step("driver.reattach");
      record(`reattach ${live.get(handle.pid) ?? "?"}`);
      return "running";
    },
  };
  const drivers: VmmDrivers = {
    // A lookup, not a platform call: it is not a numbered step.
    get(kind) {
      if (kind !== "qemu") throw new BangerError(ErrorCode.TOOL_MISSING, `no fake ${kind} driver`);
      return driver;
    },
    async choose(requested) {
      step("drivers.choose");
      if (requested === "firecracker") {
        throw new BangerError(ErrorCode.TOOL_MISSING, "firecracker is not available (fake platform)");
      }
      return "qemu";
    },
  };

  const sessions = new Set<string>();
  const guest: GuestAccess = {
    user: "root",
    async identityFile() {
      step("guest.identityFile");
      return join(layout.sshDir, "id_ed25519");
    },
    async publicKey() {
      step("guest.publicKey");
      return "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFakeFakeFakeFakeFakeFakeFakeFakeFakeFakeFake banger";
    },
    async waitForBanner(banner) {
      step("guest.waitForBanner");
      checkSignal("guest.waitForBanner", banner.signal);
      if (!(await banner.stillAlive())) {
        throw new BangerError(ErrorCode.BOOT_FAILED, `the VMM serving ${banner.ip} exited during boot`);
      }
      record(`banner ${banner.ip}`);
    },
    async pinHostKey(pin) {
      step("guest.pinHostKey");
      await writeFile(pin.knownHostsFile, `${pin.ip} ssh-ed25519 AAAAfake\n`, { mode: 0o600 });
      record(`hostkey-pin ${pin.ip}`);
    },
    async exec(target, exec) {
      const cancelledHere = step("guest.exec");
      // Aborted before the call: the real adapter spawns nothing.
      if (!cancelledHere) checkSignal("guest.exec", exec.signal);
      // Like the real adapter, the ControlMaster comes up before the command runs;
      // a cancel that arrives during the command leaves it up.
      if (!sessions.has(target.vmId)) {
        sessions.add(target.vmId);
        acquire(`ssh ${target.vmId}`, `ssh-open ${target.vmId}`);
      }
      checkSignal("guest.exec", exec.signal);
      record(`exec ${target.vmId} ${exec.argv.join(" ")}`);
      return { exitCode: 0, signal: null };
    },
    async close(target) {
      step("guest.close");
      if (sessions.delete(target.vmId)) release(`ssh ${target.vmId}`, `ssh-close ${target.vmId}`);
    },
    async openTcp() {
      step("guest.openTcp");
      throw new BangerError(ErrorCode.GUEST_UNREACHABLE, "the fake platform has no guest network");
    },
  };

  let ids = 0;
  const deps: VmServiceDeps = {
    store,
    layout,
    config,
    logger,
    images: {
      async resolve(ref, resolveOptions) {
        step("images.resolve");
        checkSignal("images.resolve", resolveOptions?.signal);
        if (ref !== image.name && ref !== image.id) {
          throw new BangerError(ErrorCode.IMAGE_NOT_FOUND, `no image '${ref}' (fake platform)`);
        }
        return image;
      },
      async vmlinux(vmImage, vmlinuxOptions) {
        step("images.vmlinux");
        checkSignal("images.vmlinux", vmlinuxOptions?.signal);
        return `${vmImage.kernel}.vmlinux`;
      },
    },
    network,
    drivers,
    disks,
    files,
    guest,
    // The VMMs /proc would show: every live fake VMM, whatever handles.json says.
    census: {
      async list() {
        return [...live].map(([pid, vmId]) => ({
          vmId,
          handle: {
            pid,
            pidStartTicks: pid * 10,
            controlSocket: join(vmPaths(layout, vmId).dir, "qmp.sock"),
          },
        }));
      },
      async kill(handle) {
        ending(handle, "stray-kill");
      },
    },
    hooks:
      options.hooks === false
        ? []
        : [fakeHook("fake-net", "before-boot"), fakeHook("fake-auth", "guest-ready")],
    vmLocks: new KeyedLocks(),
    reservation: new Mutex(),
    now: () => new Date(),
    // 12 hex digits whose first 10 differ between VMs (tap names use them).
    newId: () => `${(++ids).toString(16).padStart(6, "0")}b0b0b0`,
    async tscKhz() {
      step("tscKhz");
      return 2_000_000;
    },
    ...options.overrides,
  };

  let closed = false;
  const close = async () => {
    if (closed) return;
    closed = true;
    boots.releaseAll();
    stops.releaseAll();
    store.close();
    rmSync(home, { recursive: true, force: true });
  };

  return {
    deps,
    store,
    layout,
    config,
    image,
    logLines: logger.lines,
    get events() {
      return events;
    },
    get steps() {
      return steps;
    },
    held: () => [...held].sort(),
    heldBy: (vmId) => [...held].filter((key) => key.includes(vmId.slice(0, 10))).sort(),
    failAt(k, code = ErrorCode.NETWORK_FAILED) {
      steps = [];
      injected = null;
      cancel = null;
      fault = { k, code };
    },
    cancelAt(k, controller) {
      steps = [];
      injected = null;
      fault = null;
      cancel = { k, controller };
    },
    resetSteps() {
      steps = [];
      injected = null;
      fault = null;
      cancel = null;
    },
    get injected() {
      return injected;
    },
    boots,
    stops,
    waitForEvents(match, count = 1) {
      if (events.filter(match).length >= count) return Promise.resolve();
      return new Promise<void>((resolve) => waiters.push({ match, count, resolve }));
    },
    close,
    [Symbol.asyncDispose]: close,
  };
}
