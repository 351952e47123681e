/**
 * The publication atom of pulled, imported, built, registered and promoted
 * images, under the image publication mutex: re-check the name, rename the
 * staging directory into `images/<id>`, one store transaction. Everything
 * slow happens before, unlocked, in the caller's staging directory.
 */
import type { Mutex } from "../../core/concurrency/index.ts";
import { BangerError, ErrorCode } from "../../protocol/index.ts";
import type { Fs } from "../../sys/fs/index.ts";
import type { ImageRecord, Store } from "../../sys/store/index.ts";

export interface PublisherDeps {
  store: Pick<Store, "getImageByName" | "listVms" | "transaction" | "deleteImage" | "insertImage">;
  fs: Pick<Fs, "rename" | "rm">;
  publishMutex: Mutex;
}

/**
 * Returns `publish(record, stagingDir, replaces)`. An image of that name
 * with the same OCI manifest is returned as is. Another image there is
 * replaced only if it is `replaces` (it held the name when the caller
 * started) and no VM uses it; one published meanwhile keeps the name and
 * the caller fails NAME_TAKEN. The caller removes its staging directory.
 */
export function createPublisher(deps: PublisherDeps) {
  const { store, fs } = deps;
  return async (
    record: ImageRecord,
    stagingDir: string,
    replaces: string | undefined,
  ): Promise<ImageRecord> => {
    const { published, displaced } = await deps.publishMutex.run(async () => {
      const existing = store.getImageByName(record.name);
      if (existing && existing.kind === "oci" && record.digest && existing.digest === record.digest) {
        return { published: existing, displaced: undefined };
      }
      if (existing && existing.id !== replaces) {
        throw new BangerError(
          ErrorCode.NAME_TAKEN,
          `image '${record.name}' was published by another operation meanwhile`,
          {
            hint: "use another name, or run the command again to replace it",
          },
        );
      }
      if (existing) {
        const users = store
          .listVms()
          .filter((vm) => vm.imageId === existing.id)
          .map((vm) => vm.name);
        if (users.length > 0) {
          throw new BangerError(
            ErrorCode.NAME_TAKEN,
            `image '${record.name}' exists with other content and VMs use it (${users.join(", ")})`,
            { hint: "use another name, or delete those VMs first" },
          );
        }
      }
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
      return { published: record, displaced: existing?.dir };
    });
    // The replaced image's files go after the lock is released.
    if (displaced) await fs.rm(displaced);
    return published;
  };
}
