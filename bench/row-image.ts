/**
 * Rows "image-pull" and "image-pull-shared": pulling an OCI image from a
 * real registry on 127.0.0.1 (docker-registry, started here and stopped by
 * pid) into an ext4 root filesystem.
 *
 * - image-pull: the daemon's image worker (src/sys/oci: fetch into a fresh
 *   blob cache, flatten, mkfs.ext4 -d) against `skopeo copy` into a fresh
 *   OCI layout + `umoci unpack` + `mkfs.ext4 -d` of the same size, on an
 *   image of 4 gzip layers of about 25 MiB each (random data, so gzip
 *   cannot shrink it); alternating, fresh directories per sample.
 * - image-pull-shared: the same worker pulling a second image that shares
 *   the first 3 layers (already in the blob cache) and has one new one,
 *   against a cold pull of that image; the notes give the bytes fetched.
 */
import { randomBytes } from "node:crypto";
import { mkdir, rm, stat } from "node:fs/promises";
import { join } from "node:path";
import { performance } from "node:perf_hooks";
import { gzipSync } from "node:zlib";
import { runImageWorker, type WorkerResult } from "../src/sys/oci/worker-client.ts";
import { makeTar, pushRaw, rawImage, startRegistry } from "../test/helpers/registry.ts";
import { type BenchEnv, isRoot, onPath } from "./env.ts";
import { runChecked } from "./proc.ts";
import { pairedRow, type RowResult } from "./report.ts";
import { alternate, median } from "./stats.ts";

export const IMAGE_PULL_ROW = {
  id: "image-pull",
  benchmark: "image pull+flatten+ext4 (~100 MiB, 4 layers) vs skopeo+umoci+mkfs",
  unit: "ms",
  goal: "≤1.0x",
} as const;
export const IMAGE_SHARED_ROW = {
  id: "image-pull-shared",
  benchmark: "image pull sharing 3 of 4 layers vs cold pull",
  unit: "ms",
  goal: "-",
} as const;

const LAYERS = 4;
const FILES_PER_LAYER = 25;
const FILE_BYTES = 1024 * 1024;
const RUNS = 3;
const BUDGET_MS = 150_000;
const TIMEOUT_MS = 180_000;

export function imageSkipReason(): string | null {
  if (!isRoot()) return "needs root (the flattened tree keeps owners)";
  for (const tool of ["docker-registry", "skopeo", "umoci", "mkfs.ext4"]) {
    if (!onPath(tool)) return `${tool} is not on PATH (scripts/install-deps installs it)`;
  }
  return null;
}

interface ImageBenchOptions {
  env: BenchEnv;
  log: (line: string) => void;
}

async function layer(index: number, tag: string): Promise<{ blob: Buffer; diffId: string }> {
  const entries = Array.from({ length: FILES_PER_LAYER }, (_, file) => ({
    header: { name: `data/${tag}-${index}/f${file}.bin`, mode: 0o644 },
    body: randomBytes(FILE_BYTES),
  }));
  const { tar, diffId } = await makeTar(entries);
  return { blob: gzipSync(tar, { level: 1 }), diffId };
}

