/**
 * The seam every way of getting an image plugs into. A source only fills a
 * private staging directory; publishing what it left there (the recheck of
 * the name, the atomic rename, the row) is the image store's, the same for
 * every source (store.ts).
 */
import type { ProgressEvent } from "../../protocol/index.ts";

export interface FetchOptions {
  /** Aborted when every caller waiting for this image has given up. */
  signal: AbortSignal;
  progress: (event: ProgressEvent) => void;
}

/** What a source has staged: the files at `imagePaths(stagingDir)` and their identity. */
export interface StagedImage {
  /** The name the image is published under. */
  name: string;
  kind: string;
  /** The content digest; it names the image's directory. */
  digest: string;
}

export interface ImageSource {
  readonly name: string;
  /** Whether this source can make the image `ref` names (checked in registration order). */
  matches(ref: string): boolean;
  /** The hint for an IMAGE_NOT_FOUND of a ref this source matches: how to get it. */
  hint(ref: string): string;
  /**
   * Writes the image into `stagingDir` (kernel, initrd, rootfs and manifest
   * as `imagePaths` names them), holding no lock. A failure or an abort may
   * leave anything in `stagingDir`; the store removes it.
   */
  fetch(ref: string, stagingDir: string, options: FetchOptions): Promise<StagedImage>;
}
