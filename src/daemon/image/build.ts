/**
 * The catalog source: builds a catalog image (today the default Debian
 * image) into a staging directory with mmdebstrap and banger's guest files,
 * or copies a finished build of the same recipe from the shared build
 * cache. Publishing is the store's (store.ts).
 */
import { join } from "node:path";
import { cancelled, errorMessage, throwIfAborted } from "../../core/async/index.ts";
import {
  APT_DEB822_SOURCES,
  type BuildPlan,
  type BuildStep,
  type CatalogEntry,
  chooseAptSourcesFile,
  findCatalogEntry,
  imageDigest,
  imageFiles,
  type NamedContent,
  planCachedImageCopy,
  planDefaultImageBuild,
  recipeHash,
  shortDigest,
  sparseCopyArgv,
} from "../../core/image/index.ts";
import type { Logger } from "../../core/log/index.ts";
import { imagePaths } from "../../core/paths/index.ts";
import { BangerError, ErrorCode, isBangerError, isCancelled } from "../../protocol/index.ts";
import type { Runner } from "../../sys/runner/index.ts";
import type { FetchOptions, ImageSource } from "./source.ts";
import type { ImageFs } from "./store.ts";

export interface CatalogSourceDeps {
  runner: Runner;
  logger: Logger;
  fs: ImageFs;
  now(): Date;
  newId(): string;
  /** banger's guest/ directory. */
  guestFilesDir: string;
  /**
   * A build cache shared between daemons (BANGER_IMAGE_CACHE): finished builds
   * are copied there keyed by recipe hash, and a build whose recipe is there
   * copies it instead of running mmdebstrap.
   */
  buildCacheDir?: string | undefined;
  /** Trust checks on that cache's entries; required to read from it. */
  buildCacheChecks?: BuildCacheChecks | undefined;
  /**
   * Argv prefix for the step that downloads packages (mmdebstrap). A daemon
   * kept inside a network namespace has no route to the Debian mirror, so it
   * runs that one step in the host's namespace.
   */
  downloadLauncher?: readonly string[] | undefined;
}

/** How entries of the shared build cache are checked before use and recorded when stored (src/sys/image-cache). */
export interface BuildCacheChecks {
  /** Throws when the entry could have been planted or changed by another user. */
  assertTrusted(entryDir: string, files: readonly string[]): Promise<void>;
  /** Throws when the copies taken from the entry differ from the digests it recorded. */
  assertCopyMatches(entryDir: string, copies: readonly string[]): Promise<void>;
  /** The digest record to store with a new entry's files. */
  digestRecord(files: readonly string[]): Promise<{ name: string; content: string }>;
}

/** Written into each image directory; describes where the image came from. */
interface ImageManifest {
  name: string;
  kind: string;
  digest: string;
  recipeHash: string;
  suite: string;
  packages: number;
  builtFrom: "mmdebstrap" | "cache";
  createdAt: string;
}

