/**
 * The image service: the image store (list, show, delete), resolving an
 * image reference for a VM (building the default image on first use), and
 * building the default image: staged in a fresh directory, then published
 * under the publish mutex by one atomic rename and one row insert. A build
 * that fails or is cancelled leaves neither a directory nor a row behind.
 */
import { join } from "node:path";
import { cancelled, errorMessage, throwIfAborted } from "../../core/async/index.ts";
import type { Mutex } from "../../core/concurrency/index.ts";
import {
  APT_DEB822_SOURCES,
  type BuildPlan,
  type BuildStep,
  type CatalogEntry,
  chooseAptSourcesFile,
  defaultCatalogEntry,
  findCatalogEntry,
  imageDigest,
  imageFiles,
  type NamedContent,
  planCachedImageCopy,
  planDefaultImageBuild,
  recipeHash,
  removeTreeArgv,
  shortDigest,
  sparseCopyArgv,
} from "../../core/image/index.ts";
import type { Logger } from "../../core/log/index.ts";
import { imagePaths, type Layout } from "../../core/paths/index.ts";
import {
  BangerError,
  ErrorCode,
  isBangerError,
  isCancelled,
  type ProgressEvent,
} from "../../protocol/index.ts";
import type { Fs } from "../../sys/fs/index.ts";
import type { Runner } from "../../sys/runner/index.ts";
import type { ImageRecord, Store } from "../../sys/store/index.ts";
import { SharedTask } from "./shared-task.ts";

export type ImageFs = Pick<
  Fs,
  "mkdir" | "rm" | "rename" | "stat" | "readdir" | "readFile" | "writeFileAtomic"
>;

export interface ImageServiceDeps {
  store: Store;
  runner: Runner;
  layout: Layout;
  logger: Logger;
  /** Held only while a finished build is published (rename + row insert) and while an image is deleted. */
  publishMutex: Mutex;
  now(): Date;
  newId(): string;
  /** banger's guest/ directory. */
  guestFilesDir: string;
  fs: ImageFs;
  /**
   * A build cache shared between daemons (BANGER_IMAGE_CACHE): finished builds
   * are copied there keyed by recipe hash, and a build whose recipe is there
   * copies it instead of running mmdebstrap.
   */
  buildCacheDir?: string | undefined;
  /**
   * Argv prefix for the step that downloads packages (mmdebstrap). A daemon
   * kept inside a network namespace has no route to the Debian mirror, so it
   * runs that one step in the host's namespace.
   */
  downloadLauncher?: readonly string[] | undefined;
  /** Writes the ELF vmlinux inside a bzImage to `out` atomically (src/sys/kernel). */
  extractVmlinux(bzImage: string, out: string, signal?: AbortSignal): Promise<void>;
}

interface BuildOptions {
  signal?: AbortSignal | undefined;
  progress?: ((event: ProgressEvent) => void) | undefined;
}

interface BuildDefaultOptions extends BuildOptions {
  /** Replace an existing default image (refused while a VM uses it). */
  force?: boolean | undefined;
}

