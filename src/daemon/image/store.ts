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

  function refuseIfInUse(image: ImageRecord): void {
    const users = store.countVmsUsingImage(image.id);
    if (users > 0) {
      throw new BangerError(
        ErrorCode.BAD_STATE,
        `image '${image.name}' is used by ${users} VM${users === 1 ? "" : "s"}`,
        { hint: "delete those VMs first (`banger vm list` shows them)" },
      );
    }
    // A snapshot's disk is an overlay over the image's rootfs (or a copy made over it).
    const snapshots = store.countSnapshotsUsingImage(image.id);
    if (snapshots > 0) {
      throw new BangerError(
        ErrorCode.BAD_STATE,
        `image '${image.name}' backs ${snapshots} snapshot${snapshots === 1 ? "" : "s"}`,
        { hint: "delete them first (`banger snapshot ls` shows them)" },
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

  const commitDeps = { store, layout, fs, newId: deps.newId, publishMutex: deps.publishMutex };

  return {
    list: () => store.listImages(),
    find,

    async delete(name) {
      // The lock covers lookup, reference check, move-aside and row; the files go after it.
      const { image, aside } = await deps.publishMutex.run(async () => {
        const found = find(name);
        if (!found) throw deps.notFound(name);
        refuseIfInUse(found);
        const moved = await moveAside(commitDeps, found.dir);
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
      const existing = store.getImageByName(request.ref);
      if (!request.force && existing) throw alreadyExists(request.ref);
      // Checked again at publication; refusing here spares a whole build that could not be published.
      if (existing) refuseIfInUse(existing);
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
        const paths = imagePaths(join(layout.imagesDir, shortDigest(staged.digest)));
        const record = await commitImage(commitDeps, {
          stagingDir,
          record: {
            id: deps.newId(),
            name: staged.name,
            kind: staged.kind,
            dir: paths.dir,
            kernel: paths.kernel,
            initrd: paths.initrd,
            rootfs: paths.rootfs,
            sizeBytes: rootfsStat.size,
            createdAt: deps.now().toISOString(),
          },
          onExisting(existing) {
            if (!request.force) throw alreadyExists(staged.name);
            refuseIfInUse(existing);
            return "replace";
          },
        });
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

export interface CommitDeps {
  store: Pick<Store, "getImageByName" | "listImages" | "transaction" | "deleteImage" | "insertImage">;
  layout: Pick<Layout, "imageStagingDir">;
  fs: Pick<ImageFs, "mkdir" | "rename" | "rm" | "stat">;
  newId(): string;
  publishMutex: Mutex;
}

export interface CommitRequest {
  /** The row to insert; `record.dir` is where the staging directory goes. */
  record: ImageRecord;
  stagingDir: string;
  /**
   * Called under the mutex with the image that holds the name now: throw to
   * refuse, return an image to answer with it and publish nothing (the
   * caller removes its staging directory), or "replace" to take its place.
   */
  onExisting(existing: ImageRecord): ImageRecord | "replace";
}

/**
 * The publication atom every way of making an image ends in, under the
 * publish mutex: the name's re-check (the caller's policy), a refusal when
 * another image owns the target directory, debris at the target moved
 * aside, one rename of the staging directory, one transaction swapping the
 * rows; the displaced directories are removed after the lock is released.
 * A failure puts back what it moved.
 */
export async function commitImage(deps: CommitDeps, request: CommitRequest): Promise<ImageRecord> {
  const { store, fs } = deps;
  const { record, stagingDir } = request;
  const { published, leftovers } = await deps.publishMutex.run(async () => {
    const existing = store.getImageByName(record.name);
    if (existing) {
      const decision = request.onExisting(existing);
      if (decision !== "replace") return { published: decision, leftovers: [] };
    }
    const sharer = store.listImages().find((image) => image.dir === record.dir && image.id !== existing?.id);
    if (sharer) {
      throw new BangerError(
        ErrorCode.BAD_STATE,
        `image '${sharer.name}' already lives in ${record.dir}, with the same content as the new '${record.name}'`,
        { hint: `use '${sharer.name}', or delete it with \`banger image delete ${sharer.name}\`` },
      );
    }
    // Whatever sits at the target now is the image being replaced or debris of an unfinished publish.
    const displaced = await moveAside(deps, record.dir);
    try {
      await fs.rename(stagingDir, record.dir);
      try {
        store.transaction(() => {
          if (existing) store.deleteImage(existing.id);
          store.insertImage(record);
        });
      } catch (error) {
        await fs.rename(record.dir, stagingDir);
        throw error;
      }
    } catch (error) {
      if (displaced) await fs.rename(displaced, record.dir);
      throw error;
    }
    const replaced = existing && existing.dir !== record.dir ? existing.dir : undefined;
    return { published: record, leftovers: [displaced, replaced].filter((dir) => dir !== undefined) };
  });
  // The displaced files go after the lock is released.
  for (const dir of leftovers) await fs.rm(dir);
  return published;
}

/** Renames `dir` into the staging area (so a crash leaves only debris there); undefined if absent. */
async function moveAside(
  deps: Omit<CommitDeps, "store" | "publishMutex">,
  dir: string,
): Promise<string | undefined> {
  if (!(await deps.fs.stat(dir))) return undefined;
  const aside = join(deps.layout.imageStagingDir, `old-${deps.newId()}`);
  await deps.fs.mkdir(deps.layout.imageStagingDir);
  await deps.fs.rename(dir, aside);
  return aside;
}

function alreadyExists(name: string): BangerError {
  return new BangerError(ErrorCode.BAD_STATE, `image '${name}' already exists`, {
    hint: "rebuild it with `banger image build-default --force`, or delete it first",
  });
}
