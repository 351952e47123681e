/**
 * Doctor checks of the image store: the blob cache's size (with `image
 * prune` as the fix when it is large) and `setfattr`, which pulls need for
 * images whose files carry extended attributes. Pulls need no skopeo,
 * umoci or Docker.
 */
import type { DoctorCheck } from "../../protocol/index.ts";
import type { BlobCache } from "../../sys/oci/blob-cache.ts";
import type { Runner } from "../../sys/runner/index.ts";

const LARGE_CACHE_BYTES = 20 * 1024 ** 3;

export async function imageDoctorChecks(deps: {
  blobs: Pick<BlobCache, "list">;
  runner: Runner;
}): Promise<DoctorCheck[]> {
  const blobs = await deps.blobs.list();
  const bytes = blobs.reduce((sum, blob) => sum + blob.size, 0);
  const cache: DoctorCheck = {
    name: "image-blob-cache",
    status: bytes > LARGE_CACHE_BYTES ? "warn" : "ok",
    detail: `${blobs.length} layer blobs, ${(bytes / 1024 ** 2).toFixed(1)} MiB (registry pulls need no skopeo, umoci or Docker)`,
    ...(bytes > LARGE_CACHE_BYTES
      ? { hint: "run `banger image prune` to remove the blobs no image uses" }
      : {}),
  };
  const setfattr = await deps.runner
    .run(["setfattr", "--version"], { allowFailure: true })
    .catch(() => undefined);
  const xattrs: DoctorCheck =
    setfattr?.code === 0
      ? {
          name: "setfattr",
          status: "ok",
          detail: "found (keeps the extended attributes of pulled images' files)",
        }
      : {
          name: "setfattr",
          status: "warn",
          detail: "not found: pulling an image whose files carry extended attributes fails",
          hint: "apt-get install attr",
        };
  return [cache, xattrs];
}
