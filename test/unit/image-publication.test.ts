/**
 * The seeds' publication window for pulls: slow work (the image worker)
 * runs unlocked in its own staging directory, only the commit atom (name
 * re-check, rename, row) holds the publication mutex. Real SQLite, real
 * files; the worker is a gated fake.
 */
import assert from "node:assert/strict";
import { existsSync, readdirSync, readFileSync, statSync, writeFileSync } from "node:fs";
import { copyFile } from "node:fs/promises";
import { join } from "node:path";
import { afterEach, beforeEach, test } from "node:test";
import { Mutex } from "../../src/core/concurrency/index.ts";
import { resolveLayout } from "../../src/core/paths/index.ts";
import { createOciImages, type OciImages } from "../../src/daemon/image/oci.ts";
import type { BangerError } from "../../src/protocol/index.ts";
import { createNodeFs } from "../../src/sys/fs/index.ts";
import { BlobCache } from "../../src/sys/oci/blob-cache.ts";
import type { WorkerResult, WorkerRunOptions } from "../../src/sys/oci/worker-client.ts";
import { openStore, type Store } from "../../src/sys/store/index.ts";
import { createMemoryLogger } from "../helpers/memory-logger.ts";
import { makeTempDir } from "../helpers/tmp.ts";

/** Holds a fake worker at its slow part until released. */
interface Gate {
  reached: Promise<void>;
  release(): void;
  enter(): void;
  released: Promise<void>;
}

let tmp: ReturnType<typeof makeTempDir>;
let store: Store;
let layout: ReturnType<typeof resolveLayout>;
let gates: Map<string, Gate>;
let ids = 0;

function gate(reference: string): Gate {
  const reached = Promise.withResolvers<void>();
  const released = Promise.withResolvers<void>();
  const held: Gate = {
    reached: reached.promise,
    enter: reached.resolve,
    release: released.resolve,
    released: released.promise,
  };
  gates.set(reference, held);
  return held;
}

function nextId(): string {
  ids += 1;
  return `id${String(ids).padStart(14, "0")}`;
}

async function fakeWorker(options: WorkerRunOptions): Promise<WorkerResult> {
  const source = options.request.source;
  const reference = source.kind === "registry" ? source.reference : source.path;
  writeFileSync(join(options.request.stagingDir, "rootfs.ext4"), reference);
  const held = gates.get(reference);
  if (held) {
    held.enter();
    await held.released;
  }
  const digest = `sha256:${Buffer.from(reference).toString("hex").padEnd(64, "0").slice(0, 64)}`;
  return {
    manifestDigest: digest,
    configDigest: digest,
    config: { rootfs: { type: "layers", diff_ids: [] }, config: { Cmd: ["sh"] } },
    layers: [],
    fetchedBytes: 0,
    layerBytes: 0,
    rootfs: join(options.request.stagingDir, "rootfs.ext4"),
    rootfsBytes: reference.length,
    suggestedName: undefined,
  };
}

function service(): OciImages {
  return createOciImages({
    store,
    layout,
    logger: createMemoryLogger(),
    publishMutex: new Mutex(),
    now: () => new Date(),
    newId: nextId,
    fs: createNodeFs(),
    runWorker: fakeWorker,
    copyFile: (from, to) => copyFile(from, to),
    blobs: new BlobCache(layout.blobsDir),
  });
}

beforeEach(() => {
  tmp = makeTempDir("bgt-pub-");
  layout = resolveLayout({ env: { BANGER_HOME: tmp.path }, uid: 0, homeDir: tmp.path });
  gates = new Map();
  return createNodeFs()
    .mkdir(layout.stateDir)
    .then(() => {
      store = openStore(layout.dbFile);
    });
});
afterEach(() => {
  store.close();
  tmp.cleanup();
});

