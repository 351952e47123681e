import type { BlobCache } from "../../../sys/oci/blob-cache.ts";
import type { Runner } from "../../../sys/runner/index.ts";
import type { HostCheck } from "./check.ts";

/** A blob cache past this warns, with `image prune` as the fix. */
export const LARGE_CACHE_BYTES = 20 * 1024 ** 3;

/**
 * The image store: the blob cache's size (`image prune` is the fix when it
 * is large), that OCI images need no skopeo, umoci or Docker (banger's own
 * registry client, flattener and importer do their work), and `setfattr`,
 * which pulls need for images whose files carry extended attributes.
 */
export function imageStoreCheck(deps: { blobs: Pick<BlobCache, "list">; runner: Runner }): HostCheck {
  return {
    name: "image-blob-cache",
    async run() {
      const blobs = await deps.blobs.list();
      const bytes = blobs.reduce((sum, blob) => sum + blob.size, 0);
      const large = bytes > LARGE_CACHE_BYTES;
      const setfattr = await deps.runner
        .run(["setfattr", "--version"], { allowFailure: true })
        .catch(() => undefined);
      return [
        {
          name: "image-blob-cache",
          status: large ? "warn" : "ok",
          detail: `${blobs.length} layer blobs, ${(bytes / 1024 ** 2).toFixed(1)} MiB`,
          ...(large ? { hint: "run `banger image prune` to remove the blobs no image uses" } : {}),
        },
        {
          name: "oci-tools",
          status: "ok",
          detail:
            "none needed: banger pulls, flattens and imports OCI images itself (no skopeo, umoci or Docker at run time; buildah only for `image build`)",
        },
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
            },
      ];
    },
  };
}
