/** Content identity of images and of build recipes (pure hashing). */
import { createHash } from "node:crypto";
import type { ImageRecipe } from "./catalog.ts";

export interface NamedContent {
  name: string;
  content: Uint8Array | string;
}

/** Bumped when the build steps change in a way the recipe does not show. */
const BUILD_FORMAT = 1;

/** Hex digits of a digest used as an image directory or cache entry name. */
const SHORT_DIGEST_LENGTH = 16;

interface ImageDigestInputs {
  kernel: Uint8Array;
  initrd: Uint8Array;
  guestFiles: readonly NamedContent[];
  /** The installed packages, one "name version" per line. */
  packageList: string;
}

/**
 * sha256 over what makes an image what it is: kernel, initramfs, banger's
 * guest files and the installed package versions. The rootfs image itself is
 * left out: it is 1 GiB and its bytes vary (timestamps, UUID) between
 * identical builds.
 */
export function imageDigest(inputs: ImageDigestInputs): string {
  const hash = createHash("sha256");
  hashPart(hash, "kernel", inputs.kernel);
  hashPart(hash, "initrd", inputs.initrd);
  for (const file of sortedByName(inputs.guestFiles)) hashPart(hash, `guest/${file.name}`, file.content);
  hashPart(hash, "packages", normalizePackageList(inputs.packageList));
  return hash.digest("hex");
}

/** sha256 over what a build is made from; the build-cache key. */
export function recipeHash(recipe: ImageRecipe, guestFiles: readonly NamedContent[]): string {
  const hash = createHash("sha256");
  hashPart(hash, "format", String(BUILD_FORMAT));
  hashPart(hash, "recipe", JSON.stringify(recipe));
  for (const file of sortedByName(guestFiles)) hashPart(hash, `guest/${file.name}`, file.content);
  return hash.digest("hex");
}

export function shortDigest(digest: string): string {
  return digest.slice(0, SHORT_DIGEST_LENGTH);
}

/** One "name version" per line, sorted, no blank lines. */
function normalizePackageList(text: string): string {
  const lines = text
    .split("\n")
    .map((line) => line.trim())
    .filter((line) => line !== "");
  return `${lines.sort().join("\n")}\n`;
}

function sortedByName(files: readonly NamedContent[]): NamedContent[] {
  return [...files].sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
}

/** Length-prefixed, so no two different part lists hash the same. */
function hashPart(hash: ReturnType<typeof createHash>, label: string, content: Uint8Array | string): void {
  const bytes = typeof content === "string" ? Buffer.from(content, "utf8") : content;
  hash.update(`${label}\0${bytes.byteLength}\0`);
  hash.update(bytes);
}
