/**
 * The name policy of pulled, imported, built, registered and promoted
 * images, applied inside the store's one publication atom (`commitImage`
 * in store.ts: re-check the name, rename the staging directory into
 * `images/<id>`, one store transaction, under the publication mutex).
 * Everything slow happens before, unlocked, in the caller's staging
 * directory.
 */
import { BangerError, ErrorCode } from "../../protocol/index.ts";
import type { ImageRecord, Store } from "../../sys/store/index.ts";
import { type CommitDeps, commitImage } from "./store.ts";

export interface PublisherDeps extends CommitDeps {
  store: CommitDeps["store"] & Pick<Store, "listVms">;
}

/**
 * Returns `publish(record, stagingDir, replaces)`. An image of that name
 * with the same OCI manifest is returned as is. Another image there is
 * replaced only if it is `replaces` (it held the name when the caller
 * started) and no VM uses it; one published meanwhile keeps the name and
 * the caller fails NAME_TAKEN. The caller removes its staging directory.
 */
export function createPublisher(deps: PublisherDeps) {
  const { store } = deps;
  return (record: ImageRecord, stagingDir: string, replaces: string | undefined): Promise<ImageRecord> =>
    commitImage(deps, {
      record,
      stagingDir,
      onExisting(existing) {
        if (existing.kind === "oci" && record.digest && existing.digest === record.digest) return existing;
        if (existing.id !== replaces) {
          throw new BangerError(
            ErrorCode.NAME_TAKEN,
            `image '${record.name}' was published by another operation meanwhile`,
            {
              hint: "use another name, or run the command again to replace it",
            },
          );
        }
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
        return "replace";
      },
    });
}
