/**
 * The ImageSource seam: a registered source only fills a staging directory,
 * and the store's one publication path does the rest (recheck of the name,
 * atomic rename, row). The two concurrency rules of the publication window:
 * sources for different names run at the same time, and two that race for
 * one name have exactly one winner whose rival leaves nothing behind.
 * Concurrency is proven with gates, never with timers.
 */
import assert from "node:assert/strict";
import { existsSync, mkdirSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { basename, join } from "node:path";
import { afterEach, beforeEach, describe, it } from "node:test";
import { Mutex } from "../../src/core/concurrency/index.ts";
import { silentLogger } from "../../src/core/log/index.ts";
import { imagePaths, type Layout, resolveLayout } from "../../src/core/paths/index.ts";
import { createImageService, type ImageService, type ImageSource } from "../../src/daemon/image/index.ts";
import { ErrorCode } from "../../src/protocol/index.ts";
import { createNodeFs } from "../../src/sys/fs/index.ts";
import { openStore, type Store } from "../../src/sys/store/index.ts";
import { FakeRunner } from "../fakes/runner.ts";

interface Fetch {
  ref: string;
  stagingDir: string;
  /** Lets the fetch finish (writing a complete image) or fail half-way. */
  finish(outcome?: "ok" | "fail"): void;
}

/**
 * A source for refs `test/<name>@<digest>`: each fetch writes half an image,
 * then waits for the test to finish it; the published name is `<name>`.
 */
function gatedSource() {
  const fetches: Fetch[] = [];
  const waiters: Array<() => void> = [];
  const source: ImageSource = {
    name: "test",
    matches: (ref) => ref.startsWith("test/"),
    hint: (ref) => `fetch ${ref} with the test source`,
    fetch(ref, stagingDir) {
      const [name = "", digest = ""] = ref.slice("test/".length).split("@");
      const paths = imagePaths(stagingDir);
      writeFileSync(paths.kernel, "kernel");
      return new Promise((resolve, reject) => {
        fetches.push({
          ref,
          stagingDir,
          finish(outcome = "ok") {
            if (outcome === "fail") return reject(new Error(`network gone while fetching ${ref}`));
            writeFileSync(paths.initrd, "initrd");
            writeFileSync(paths.rootfs, Buffer.alloc(1024));
            resolve({ name, kind: "test", digest: digest.padEnd(64, "0") });
          },
        });
        for (const wake of waiters.splice(0)) wake();
      });
    },
  };
  /** Resolves once `count` fetches have started (all of them running at once). */
  const started = async (count: number) => {
    while (fetches.length < count) await new Promise<void>((resolve) => waiters.push(resolve));
    return fetches;
  };
  return { source, fetches, started };
}

describe("image sources through the publication path", () => {
  let root: string;
  let layout: Layout;
  let store: Store;
  let runner: FakeRunner;
  let gated: ReturnType<typeof gatedSource>;
  let images: ImageService;

  beforeEach(() => {
    root = mkdtempSync(join(tmpdir(), "banger-sources-"));
    layout = resolveLayout({ env: { BANGER_HOME: root }, uid: 0, homeDir: root });
    mkdirSync(layout.stateDir, { recursive: true });
    store = openStore(":memory:");
    runner = new FakeRunner().on(["rm", "-rf", "--one-file-system", "--"], async (argv) => {
      rmSync(argv[4] ?? "", { recursive: true, force: true });
      return {};
    });
    gated = gatedSource();
    let ids = 0;
    images = createImageService({
      store,
      runner,
      layout,
      logger: silentLogger,
      publishMutex: new Mutex(),
      now: () => new Date("2026-01-02T03:04:05Z"),
      newId: () => `id${++ids}`,
      guestFilesDir: join(root, "no-guest-files"),
      fs: createNodeFs(),
      extractVmlinux: async () => {
        throw new Error("not used");
      },
      sources: [gated.source],
    });
  });
  afterEach(() => {
    store.close();
    rmSync(root, { recursive: true, force: true });
  });

  const staging = () => (existsSync(layout.imageStagingDir) ? readdirSync(layout.imageStagingDir) : []);

  it("publishes what a registered source staged: the row, and its directory named by digest", async () => {
    const resolving = images.resolve("test/alpine@ab12");
    const [fetch] = await gated.started(1);
    assert.ok(fetch?.stagingDir.startsWith(layout.imageStagingDir), "the source fills a private staging dir");
    fetch?.finish();
    const image = await resolving;
    assert.equal(image.name, "alpine");
    assert.equal(image.dir, join(layout.imagesDir, "ab12000000000000"));
    assert.equal(image.sizeBytes, 1024);
    assert.ok(existsSync(image.rootfs));
    assert.deepEqual(staging(), []);
    assert.equal(images.get("alpine").id, image.id);
  });

  it("a source that fails half-way leaves no directory, no row and no staging debris", async () => {
    const resolving = images.resolve("test/alpine@ab12");
    (await gated.started(1))[0]?.finish("fail");
    await assert.rejects(resolving, /network gone/);
    assert.deepEqual(images.list(), []);
    assert.deepEqual(staging(), []);
    assert.equal(
      existsSync(layout.imagesDir) ? readdirSync(layout.imagesDir).filter((n) => n !== ".staging").length : 0,
      0,
    );
  });

  it("a missing ref a source matches is named with that source's hint", () => {
    assert.throws(
      () => images.get("test/alpine@ab12"),
      (error: Error & { code?: string; hint?: string }) =>
        error.code === ErrorCode.IMAGE_NOT_FOUND &&
        error.hint === "fetch test/alpine@ab12 with the test source",
    );
  });

  it("sources for different names run at the same time: neither waits for the other to publish", async () => {
    const first = images.resolve("test/alpine@aa11");
    const second = images.resolve("test/debian@bb22");
    const fetches = await gated.started(2);
    const byRef = new Map(fetches.map((fetch) => [fetch.ref, fetch]));
    assert.deepEqual(
      [...byRef.keys()].sort(),
      ["test/alpine@aa11", "test/debian@bb22"],
      "both fetches are in flight together",
    );
    byRef.get("test/debian@bb22")?.finish();
    byRef.get("test/alpine@aa11")?.finish();
    const [alpine, debian] = await Promise.all([first, second]);
    assert.deepEqual([alpine.name, debian.name], ["alpine", "debian"]);
  });

  it("two fetches racing for one name: exactly one winner, and the loser leaves nothing", async () => {
    const first = images.resolve("test/alpine@aa11");
    const second = images.resolve("test/alpine@bb22");
    const fetches = await gated.started(2);
    fetches[0]?.finish();
    fetches[1]?.finish();
    const outcomes = await Promise.allSettled([first, second]);
    const won = outcomes.filter((outcome) => outcome.status === "fulfilled");
    const lost = outcomes.filter((outcome) => outcome.status === "rejected");
    assert.equal(won.length, 1);
    assert.equal(lost.length, 1);
    assert.match(String((lost[0] as PromiseRejectedResult).reason), /image 'alpine' already exists/);
    assert.deepEqual(
      images.list().map((image) => image.name),
      ["alpine"],
    );
    assert.deepEqual(staging(), [], "the loser's staging dir is removed");
    const winner = (won[0] as PromiseFulfilledResult<{ dir: string }>).value;
    assert.deepEqual(
      readdirSync(layout.imagesDir).filter((name) => name !== ".staging"),
      [basename(winner.dir)],
      "only the winner's directory is published",
    );
  });
});