export interface ImageService {
  list(): ImageRecord[];
  /** By name or id; IMAGE_NOT_FOUND otherwise. */
  get(ref: string): ImageRecord;
  /** Refused (BAD_STATE) while a VM uses the image. */
  delete(name: string): Promise<void>;
  /** The image a VM should use; builds a missing catalog image first. */
  resolve(ref: string, options?: BuildOptions): Promise<ImageRecord>;
  buildDefault(options?: BuildDefaultOptions): Promise<ImageRecord>;
  /** Removes half-built images left by a previous daemon; called at start-up. */
  cleanupStaging(): Promise<void>;
  /**
   * The image's kernel as an ELF vmlinux (for Firecracker before 1.17):
   * extracted from its bzImage on first use and kept beside it.
   */
  vmlinux(image: ImageRecord, options?: { signal?: AbortSignal | undefined }): Promise<string>;
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

export function createImageService(deps: ImageServiceDeps): ImageService {
  const { store, layout, logger, fs } = deps;
  const log = logger.child({ service: "image" });
  const sharedBuild = new SharedTask<ImageRecord, ProgressEvent>();
  /** One extraction per image at a time; the file is renamed into place, so readers never see half of it. */
  const extractions = new Map<string, Promise<string>>();

  function find(ref: string): ImageRecord | undefined {
    return store.getImageByName(ref) ?? store.getImageById(ref);
  }

  function notFound(ref: string): BangerError {
    const buildable = findCatalogEntry(ref) !== undefined;
    return new BangerError(ErrorCode.IMAGE_NOT_FOUND, `no image named '${ref}'`, {
      hint: buildable
        ? `build it with \`banger image build-default\`, or create a VM and it is built on first use`
        : `run \`banger image list\` to see the images; '${defaultCatalogEntry().name}' is built on first use`,
    });
  }

  /** Joins the build in flight, or starts one; the build stops only when every caller has given up. */
  function joinDefaultBuild(options: BuildDefaultOptions): Promise<ImageRecord> {
    return sharedBuild.join(
      (signal, progress) => buildDefaultImage({ force: options.force ?? false, signal, progress }),
      { signal: options.signal, onEvent: options.progress },
    );
  }

  async function buildDefaultImage(options: {
    force: boolean;
    signal: AbortSignal;
    progress: (event: ProgressEvent) => void;
  }): Promise<ImageRecord> {
    const entry = defaultCatalogEntry();
    if (!options.force && store.getImageByName(entry.name)) throw alreadyExists(entry.name);
    const started = deps.now();
    const guestFiles = await readGuestFiles();
    const recipeKey = recipeHash(entry.recipe, guestFiles);
    const stagingDir = join(layout.imageStagingDir, `build-${deps.newId()}`);
    const buildLog = log.child({ image: entry.name, staging: stagingDir });
    await fs.mkdir(stagingDir);
    try {
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
      const manifest = await writeManifest(plan, {
        entry,
        guestFiles,
        recipeKey,
        builtFrom: cacheEntry ? "cache" : "mmdebstrap",
      });
      if (!cacheEntry) await storeInCache(plan, recipeKey, options, buildLog);
      throwIfAborted(options.signal, "image build before step 'publish'");
      const record = await publish({
        entry,
        stagingDir,
        plan,
        manifest,
        force: options.force,
        progress: options.progress,
      });
      buildLog.info("image published", { dir: record.dir, ms: deps.now().getTime() - started.getTime() });
      return record;
    } catch (error) {
      await removeTree(stagingDir, buildLog);
      buildLog.error("image build failed", { error: String(error) });
      throw error;
    }
  }

  async function runStep(
    step: BuildStep,
    options: { signal: AbortSignal; progress: (event: ProgressEvent) => void },
    buildLog: Logger,
  ): Promise<void> {
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

  async function findCacheEntry(recipeKey: string): Promise<string | undefined> {
    if (!deps.buildCacheDir) return undefined;
    const dir = join(deps.buildCacheDir, shortDigest(recipeKey));
    try {
      return (await fs.stat(dir))?.isDirectory ? dir : undefined;
    } catch (error) {
      log.warn("could not read the build cache; building from scratch", { cache: dir, error: String(error) });
      return undefined;
    }
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
    options: { signal: AbortSignal; progress: (event: ProgressEvent) => void },
    buildLog: Logger,
  ): Promise<void> {
    const cacheDir = deps.buildCacheDir;
    if (!cacheDir) return;
    const entryDir = join(cacheDir, shortDigest(recipeKey));
    const temporary = join(cacheDir, `.tmp-${deps.newId()}`);
    const message = `copying the image into the build cache ${entryDir}`;
    options.progress({ step: "image.cache-store", message, status: "start" });
    try {
      await fs.mkdir(temporary);
      await deps.runner.run(sparseCopyArgv(imageFiles(plan.paths), temporary), { signal: options.signal });
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

  async function publish(inputs: {
    entry: CatalogEntry;
    stagingDir: string;
    plan: BuildPlan;
    manifest: ImageManifest;
    force: boolean;
    progress: (event: ProgressEvent) => void;
  }): Promise<ImageRecord> {
    const { entry, stagingDir, manifest } = inputs;
    const message = `publishing ${entry.name} (${shortDigest(manifest.digest)})`;
    inputs.progress({ step: "image.publish", message, status: "start" });
    const rootfs = await fs.stat(inputs.plan.paths.rootfs);
    if (!rootfs)
      throw new BangerError(
        ErrorCode.IMAGE_BUILD_FAILED,
        `the build produced no ${inputs.plan.paths.rootfs}`,
      );
    const record = await deps.publishMutex.run(async () => {
      const existing = store.getImageByName(entry.name);
      if (existing && !inputs.force) throw alreadyExists(entry.name);
      if (existing) refuseIfInUse(existing);
      const target = join(layout.imagesDir, shortDigest(manifest.digest));
      const sharer = store.listImages().find((image) => image.dir === target && image.id !== existing?.id);
      if (sharer) {
        throw new BangerError(
          ErrorCode.BAD_STATE,
          `image '${sharer.name}' already lives in ${target}, with the same content as the new '${entry.name}'`,
          { hint: `use '${sharer.name}', or delete it with \`banger image delete ${sharer.name}\`` },
        );
      }
      // Whatever sits at the target now is the image being replaced or debris of an unfinished publish.
      const displaced = await moveAside(target);
      const paths = imagePaths(target);
      const published: ImageRecord = {
        id: deps.newId(),
        name: entry.name,
        kind: entry.kind,
        dir: target,
        kernel: paths.kernel,
        initrd: paths.initrd,
        rootfs: paths.rootfs,
        sizeBytes: rootfs.size,
        createdAt: deps.now().toISOString(),
      };
      try {
        await fs.rename(stagingDir, target);
        try {
          store.transaction(() => {
            if (existing) store.deleteImage(existing.id);
            store.insertImage(published);
          });
        } catch (error) {
          await fs.rename(target, stagingDir);
          throw error;
        }
      } catch (error) {
        if (displaced) await fs.rename(displaced, target);
        throw error;
      }
      if (displaced) await fs.rm(displaced);
      if (existing && existing.dir !== target) await fs.rm(existing.dir);
      return published;
    });
    inputs.progress({ step: "image.publish", message, status: "done" });
    return record;
  }

  /** Renames `dir` into the staging area (so a crash leaves only debris there); undefined if absent. */
  async function moveAside(dir: string): Promise<string | undefined> {
    if (!(await fs.stat(dir))) return undefined;
    const aside = join(layout.imageStagingDir, `old-${deps.newId()}`);
    await fs.mkdir(layout.imageStagingDir);
    await fs.rename(dir, aside);
    return aside;
  }

  function refuseIfInUse(image: ImageRecord): void {
    const users = store.countVmsUsingImage(image.id);
    if (users > 0) {
      throw new BangerError(
        ErrorCode.BAD_STATE,
        `image '${image.name}' is used by ${users} VM${users === 1 ? "" : "s"}`,
        { hint: "delete those VMs first (`banger vm list` shows them)" },
      );
    }
  }

  async function removeTree(dir: string, treeLog: Logger): Promise<void> {
    try {
      await deps.runner.run(removeTreeArgv(dir));
    } catch (error) {
      treeLog.error("could not remove a staging directory; it is retried at the next daemon start", {
        dir,
        error: String(error),
      });
    }
  }

  return {
    list: () => store.listImages(),

    get(ref) {
      const image = find(ref);
      if (!image) throw notFound(ref);
      return image;
    },

    async delete(name) {
      // The lock covers lookup, reference check, move-aside and row; the files go after it.
      const { image, aside } = await deps.publishMutex.run(async () => {
        const found = find(name);
        if (!found) throw notFound(name);
        refuseIfInUse(found);
        const moved = await moveAside(found.dir);
        try {
          store.deleteImage(found.id);
        } catch (error) {
          if (moved) await fs.rename(moved, found.dir);
          throw error;
        }
        return { image: found, aside: moved };
      });
      if (aside) await fs.rm(aside);
      log.info("image deleted", { image: image.name, dir: image.dir });
    },

    async resolve(ref, options = {}) {
      const image = find(ref);
      if (image) return image;
      if (ref !== defaultCatalogEntry().name) throw notFound(ref);
      const built = await joinDefaultBuild({ signal: options.signal, progress: options.progress });
      return built;
    },

    buildDefault(options = {}) {
      return joinDefaultBuild(options);
    },

    async vmlinux(image, options = {}) {
      const out = imagePaths(image.dir).vmlinux;
      if (await fs.stat(out)) return out;
      let running = extractions.get(image.id);
      if (!running) {
        running = deps
          .extractVmlinux(image.kernel, out, options.signal)
          .then(() => {
            log.info("extracted vmlinux", { image: image.name, out });
            return out;
          })
          .finally(() => extractions.delete(image.id));
        extractions.set(image.id, running);
      }
      return running;
    },

    async cleanupStaging() {
      for (const name of await fs.readdir(layout.imageStagingDir)) {
        const dir = join(layout.imageStagingDir, name);
        log.info("removing an unfinished image build", { dir });
        await removeTree(dir, log);
      }
    },
  };
}

function alreadyExists(name: string): BangerError {
  return new BangerError(ErrorCode.BAD_STATE, `image '${name}' already exists`, {
    hint: "rebuild it with `banger image build-default --force`, or delete it first",
  });
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
