import assert from "node:assert/strict";
import {
  chmodSync,
  chownSync,
  copyFileSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  writeFileSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { basename, join } from "node:path";
import { afterEach, beforeEach, describe, it } from "node:test";
import { Mutex } from "../../src/core/concurrency/index.ts";
import { silentLogger } from "../../src/core/log/index.ts";
import { type Layout, resolveLayout } from "../../src/core/paths/index.ts";
import type { VmRecord } from "../../src/core/vm/index.ts";
import { createImageService, type ImageFs, type ImageServiceDeps } from "../../src/daemon/image/index.ts";
import { BangerError, ErrorCode, type ProgressEvent } from "../../src/protocol/index.ts";
import { createNodeFs } from "../../src/sys/fs/index.ts";
import { createBuildCacheChecks } from "../../src/sys/image-cache/index.ts";
import type { Runner, RunOptions } from "../../src/sys/runner/index.ts";
import { openStore, type Store } from "../../src/sys/store/index.ts";
import { FakeRunner } from "../fakes/runner.ts";

const STEPS = ["rootfs", "customize", "kernel", "initrd", "mkfs", "cleanup"] as const;

/** Which build tool an argv is, in the order the plan runs them. */
function stepOf(argv: readonly string[]): string | undefined {
  if (argv[0] === "mmdebstrap") return "rootfs";
  if (argv[0] === "sh")
    return { customize: "customize", "export-boot": "kernel", mkinitramfs: "initrd" }[basename(argv[1]!)];
  if (argv[0] === "mkfs.ext4") return "mkfs";
  if (argv[0] === "rm" && argv.at(-1)!.endsWith("/rootfs")) return "cleanup";
  if (argv[0] === "cp") return "cache";
  return undefined;
}

interface Harness {
  root: string;
  layout: Layout;
  store: Store;
  runner: FakeRunner;
  events: ProgressEvent[];
  deps: ImageServiceDeps;
  /** Per-step hook run before the step's simulated effect; may throw. */
  hooks: Map<string, (options: RunOptions) => void | Promise<void>>;
  kernelBytes: string;
  /** bzImage paths passed to the fake extractor, in call order. */
  extractions: string[];
}

/** A FakeRunner whose build tools really create (and remove) files, so the service's fs work is real. */
function simulateTools(h: Harness): void {
  const hooked = async (argv: readonly string[], options: RunOptions) => {
    const step = stepOf(argv);
    if (step) await h.hooks.get(step)?.(options);
  };
  h.runner
    .on(["mmdebstrap"], async (argv, options) => {
      await hooked(argv, options);
      const tree = argv.at(-2)!;
      mkdirSync(join(tree, "boot"), { recursive: true });
      writeFileSync(join(tree, "boot", "vmlinuz-6.1.0-1-cloud-amd64"), h.kernelBytes);
      return {};
    })
    .on(["sh", /\/customize$/], async (argv, options) => {
      await hooked(argv, options);
      return {};
    })
    .on(["sh", /\/export-boot$/], async (argv, options) => {
      await hooked(argv, options);
      copyFileSync(join(argv[2]!, "boot", "vmlinuz-6.1.0-1-cloud-amd64"), join(argv[3]!, "vmlinuz"));
      writeFileSync(join(argv[3]!, "packages.txt"), "bash 5.2\nopenssh-server 9.2\n");
      return {};
    })
    .on(["sh", /\/mkinitramfs$/], async (argv, options) => {
      await hooked(argv, options);
      writeFileSync(argv[4]!, "initrd");
      return {};
    })
    .on(["mkfs.ext4"], async (argv, options) => {
      await hooked(argv, options);
      writeFileSync(argv[7]!, Buffer.alloc(4096));
      return {};
    })
    .on(["rm", "-rf", "--one-file-system", "--"], async (argv, options) => {
      await hooked(argv, options);
      rmSync(argv[4]!, { recursive: true, force: true });
      return {};
    })
    .on(["cp", "--sparse=always", "--"], async (argv, options) => {
      await hooked(argv, options);
      const target = argv.at(-1)!;
      for (const source of argv.slice(3, -1)) copyFileSync(source, join(target, basename(source)));
      return {};
    });
}

function makeHarness(options: { fs?: ImageFs; buildCacheDir?: string } = {}): Harness {
  const root = mkdtempSync(join(tmpdir(), "banger-image-"));
  const layout = resolveLayout({ env: { BANGER_HOME: root }, uid: 0, homeDir: root });
  mkdirSync(layout.stateDir, { recursive: true });
  const guestFilesDir = join(root, "guest");
  mkdirSync(guestFilesDir);
  writeFileSync(join(guestFilesDir, "banger-init"), "#!/bin/sh\n");
  writeFileSync(join(guestFilesDir, "customize"), "#!/bin/sh\n");
  const store = openStore(":memory:");
  const runner = new FakeRunner();
  const events: ProgressEvent[] = [];
  let ids = 0;
  const h: Harness = {
    root,
    layout,
    store,
    runner,
    events,
    hooks: new Map(),
    kernelBytes: "kernel-v1",
    extractions: [],
    deps: {
      store,
      runner,
      layout,
      logger: silentLogger,
      publishMutex: new Mutex(),
      now: () => new Date("2026-01-02T03:04:05Z"),
      newId: () => `id${++ids}`,
      guestFilesDir,
      fs: options.fs ?? createNodeFs(),
      buildCacheDir: options.buildCacheDir,
      buildCacheChecks: options.buildCacheDir
        ? createBuildCacheChecks({ cacheDir: options.buildCacheDir, uid: process.getuid?.() ?? 0 })
        : undefined,
      extractVmlinux: async (bzImage, out) => {
        h.extractions.push(bzImage);
        await new Promise((resolve) => setTimeout(resolve, 5));
        writeFileSync(out, `elf-of:${readFileSync(bzImage, "utf8")}`);
      },
    },
  };
  simulateTools(h);
  return h;
}

function progress(h: Harness) {
  return (event: ProgressEvent) => h.events.push(event);
}

function stagingEntries(h: Harness): string[] {
  return existsSync(h.layout.imageStagingDir) ? readdirSync(h.layout.imageStagingDir) : [];
}

function imageDirs(h: Harness): string[] {
  return existsSync(h.layout.imagesDir)
    ? readdirSync(h.layout.imagesDir).filter((name) => name !== ".staging")
    : [];
}

function addVm(store: Store, imageId: string): void {
  const vm: VmRecord = {
    id: "vm1",
    name: "web",
    imageId,
    imageName: "debian-bookworm",
    vmm: "qemu",
    cpus: 1,
    memoryMib: 512,
    diskGib: 2,
    guestIp: "10.77.0.2",
    mac: "52:54:00:00:00:02",
    state: "stopped",
    lastError: null,
    createdAt: "2026-01-01T00:00:00Z",
    updatedAt: "2026-01-01T00:00:00Z",
  };
  store.insertVm(vm);
}

describe("image service: building the default image", () => {
  let h: Harness;
  beforeEach(() => {
    h = makeHarness();
  });
  afterEach(() => {
    h.store.close();
    rmSync(h.root, { recursive: true, force: true });
  });

  it("runs every step in order, reports progress and publishes one row and one directory", async () => {
    const service = createImageService(h.deps);
    const image = await service.resolve("debian-bookworm", { progress: progress(h) });

    assert.deepEqual(
      h.runner.calls.map((call) => stepOf(call.argv)),
      [...STEPS],
    );
    assert.ok(
      h.runner.calls.every((call) => call.options.signal instanceof AbortSignal),
      "every step is cancellable",
    );
    const steps = h.events.map((event) => `${event.step}:${event.status}`);
    assert.deepEqual(steps, [
      ...STEPS.flatMap((step) => [`image.${step}:start`, `image.${step}:done`]),
      "image.publish:start",
      "image.publish:done",
    ]);

    assert.equal(image.name, "debian-bookworm");
    assert.equal(image.kind, "debian");
    assert.match(basename(image.dir), /^[0-9a-f]{16}$/);
    assert.equal(image.dir, join(h.layout.imagesDir, basename(image.dir)));
    assert.equal(image.kernel, join(image.dir, "vmlinuz"));
    assert.equal(image.rootfs, join(image.dir, "rootfs.ext4"));
    assert.equal(image.sizeBytes, 4096);
    assert.deepEqual(readdirSync(image.dir).sort(), [
      "initrd.gz",
      "manifest.json",
      "packages.txt",
      "rootfs.ext4",
      "vmlinuz",
    ]);
    const manifest = JSON.parse(readFileSync(join(image.dir, "manifest.json"), "utf8"));
    assert.equal(manifest.digest.slice(0, 16), basename(image.dir));
    assert.equal(manifest.builtFrom, "mmdebstrap");
    assert.equal(manifest.packages, 2);
    assert.deepEqual(stagingEntries(h), []);
    assert.deepEqual(service.list(), [image]);
    assert.deepEqual(service.get("debian-bookworm"), image);
    assert.deepEqual(service.get(image.id), image);

    h.runner.calls.length = 0;
    assert.deepEqual(await service.resolve("debian-bookworm"), image, "a present image is returned as it is");
    assert.equal(h.runner.calls.length, 0);
  });

  for (const [index, failing] of STEPS.entries()) {
    it(`leaves nothing behind when step ${index + 1} (${failing}) fails`, async () => {
      h.hooks.set(failing, () => {
        throw new Error(`${failing} blew up`);
      });
      const service = createImageService(h.deps);
      await assert.rejects(service.buildDefault({ progress: progress(h) }), (error: BangerError) => {
        assert.equal(error.code, ErrorCode.IMAGE_BUILD_FAILED);
        assert.match(error.message, new RegExp(`step '${failing}'.*${failing} blew up`));
        return true;
      });
      assert.deepEqual(
        h.runner.calls.map((call) => stepOf(call.argv)).slice(0, index + 1),
        STEPS.slice(0, index + 1),
        "no step runs after the failing one",
      );
      assert.deepEqual(h.events.at(-1), {
        step: `image.${failing}`,
        message: h.events.at(-1)!.message,
        status: "failed",
      });
      assert.deepEqual(stagingEntries(h), []);
      assert.deepEqual(imageDirs(h), []);
      assert.deepEqual(h.store.listImages(), []);
    });

    it(`leaves nothing behind when cancelled during step ${index + 1} (${failing})`, async () => {
      const controller = new AbortController();
      h.hooks.set(failing, (options) => {
        controller.abort(new Error("user pressed ^C"));
        assert.equal(options.signal?.aborted, true, "the step's own signal fires");
        throw new BangerError(ErrorCode.CANCELLED, "cancelled");
      });
      const service = createImageService(h.deps);
      await assert.rejects(service.resolve("debian-bookworm", { signal: controller.signal }), {
        code: ErrorCode.CANCELLED,
      });
      const next = STEPS[index + 1];
      assert.equal(
        next === undefined ? 0 : h.runner.calls.filter((call) => stepOf(call.argv) === next).length,
        0,
        "the next step never starts",
      );
      assert.deepEqual(stagingEntries(h), []);
      assert.deepEqual(imageDirs(h), []);
      assert.deepEqual(h.store.listImages(), []);
    });
  }

  it("runs only the download step through the download launcher", async () => {
    const seen: string[][] = [];
    const launcher = ["nsenter", "--net=/proc/1/ns/net", "--"];
    const recording: Runner = {
      run: (argv, options) => {
        seen.push([...argv]);
        return h.runner.run(argv[0] === "nsenter" ? argv.slice(launcher.length) : argv, options);
      },
    };
    const service = createImageService({ ...h.deps, runner: recording, downloadLauncher: launcher });
    await service.resolve("debian-bookworm", { progress: progress(h) });
    assert.deepEqual(seen[0]!.slice(0, 4), [...launcher, "mmdebstrap"]);
    assert.ok(seen.slice(1).every((argv) => argv[0] !== "nsenter"));
  });

  it("leaves nothing behind when the row insert fails at publish", async () => {
    const failingStore: Store = Object.create(h.store);
    failingStore.insertImage = () => {
      throw new Error("disk full");
    };
    const service = createImageService({ ...h.deps, store: failingStore });
    await assert.rejects(service.buildDefault(), /disk full/);
    assert.deepEqual(stagingEntries(h), []);
    assert.deepEqual(imageDirs(h), []);
    assert.deepEqual(h.store.listImages(), []);
  });

  it("publishes only while holding the publish mutex", async () => {
    const service = createImageService(h.deps);
    const release = await h.deps.publishMutex.acquire();
    let settled = false;
    const build = service.buildDefault({ progress: progress(h) }).finally(() => {
      settled = true;
    });
    while (!h.events.some((event) => event.step === "image.publish"))
      await new Promise((r) => setImmediate(r));
    for (let i = 0; i < 20; i++) await new Promise((r) => setImmediate(r));
    assert.equal(settled, false);
    assert.deepEqual(h.store.listImages(), [], "no row while the mutex is held elsewhere");
    release();
    await build;
    assert.equal(h.store.listImages().length, 1);
  });

  it("shares one build between concurrent resolves", async () => {
    let releaseRootfs!: () => void;
    const gate = new Promise<void>((resolve) => {
      releaseRootfs = resolve;
    });
    h.hooks.set("rootfs", () => gate);
    const service = createImageService(h.deps);
    const seen: string[][] = [[], [], []];
    const resolves = seen.map((events) =>
      service.resolve("debian-bookworm", {
        progress: (event) => events.push(`${event.step}:${event.status}`),
      }),
    );
    await new Promise((r) => setImmediate(r));
    releaseRootfs();
    const images = await Promise.all(resolves);
    assert.equal(h.runner.calls.filter((call) => call.argv[0] === "mmdebstrap").length, 1);
    assert.equal(new Set(images.map((image) => image.id)).size, 1);
    for (const events of seen)
      assert.ok(events.includes("image.publish:done"), "every caller sees the progress");
    assert.equal(h.store.listImages().length, 1);
  });

  it("keeps a shared build going when one of its callers cancels, and stops it when all do", async () => {
    let releaseRootfs!: () => void;
    h.hooks.set("rootfs", (options) => {
      return new Promise<void>((resolve, reject) => {
        releaseRootfs = resolve;
        options.signal?.addEventListener("abort", () =>
          reject(new BangerError(ErrorCode.CANCELLED, "cancelled")),
        );
      });
    });
    const service = createImageService(h.deps);
    const first = new AbortController();
    const second = new AbortController();
    const a = service.resolve("debian-bookworm", { signal: first.signal });
    const b = service.resolve("debian-bookworm", { signal: second.signal });
    while (!releaseRootfs) await new Promise((r) => setImmediate(r));
    first.abort();
    await assert.rejects(a, { code: ErrorCode.CANCELLED });
    assert.equal(h.runner.calls[0]!.options.signal?.aborted, false, "the other caller still wants the image");
    second.abort();
    await assert.rejects(b, { code: ErrorCode.CANCELLED });
    assert.equal(h.runner.calls[0]!.options.signal?.aborted, true);
    assert.deepEqual(stagingEntries(h), [], "the last caller returns after the unwinding");
    assert.deepEqual(h.store.listImages(), []);
  });

  it("refuses to rebuild without force, and with force only while no VM uses the image", async () => {
    const service = createImageService(h.deps);
    const first = await service.buildDefault();
    await assert.rejects(service.buildDefault(), { code: ErrorCode.BAD_STATE });

    addVm(h.store, first.id);
    h.kernelBytes = "kernel-v2";
    const callsBefore = h.runner.calls.length;
    await assert.rejects(service.buildDefault({ force: true }), {
      code: ErrorCode.BAD_STATE,
      message: /used by 1 VM/,
    });
    assert.equal(h.runner.calls.length, callsBefore, "refused before building anything");
    assert.deepEqual(h.store.listImages(), [first]);
    assert.deepEqual(imageDirs(h), [basename(first.dir)]);
    assert.deepEqual(stagingEntries(h), []);

    h.store.deleteVm("vm1");
    const second = await service.buildDefault({ force: true });
    assert.notEqual(second.dir, first.dir, "new content, new directory");
    assert.deepEqual(h.store.listImages(), [second]);
    assert.deepEqual(imageDirs(h), [basename(second.dir)], "the old directory is gone");

    const third = await service.buildDefault({ force: true });
    assert.equal(third.dir, second.dir, "same content, same directory, replaced in place");
    assert.deepEqual(h.store.listImages(), [third]);
    assert.ok(existsSync(third.rootfs));
    assert.deepEqual(stagingEntries(h), []);
  });

  it("builds the configured default when the catalog has it, else the catalog's default", async () => {
    const minimal = await createImageService({
      ...h.deps,
      defaultImage: "debian-bookworm-minimal",
    }).buildDefault();
    assert.equal(minimal.name, "debian-bookworm-minimal");
    const include = (call: { argv: readonly string[] }) =>
      call.argv.find((arg) => arg.startsWith("--include="));
    const minimalBuild = h.runner.calls.find((call) => call.argv[0] === "mmdebstrap");
    assert.ok(minimalBuild && !include(minimalBuild)!.includes("build-essential"), "the small package set");
    // Fake builds of both recipes have the same content (so the same digest): one at a time.
    await createImageService(h.deps).delete(minimal.name);
    h.runner.calls.length = 0;
    const developer = await createImageService({ ...h.deps, defaultImage: "alpine:3" }).buildDefault();
    assert.equal(developer.name, "debian-bookworm", "an OCI default is pulled, never built");
    const developerBuild = h.runner.calls.find((call) => call.argv[0] === "mmdebstrap");
    assert.ok(developerBuild && include(developerBuild)!.includes("build-essential"));
  });

  it("replaces debris left at the target directory by an unfinished publish", async () => {
    const service = createImageService(h.deps);
    const image = await service.buildDefault();
    h.store.deleteImage(image.id);
    writeFileSync(join(image.dir, "junk"), "x");
    const again = await service.buildDefault();
    assert.equal(again.dir, image.dir);
    assert.equal(existsSync(join(again.dir, "junk")), false);
  });
});

describe("image service: store operations", () => {
  let h: Harness;
  beforeEach(() => {
    h = makeHarness();
  });
  afterEach(() => {
    h.store.close();
    rmSync(h.root, { recursive: true, force: true });
  });

  it("names an unknown image with a hint", async () => {
    const service = createImageService(h.deps);
    assert.throws(
      () => service.get("ubuntu"),
      (error: BangerError) => {
        assert.equal(error.code, ErrorCode.IMAGE_NOT_FOUND);
        assert.match(error.message, /'ubuntu'/);
        assert.match(error.hint ?? "", /image list/);
        return true;
      },
    );
    await assert.rejects(service.resolve("ubuntu"), { code: ErrorCode.IMAGE_NOT_FOUND });
    assert.equal(h.runner.calls.length, 0, "only the catalog image is built on use");
    await assert.rejects(service.delete("ubuntu"), { code: ErrorCode.IMAGE_NOT_FOUND });
  });

  it("refuses to delete an image a VM uses, then deletes directory and row", async () => {
    const service = createImageService(h.deps);
    const image = await service.buildDefault();
    addVm(h.store, image.id);
    await assert.rejects(service.delete("debian-bookworm"), {
      code: ErrorCode.BAD_STATE,
      message: /used by 1 VM/,
    });
    assert.ok(existsSync(image.dir));
    h.store.deleteVm("vm1");
    await service.delete("debian-bookworm");
    assert.equal(existsSync(image.dir), false);
    assert.deepEqual(service.list(), []);
    assert.deepEqual(stagingEntries(h), []);
  });

  it("extracts the vmlinux once, beside the bzImage, shared by concurrent callers", async () => {
    const service = createImageService(h.deps);
    const image = await service.buildDefault();
    const [first, second] = await Promise.all([service.vmlinux(image), service.vmlinux(image)]);
    assert.equal(first, join(image.dir, "vmlinux"));
    assert.equal(second, first);
    assert.equal(readFileSync(first, "utf8"), "elf-of:kernel-v1");
    assert.equal(await service.vmlinux(image), first);
    assert.deepEqual(h.extractions, [image.kernel], "extracted exactly once");
  });

  it("cleans up staging debris", async () => {
    mkdirSync(join(h.layout.imageStagingDir, "build-old", "rootfs"), { recursive: true });
    mkdirSync(join(h.layout.imageStagingDir, "old-x"), { recursive: true });
    const service = createImageService(h.deps);
    await service.cleanupStaging();
    assert.deepEqual(stagingEntries(h), []);
    assert.ok(h.runner.commands().every((command) => command.startsWith("rm -rf --one-file-system -- ")));
  });
});

describe("image service: shared build cache", () => {
  const roots: string[] = [];
  afterEach(() => {
    for (const root of roots.splice(0)) rmSync(root, { recursive: true, force: true });
  });

  it("stores a finished build and copies it instead of running mmdebstrap next time", async () => {
    const cache = mkdtempSync(join(tmpdir(), "banger-image-cache-"));
    roots.push(cache);
    const first = makeHarness({ buildCacheDir: cache });
    roots.push(first.root);
    const built = await createImageService(first.deps).buildDefault({ progress: progress(first) });
    assert.ok(first.events.some((event) => event.step === "image.cache-store" && event.status === "done"));
    const entries = readdirSync(cache);
    assert.equal(entries.length, 1, "one entry, no temporary left");
    assert.match(entries[0]!, /^[0-9a-f]{16}$/);

    const second = makeHarness({ buildCacheDir: cache });
    roots.push(second.root);
    const copied = await createImageService(second.deps).buildDefault({ progress: progress(second) });
    assert.deepEqual(
      second.runner.calls.map((call) => call.argv[0]),
      ["cp"],
      "no mmdebstrap, one sparse copy",
    );
    assert.equal(second.runner.calls[0]!.argv[1], "--sparse=always");
    assert.equal(basename(copied.dir), basename(built.dir), "same content digest");
    assert.equal(JSON.parse(readFileSync(join(copied.dir, "manifest.json"), "utf8")).builtFrom, "cache");
    first.store.close();
    second.store.close();
  });

  /** A cache holding one finished entry, then a second harness about to read it. */
  async function cacheWithEntry(): Promise<{ entry: string; second: Harness }> {
    const cache = mkdtempSync(join(tmpdir(), "banger-image-cache-"));
    roots.push(cache);
    const first = makeHarness({ buildCacheDir: cache });
    roots.push(first.root);
    await createImageService(first.deps).buildDefault({ progress: progress(first) });
    first.store.close();
    const entry = join(cache, readdirSync(cache)[0]!);
    assert.ok(existsSync(join(entry, "digests.json")));
    const second = makeHarness({ buildCacheDir: cache });
    roots.push(second.root);
    return { entry, second };
  }

  async function assertRefused(second: Harness, pattern: RegExp): Promise<void> {
    await assert.rejects(
      createImageService(second.deps).buildDefault({ progress: progress(second) }),
      (error: unknown) =>
        error instanceof BangerError &&
        error.code === ErrorCode.IMAGE_BUILD_FAILED &&
        pattern.test(error.message),
    );
    assert.deepEqual(second.store.listImages(), [], "nothing published");
    assert.deepEqual(readdirSync(second.layout.imageStagingDir), [], "no staging left");
    second.store.close();
  }

  it("refuses an entry planted by another user, and publishes nothing", {
    skip: process.getuid?.() !== 0,
  }, async () => {
    const { entry, second } = await cacheWithEntry();
    chownSync(join(entry, "rootfs.ext4"), 65534, 65534);
    await assertRefused(second, /rootfs\.ext4 is owned by uid 65534/);
    chownSync(entry, 65534, 65534);
    const third = makeHarness({ buildCacheDir: join(entry, "..") });
    roots.push(third.root);
    await assertRefused(third, /is owned by uid 65534/);
  });

  it("refuses a group- or world-writable entry", async () => {
    const { entry, second } = await cacheWithEntry();
    chmodSync(join(entry, "vmlinuz"), 0o666);
    await assertRefused(second, /vmlinuz is group- or world-writable \(mode 666\)/);
  });

  it("refuses an entry whose files no longer match their recorded digests", async () => {
    const { entry, second } = await cacheWithEntry();
    writeFileSync(join(entry, "rootfs.ext4"), Buffer.alloc(4096, 1));
    await assertRefused(second, /rootfs\.ext4 has sha256 .* the entry recorded/);
  });

  it("refuses an entry without recorded digests (older or planted), copying nothing and recording nothing", async () => {
    const { entry, second } = await cacheWithEntry();
    rmSync(join(entry, "digests.json"));
    await assert.rejects(
      createImageService(second.deps).buildDefault({ progress: progress(second) }),
      (error: unknown) =>
        error instanceof BangerError &&
        error.code === ErrorCode.IMAGE_BUILD_FAILED &&
        /digests\.json is missing: the entry has no record/.test(error.message) &&
        error.hint?.includes(`rm -rf ${entry}`) === true &&
        error.hint.includes("banger image build-default"),
    );
    assert.ok(
      second.runner.calls.every((call) => call.argv[0] !== "cp"),
      "nothing copied out of the entry",
    );
    assert.equal(existsSync(join(entry, "digests.json")), false, "no record written for it");
    assert.deepEqual(second.store.listImages(), [], "nothing published");
    second.store.close();
  });

  it("still publishes when the cache cannot be written", async () => {
    const cache = join(mkdtempSync(join(tmpdir(), "banger-image-cache-")), "file");
    roots.push(join(cache, ".."));
    writeFileSync(cache, "not a directory");
    const h = makeHarness({ buildCacheDir: cache });
    roots.push(h.root);
    const image = await createImageService(h.deps).buildDefault({ progress: progress(h) });
    assert.ok(existsSync(image.rootfs));
    assert.ok(h.events.some((event) => event.step === "image.cache-store" && event.status === "failed"));
    h.store.close();
  });
});