test("pulls of different images do not serialise", async () => {
  const images = service();
  const slow = gate("127.0.0.1:5000/slow:latest");
  const slowPull = images.pull({ reference: "127.0.0.1:5000/slow" });
  await slow.reached;
  const fast = await images.pull({ reference: "127.0.0.1:5000/fast" });
  assert.equal(fast.name, "127.0.0.1:5000/fast:latest");
  assert.ok(
    store.getImageByName("127.0.0.1:5000/fast:latest"),
    "the second pull published while the first was still working",
  );
  slow.release();
  assert.equal((await slowPull).name, "127.0.0.1:5000/slow:latest");
});

test("two pulls racing for one name: one winner, the loser's staging removed", async () => {
  const images = service();
  const first = gate("127.0.0.1:5000/one:v1");
  const second = gate("127.0.0.1:5000/two:v1");
  const a = images.pull({ reference: "127.0.0.1:5000/one:v1", name: "app" });
  const b = images.pull({ reference: "127.0.0.1:5000/two:v1", name: "app" });
  await Promise.all([first.reached, second.reached]);
  assert.equal(readdirSync(layout.imageStagingDir).length, 2);
  first.release();
  second.release();
  const results = await Promise.allSettled([a, b]);
  const winners = results.filter((result) => result.status === "fulfilled");
  const losers = results.filter((result) => result.status === "rejected");
  assert.equal(winners.length, 1);
  assert.equal(losers.length, 1);
  assert.equal(((losers[0] as PromiseRejectedResult).reason as BangerError).code, "NAME_TAKEN");
  assert.deepEqual(readdirSync(layout.imageStagingDir), []);
  assert.equal(store.listImages().length, 1);
  const winner = (winners[0] as PromiseFulfilledResult<{ dir: string }>).value;
  assert.deepEqual(readdirSync(layout.imagesDir).sort(), [".staging", winner.dir.split("/").at(-1)].sort());
});

test("the same image pulled twice at once: both get the one published image", async () => {
  const images = service();
  const [a, b] = await Promise.all([
    images.pull({ reference: "127.0.0.1:5000/same" }),
    images.pull({ reference: "127.0.0.1:5000/same" }),
  ]);
  assert.equal(a.id, b.id);
  assert.equal(store.listImages().length, 1);
  assert.deepEqual(readdirSync(layout.imageStagingDir), []);
});

test("a re-pull with new content replaces an unused image; login writes a 0600 file", async () => {
  const images = service();
  const old = await images.pull({ reference: "127.0.0.1:5000/one:v1", name: "app" });
  const next = await images.pull({ reference: "127.0.0.1:5000/two:v1", name: "app" });
  assert.notEqual(old.id, next.id);
  assert.equal(existsSync(old.dir), false);
  await images.login("reg.example:5000", { username: "u", password: "p" });
  assert.equal(statSync(layout.registryAuthFile).mode & 0o777, 0o600);
  assert.equal(await images.logout("reg.example:5000"), true);
  assert.equal(await images.logout("reg.example:5000"), false);
});

test("register copies rootfs, kernel and initrd into the store; a taken name is refused", async () => {
  const images = service();
  const source = join(tmp.path, "src");
  await createNodeFs().mkdir(source);
  for (const file of ["rootfs.ext4", "vmlinuz", "initrd.gz"]) writeFileSync(join(source, file), file);
  const record = await images.register({
    name: "custom",
    rootfs: join(source, "rootfs.ext4"),
    kernel: join(source, "vmlinuz"),
    initrd: join(source, "initrd.gz"),
  });
  assert.equal(record.kind, "registered");
  assert.equal(readFileSync(record.kernel, "utf8"), "vmlinuz");
  assert.equal(readFileSync(record.initrd as string, "utf8"), "initrd.gz");
  await assert.rejects(
    images.register({ name: "custom", rootfs: join(source, "rootfs.ext4"), kernel: join(source, "vmlinuz") }),
    {
      code: "NAME_TAKEN",
    },
  );
  await assert.rejects(images.register({ name: "other", rootfs: source, kernel: join(source, "vmlinuz") }), {
    code: "INVALID_PARAMS",
  });
  assert.deepEqual(readdirSync(layout.imageStagingDir), []);
});
