/**
 * `vm create --image REF` resolution: stored names and catalog entries
 * first, then a registry reference pulled once however many creates ask
 * for it at the same time; an OCI image resolves like any other (it boots
 * the default image's kernel).
 */
import assert from "node:assert/strict";
import { test } from "node:test";
import { withAutoPull } from "../../src/daemon/image/oci.ts";
import { BangerError, ErrorCode } from "../../src/protocol/index.ts";
import type { ImageRecord } from "../../src/sys/store/index.ts";

function record(name: string, kind: string): ImageRecord {
  return {
    id: name,
    name,
    kind,
    dir: "/d",
    kernel: "/k",
    initrd: null,
    rootfs: "/r",
    sizeBytes: 1,
    createdAt: "now",
  };
}

test("stored images resolve first; references are pulled once, then resolve from the store", async () => {
  const stored = new Map<string, ImageRecord>([["debian-bookworm", record("debian-bookworm", "debian")]]);
  let pulls = 0;
  let release!: () => void;
  const gate = new Promise<void>((resolve) => {
    release = resolve;
  });
  const resolver = withAutoPull(
    {
      resolve: async (ref) => {
        const found = stored.get(ref);
        if (!found) throw new BangerError(ErrorCode.IMAGE_NOT_FOUND, `no image named '${ref}'`);
        return found;
      },
      vmlinux: async () => "/vmlinux",
    },
    {
      pull: async (request) => {
        pulls += 1;
        assert.equal(request.reference, "alpine");
        await gate;
        const pulled = record("alpine:latest", "oci");
        stored.set(pulled.name, pulled);
        return pulled;
      },
    },
    { getImageByName: (name) => stored.get(name) },
  );
  assert.equal((await resolver.resolve("debian-bookworm")).kind, "debian");
  const first = resolver.resolve("alpine");
  const second = resolver.resolve("alpine");
  release();
  assert.deepEqual(
    (await Promise.all([first, second])).map((image) => [image.name, image.kind]),
    [
      ["alpine:latest", "oci"],
      ["alpine:latest", "oci"],
    ],
  );
  assert.equal(pulls, 1);
  assert.equal((await resolver.resolve("alpine")).name, "alpine:latest");
  assert.equal(pulls, 1, "a stored reference is not pulled again");
  await assert.rejects(resolver.resolve("Bad Name"), { code: "IMAGE_NOT_FOUND" });
});
