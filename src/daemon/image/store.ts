/**
 * The image store: rows in the store and directories under images/, and
 * the one publication path every source goes through:
 *
 * 1. a fresh staging directory under images/.staging, filled by the source
 *    with no lock held (downloads, mmdebstrap, mkfs, copies);
 * 2. under the publish mutex, the commit atom: re-check the name (with
 *    force, refuse an image in use), refuse a digest directory another
 *    image owns, move debris at the target aside, rename the staging
 *    directory into place, and swap the row in one transaction;
 * 3. remove what was displaced.
 *
 * Whatever fails or is cancelled leaves neither a directory nor a row.
 */
import { join } from "node:path";
import { throwIfAborted } from "../../core/async/index.ts";
import type { Mutex } from "../../core/concurrency/index.ts";
import { removeTreeArgv, shortDigest } from "../../core/image/index.ts";
import type { Logger } from "../../core/log/index.ts";
import { imagePaths, type Layout } from "../../core/paths/index.ts";
import { BangerError, ErrorCode, type ProgressEvent } from "../../protocol/index.ts";
import type { Fs } from "../../sys/fs/index.ts";
import type { Runner } from "../../sys/runner/index.ts";
import type { ImageRecord, Store } from "../../sys/store/index.ts";
import type { StagedImage } from "./source.ts";

export type ImageFs = Pick<
  Fs,
  "mkdir" | "rm" | "rename" | "stat" | "readdir" | "readFile" | "writeFileAtomic"
>;

export interface ImageStoreDeps {
  store: Store;
  runner: Runner;
  layout: Layout;
  logger: Logger;
  /** Held only for a publication's commit atom and while an image is deleted. */
  publishMutex: Mutex;
  fs: ImageFs;
  now(): Date;
  newId(): string;
  /** The IMAGE_NOT_FOUND error for `ref`, with the hint of a source that could make it. */
  notFound(ref: string): BangerError;
}

export interface PublishRequest {
  /** The ref being made; without `force` an image already under that name is refused before any work. */
  ref: string;
  /** Replace an image of the same name (refused while a VM uses it). */
  force: boolean;
  signal: AbortSignal;
  progress: (event: ProgressEvent) => void;
  /** Fills the staging directory (see ImageSource.fetch). */
  fill(stagingDir: string): Promise<StagedImage>;
}

export interface ImageStore {
  list(): ImageRecord[];
  find(ref: string): ImageRecord | undefined;
  /** Refused (BAD_STATE) while a VM uses the image. */
  delete(name: string): Promise<void>;
  publish(request: PublishRequest): Promise<ImageRecord>;
  /** Removes half-made images left by a previous daemon. */
  cleanupStaging(): Promise<void>;
}

export function createImageStore(deps: ImageStoreDeps): ImageStore {
  const { store, layout, fs, logger: log } = deps;

  const find = (ref: string) => store.getImageByName(ref) ?? store.getImageById(ref);

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

  /** The commit atom, under the publish mutex. */
  async function commit(staged: StagedImage, stagingDir: string, force: boolean, sizeBytes: number) {
    return deps.publishMutex.run(async () => {
      const existing = store.getImageByName(staged.name);
      if (existing && !force) throw alreadyExists(staged.name);
      if (existing) refuseIfInUse(existing);
      const target = join(layout.imagesDir, shortDigest(staged.digest));
      const sharer = store.listImages().find((image) => image.dir === target && image.id !== existing?.id);
      if (sharer) {
        throw new BangerError(
          ErrorCode.BAD_STATE,
          `image '${sharer.name}' already lives in ${target}, with the same content as the new '${staged.name}'`,
          { hint: `use '${sharer.name}', or delete it with \`banger image delete ${sharer.name}\`` },
        );
      }
      // Whatever sits at the target now is the image being replaced or debris of an unfinished publish.
      const displaced = await moveAside(target);
      const paths = imagePaths(target);
      const published: ImageRecord = {
        id: deps.newId(),
        name: staged.name,
        kind: staged.kind,
        dir: target,
        kernel: paths.kernel,
        initrd: paths.initrd,
        rootfs: paths.rootfs,
        sizeBytes,
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
  }

  return {
    list: () => store.listImages(),
    find,

    async delete(name) {
      // The lock covers lookup, reference check, move-aside and row; the files go after it.
      const { image, aside } = await deps.publishMutex.run(async () => {
        const found = find(name);
        if (!found) throw deps.notFound(name);
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

    async publish(request) {
      if (!request.force && store.getImageByName(request.ref)) throw alreadyExists(request.ref);
      const started = deps.now();
      const stagingDir = join(layout.imageStagingDir, `build-${deps.newId()}`);
      const publishLog = log.child({ image: request.ref, staging: stagingDir });
      await fs.mkdir(stagingDir);
      try {
        const staged = await request.fill(stagingDir);
        throwIfAborted(request.signal, "image build before step 'publish'");
        const message = `publishing ${staged.name} (${shortDigest(staged.digest)})`;
        request.progress({ step: "image.publish", message, status: "start" });
        const rootfs = imagePaths(stagingDir).rootfs;
        const rootfsStat = await fs.stat(rootfs);
        if (!rootfsStat)
          throw new BangerError(ErrorCode.IMAGE_BUILD_FAILED, `the build produced no ${rootfs}`);
        const record = await commit(staged, stagingDir, request.force, rootfsStat.size);
        request.progress({ step: "image.publish", message, status: "done" });
        publishLog.info("image published", { dir: record.dir, ms: deps.now().getTime() - started.getTime() });
        return record;
      } catch (error) {
        await removeTree(stagingDir, publishLog);
        publishLog.error("image build failed", { error: String(error) });
        throw error;
      }
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
