/**
 * A complete `VmServiceDeps` built from fakes, for lifecycle tests and the
 * bench. Real where it is cheap and safe: the SQLite store (on a temp file),
 * the per-VM files (`createVmFiles` over a temp dir), the locks, the IP
 * allocator. Fake (adapters.ts): the VMM driver, host network, root disks,
 * guest access, two capability hooks and image resolution.
 *
 * Every call into a fake adapter is one numbered step (faults.ts); every
 * acquisition and undo lands in one typed event log and a resource ledger
 * (ledger.ts). Controls:
 * - `failAt(k)` / `cancelAt(k, controller)`: a fault or a cancel at the
 *   k-th step from now;
 * - `boots` / `stops`: gates that hold `driver.start` / `driver.stop` of a
 *   VM until released (gates.ts), or `bootDelayMs` for a fixed boot time;
 * - `events.waitFor`: resolves once the log holds enough matching events.
 *
 * Every default of the VM service's deps lives here, so a new dependency of
 * the service changes this one place; `overrides` replaces any of them.
 */
import { mkdirSync, mkdtempSync, rmSync } from "node:fs";
import { join } from "node:path";
import { KeyedLocks, Mutex } from "../../../src/core/concurrency/index.ts";
import { type Config, defaultConfig } from "../../../src/core/config/index.ts";
import { type Layout, resolveLayout } from "../../../src/core/paths/index.ts";
import type { VmmHandle } from "../../../src/core/vmm/contract.ts";
import type { VmServiceDeps } from "../../../src/daemon/vm/index.ts";
import type { ErrorCode } from "../../../src/protocol/index.ts";
import { type ImageRecord, openStore, type Store } from "../../../src/sys/store/index.ts";
import { createMemoryLogger, type LogLine } from "../../helpers/memory-logger.ts";
import {
  type FakeHost,
  fakeDisks,
  fakeFiles,
  fakeGuest,
  fakeHook,
  fakeImages,
  fakeNetwork,
  fakeVmms,
} from "./adapters.ts";
import { Faults } from "./faults.ts";
import { createGate, type Gate } from "./gates.ts";
import { EventLog, type HeldResource, Ledger } from "./ledger.ts";

export type { Gate } from "./gates.ts";
export {
  describeEvents,
  type EventPattern,
  type FakeEvent,
  type HeldResource,
  indexOf,
  type ResourceKind,
} from "./ledger.ts";

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

export interface FakeVmPlatform extends AsyncDisposable {
  deps: VmServiceDeps;
  store: Store;
  layout: Layout;
  config: Config;
  /** The one image in the store, returned by the fake `images.resolve`. */
  image: ImageRecord;
  logLines: LogLine[];
  /** The ordered, typed event log. */
  readonly events: EventLog;
  /** Names of the step calls since the last `failAt`/`cancelAt`/`resetSteps`, in order. */
  readonly steps: readonly string[];
  /** Acquired, not released, sorted by kind then id. */
  held(): HeldResource[];
  /** Held resources that belong to one VM (by id). */
  heldBy(vmId: string): HeldResource[];
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
  /** Closes the store and removes the temp dir. */
  close(): Promise<void>;
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
  const logger = createMemoryLogger();

  const log = new EventLog();
  const ledger = new Ledger(log);
  const faults = new Faults(log);
  const host: FakeHost = { log, ledger, faults, config, layout };
  const boots = createGate();
  const stops = createGate();

  const vmms = fakeVmms(host, {
    boots,
    stops,
    bootDelayMs: options.bootDelayMs,
    isRunning: options.isRunning,
  });
  let ids = 0;
  const deps: VmServiceDeps = {
    store,
    layout,
    config,
    logger,
    images: fakeImages(host, image),
    network: fakeNetwork(host),
    drivers: vmms.drivers,
    census: vmms.census,
    disks: fakeDisks(host),
    files: fakeFiles(host),
    guest: fakeGuest(host),
    hooks:
      options.hooks === false
        ? []
        : [fakeHook(host, "fake-net", "before-boot"), fakeHook(host, "fake-auth", "guest-ready")],
    vmLocks: new KeyedLocks(),
    reservation: new Mutex(),
    now: () => new Date(),
    // 12 hex digits whose first 10 differ between VMs (tap names use them).
    newId: () => `${(++ids).toString(16).padStart(6, "0")}b0b0b0`,
    async tscKhz() {
      faults.step("tscKhz");
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
    events: log,
    get steps() {
      return faults.steps;
    },
    held: () => ledger.held(),
    heldBy: (vmId) => ledger.heldBy(vmId),
    failAt: (k, code) => faults.failAt(k, code),
    cancelAt: (k, controller) => faults.cancelAt(k, controller),
    resetSteps: () => faults.reset(),
    get injected() {
      return faults.injected;
    },
    boots,
    stops,
    close,
    [Symbol.asyncDispose]: close,
  };
}