export async function benchImageRows(options: ImageBenchOptions, ids: Set<string>): Promise<RowResult[]> {
  const { env, log } = options;
  const dir = join(env.home, "image-bench");
  await mkdir(dir, { recursive: true });
  const registry = await startRegistry(dir);
  try {
    log("image: making and pushing the bench images");
    const shared = await Promise.all(Array.from({ length: LAYERS - 1 }, (_, index) => layer(index, "base")));
    const first = [...shared, await layer(LAYERS - 1, "first")];
    const second = [...shared, await layer(LAYERS - 1, "second")];
    await pushRaw(registry, "bench/app", "v1", rawImage(first));
    await pushRaw(registry, "bench/app", "v2", rawImage(second));
    const totalBytes = first.reduce((sum, item) => sum + item.blob.length, 0);
    let sample = 0;
    const workerPull = async (
      reference: string,
      blobsDir: string,
    ): Promise<{ ms: number; result: WorkerResult }> => {
      sample += 1;
      const stagingDir = join(dir, `staging-${sample}`);
      await mkdir(stagingDir);
      const started = performance.now();
      const result = await runImageWorker({
        request: {
          source: { kind: "registry", reference: `${registry.address}/${reference}`, insecureRegistries: [] },
          platform: "linux/amd64",
          blobsDir,
          stagingDir,
        },
        compileCacheDir: join(dir, "compile-cache"),
        signal: env.signal,
      });
      const ms = performance.now() - started;
      await rm(stagingDir, { recursive: true, force: true });
      return { ms, result };
    };
    const rows: RowResult[] = [];
    if (ids.has(IMAGE_PULL_ROW.id)) {
      let rootfsBytes = 0;
      const samples = await alternate({
        runs: RUNS,
        budgetMs: BUDGET_MS,
        signal: env.signal,
        banger: async () => {
          const blobs = join(dir, `blobs-${sample + 1}`);
          const { ms, result } = await workerPull("bench/app:v1", blobs);
          rootfsBytes = result.rootfsBytes;
          await rm(blobs, { recursive: true, force: true });
          return ms;
        },
        baseline: async () => {
          sample += 1;
          const work = join(dir, `baseline-${sample}`);
          await mkdir(work);
          const run = (argv: string[]) => runChecked(argv, { timeoutMs: TIMEOUT_MS, signal: env.signal });
          const started = performance.now();
          await run([
            "skopeo",
            "copy",
            "-q",
            "--src-tls-verify=false",
            `docker://${registry.address}/bench/app:v1`,
            `oci:${work}/oci:v1`,
          ]);
          await run(["umoci", "unpack", "--image", `${work}/oci:v1`, `${work}/bundle`]);
          await run([
            "mkfs.ext4",
            "-q",
            "-F",
            "-b",
            "4096",
            "-d",
            `${work}/bundle/rootfs`,
            `${work}/rootfs.ext4`,
            `${Math.ceil(rootfsBytes / 1048576) || 256}M`,
          ]);
          const ms = performance.now() - started;
          await rm(work, { recursive: true, force: true });
          return ms;
        },
        afterEach: (run, bangerMs, baselineMs) =>
          log(`image-pull ${run}: banger ${Math.round(bangerMs)} ms, baseline ${Math.round(baselineMs)} ms`),
      });
      rows.push(
        pairedRow(IMAGE_PULL_ROW, samples, [
          `${samples.banger.length} pairs; ${(totalBytes / 1048576).toFixed(1)} MiB of gzip layers from docker-registry on 127.0.0.1; banger = the daemon's image worker (a Node process: fetch with digest checks into an empty blob cache, flatten with owners and whiteouts, mkfs.ext4 -d of a ${(rootfsBytes / 1048576).toFixed(0)} MiB rootfs); baseline = skopeo copy docker:// -> oci: (fresh layout), umoci unpack, mkfs.ext4 -d of the same size`,
        ]),
      );
    }
    if (ids.has(IMAGE_SHARED_ROW.id)) {
      const fetched: number[] = [];
      const samples = await alternate({
        runs: RUNS,
        budgetMs: BUDGET_MS,
        signal: env.signal,
        banger: async () => {
          const blobs = join(dir, `warm-${sample + 1}`);
          await workerPull("bench/app:v1", blobs);
          const { ms, result } = await workerPull("bench/app:v2", blobs);
          fetched.push(result.fetchedBytes);
          await rm(blobs, { recursive: true, force: true });
          return ms;
        },
        baseline: async () => {
          const blobs = join(dir, `cold-${sample + 1}`);
          const { ms } = await workerPull("bench/app:v2", blobs);
          await rm(blobs, { recursive: true, force: true });
          return ms;
        },
      });
      const newLayer = second.at(-1)?.blob.length ?? 0;
      rows.push(
        pairedRow(IMAGE_SHARED_ROW, samples, [
          `${samples.banger.length} pairs; banger = pull of bench/app:v2 after bench/app:v1 into the same blob cache (untimed first pull); baseline = cold pull of bench/app:v2; bytes fetched by the second pull: median ${median(fetched)} of ${totalBytes - (first.at(-1)?.blob.length ?? 0) + newLayer} (the new layer is ${newLayer})`,
        ]),
      );
    }
    return rows;
  } finally {
    await registry.stop();
    await rm(dir, { recursive: true, force: true });
    await stat(dir).catch(() => undefined);
  }
}