export function createCatalogSource(deps: CatalogSourceDeps): ImageSource {
  const { fs } = deps;

  async function runStep(step: BuildStep, options: FetchOptions, buildLog: Logger): Promise<void> {
    const name = `image.${step.id}` as const;
    throwIfAborted(options.signal, `image build before step '${step.id}'`);
    options.progress({ step: name, message: step.message, status: "start" });
    const stepStarted = deps.now();
    try {
      const argv =
        step.id === "rootfs" && deps.downloadLauncher ? [...deps.downloadLauncher, ...step.argv] : step.argv;
      await deps.runner.run(argv, { signal: options.signal });
    } catch (error) {
      options.progress({ step: name, message: step.message, status: "failed" });
      throw stepError(step, error, options.signal);
    }
    buildLog.info("image build step done", {
      step: step.id,
      ms: deps.now().getTime() - stepStarted.getTime(),
    });
    options.progress({ step: name, message: step.message, status: "done" });
  }

  async function readGuestFiles(): Promise<NamedContent[]> {
    const files: NamedContent[] = [];
    for (const name of (await fs.readdir(deps.guestFilesDir)).sort()) {
      const path = join(deps.guestFilesDir, name);
      if ((await fs.stat(path))?.isDirectory !== false) continue;
      files.push({ name, content: await fs.readFile(path) });
    }
    if (files.length === 0) {
      throw new BangerError(
        ErrorCode.INTERNAL,
        `the guest files directory ${deps.guestFilesDir} is empty or missing`,
      );
    }
    return files;
  }

  /** The cache entry for this recipe, if there is one; an entry that fails the trust checks is refused. */
  async function findCacheEntry(recipeKey: string): Promise<string | undefined> {
    if (!deps.buildCacheDir || !deps.buildCacheChecks) return undefined;
    const dir = join(deps.buildCacheDir, shortDigest(recipeKey));
    let exists: boolean;
    try {
      exists = (await fs.stat(dir))?.isDirectory === true;
    } catch (error) {
      deps.logger.warn("could not read the build cache; building from scratch", {
        cache: dir,
        error: String(error),
      });
      return undefined;
    }
    if (!exists) return undefined;
    await deps.buildCacheChecks.assertTrusted(dir, imageFiles(imagePaths(dir)));
    return dir;
  }

  async function writeManifest(
    plan: BuildPlan,
    inputs: {
      entry: CatalogEntry;
      guestFiles: NamedContent[];
      recipeKey: string;
      builtFrom: ImageManifest["builtFrom"];
    },
  ): Promise<ImageManifest> {
    const packageList = (await fs.readFile(plan.paths.packages)).toString("utf8");
    const digest = imageDigest({
      kernel: await fs.readFile(plan.paths.kernel),
      initrd: await fs.readFile(plan.paths.initrd),
      guestFiles: inputs.guestFiles,
      packageList,
    });
    const manifest: ImageManifest = {
      name: inputs.entry.name,
      kind: inputs.entry.kind,
      digest,
      recipeHash: inputs.recipeKey,
      suite: inputs.entry.recipe.suite,
      packages: packageList.split("\n").filter((line) => line.trim() !== "").length,
      builtFrom: inputs.builtFrom,
      createdAt: deps.now().toISOString(),
    };
    await fs.writeFileAtomic(plan.paths.manifest, `${JSON.stringify(manifest, null, 2)}\n`);
    return manifest;
  }

  /**
   * Copies a finished build into the shared cache: into a private directory
   * first, then one rename, so a concurrent daemon never sees half an entry.
   * Best effort: a failure is logged and the build goes on.
   */
  async function storeInCache(
    plan: BuildPlan,
    recipeKey: string,
    options: FetchOptions,
    buildLog: Logger,
  ): Promise<void> {
    const cacheDir = deps.buildCacheDir;
    if (!cacheDir) return;
    const entryDir = join(cacheDir, shortDigest(recipeKey));
    const temporary = join(cacheDir, `.tmp-${deps.newId()}`);
    const message = `copying the image into the build cache ${entryDir}`;
    options.progress({ step: "image.cache-store", message, status: "start" });
    try {
      await fs.mkdir(temporary, { mode: 0o755 });
      await deps.runner.run(sparseCopyArgv(imageFiles(plan.paths), temporary), { signal: options.signal });
      if (deps.buildCacheChecks) {
        const record = await deps.buildCacheChecks.digestRecord(imageFiles(plan.paths));
        await fs.writeFileAtomic(join(temporary, record.name), record.content);
      }
      await fs.rename(temporary, entryDir);
      options.progress({ step: "image.cache-store", message, status: "done" });
    } catch (error) {
      await fs.rm(temporary).catch(() => {});
      if (options.signal.aborted) throw stepError({ id: "cache-store" }, error, options.signal);
      buildLog.warn("could not store the image in the build cache", {
        cache: entryDir,
        error: String(error),
      });
      options.progress({ step: "image.cache-store", message, status: "failed" });
    }
  }

  return {
    name: "catalog",
    matches: (ref) => findCatalogEntry(ref) !== undefined,
    hint: () => "build it with `banger image build-default`, or create a VM and it is built on first use",
    async fetch(ref, stagingDir, options) {
      const entry = findCatalogEntry(ref);
      if (!entry) throw new BangerError(ErrorCode.INTERNAL, `'${ref}' is not in the image catalog`);
      const guestFiles = await readGuestFiles();
      const recipeKey = recipeHash(entry.recipe, guestFiles);
      const buildLog = deps.logger.child({ image: entry.name, staging: stagingDir });
      const cacheEntry = await findCacheEntry(recipeKey);
      const plan = cacheEntry
        ? planCachedImageCopy({ cacheEntryDir: cacheEntry, stagingDir })
        : planDefaultImageBuild({
            stagingDir,
            guestFilesDir: deps.guestFilesDir,
            aptSourcesFile: chooseAptSourcesFile((await fs.stat(APT_DEB822_SOURCES)) !== undefined),
            recipe: entry.recipe,
          });
      buildLog.info("image build started", { from: cacheEntry ?? "mmdebstrap", steps: plan.steps.length });
      for (const step of plan.steps) await runStep(step, options, buildLog);
      // Checked on the copies this build will publish, so nothing swapped in after the check is used.
      if (cacheEntry) await deps.buildCacheChecks?.assertCopyMatches(cacheEntry, imageFiles(plan.paths));
      const manifest = await writeManifest(plan, {
        entry,
        guestFiles,
        recipeKey,
        builtFrom: cacheEntry ? "cache" : "mmdebstrap",
      });
      if (!cacheEntry) await storeInCache(plan, recipeKey, options, buildLog);
      return { name: entry.name, kind: entry.kind, digest: manifest.digest };
    },
  };
}

function stepError(step: { id: string }, error: unknown, signal: AbortSignal): BangerError {
  if (signal.aborted || isCancelled(error)) {
    return cancelled(signal, `image build during step '${step.id}'`, { cause: error });
  }
  if (isBangerError(error) && error.code === ErrorCode.TOOL_MISSING) return error;
  return new BangerError(
    ErrorCode.IMAGE_BUILD_FAILED,
    `image build failed at step '${step.id}': ${errorMessage(error)}`,
    {
      cause: error,
      hint:
        step.id === "rootfs"
          ? "mmdebstrap needs root and apt access to the Debian mirror; `banger daemon logs` has its output"
          : "`banger daemon logs` has the failing command's output",
    },
  );
}
