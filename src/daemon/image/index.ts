/**
 * The image subsystem: the image store and its one publication path
 * (store.ts), the sources that make images (source.ts; the catalog build in
 * build.ts is built in, others are registered by the composition root),
 * resolving a ref for a VM (resolve.ts) and the vmlinux cache (vmlinux.ts).
 */
import type { ProgressEvent } from "../../protocol/index.ts";
import type { ImageRecord } from "../../sys/store/index.ts";
import { type CatalogSourceDeps, createCatalogSource } from "./build.ts";
import { createImageResolver, imageNotFound } from "./resolve.ts";
import type { ImageSource } from "./source.ts";
import { createImageStore, type ImageStoreDeps } from "./store.ts";
import { createVmlinuxCache, type VmlinuxDeps } from "./vmlinux.ts";

export type { FetchOptions, ImageSource, StagedImage } from "./source.ts";
export type { ImageFs } from "./store.ts";

export interface ImageServiceDeps
  extends Omit<ImageStoreDeps, "notFound">,
    Omit<CatalogSourceDeps, "logger">,
    Pick<VmlinuxDeps, "extractVmlinux"> {
  /** Sources tried after the catalog build, in order (the capabilities registry's). */
  sources?: readonly ImageSource[] | undefined;
  /** vm.default_image: what build-default builds when the catalog has it. */
  defaultImage?: string | undefined;
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
  /** The image a VM should use; a missing one a source matches is made first. */
  resolve(ref: string, options?: BuildOptions): Promise<ImageRecord>;
  buildDefault(options?: BuildDefaultOptions): Promise<ImageRecord>;
  /** Removes half-made images left by a previous daemon; called at start-up. */
  cleanupStaging(): Promise<void>;
  /**
   * The image's kernel as an ELF vmlinux (for Firecracker before 1.17):
   * extracted from its bzImage on first use and kept beside it.
   */
  vmlinux(image: ImageRecord, options?: { signal?: AbortSignal | undefined }): Promise<string>;
}

export function createImageService(deps: ImageServiceDeps): ImageService {
  const logger = deps.logger.child({ service: "image" });
  const sources: ImageSource[] = [createCatalogSource({ ...deps, logger }), ...(deps.sources ?? [])];
  const store = createImageStore({ ...deps, logger, notFound: (ref) => imageNotFound(ref, sources) });
  const resolver = createImageResolver({ store, sources, defaultImage: deps.defaultImage });
  return {
    list: () => store.list(),
    get: (ref) => resolver.get(ref),
    delete: (name) => store.delete(name),
    resolve: (ref, options) => resolver.resolve(ref, options),
    buildDefault: (options) => resolver.buildDefault(options),
    cleanupStaging: () => store.cleanupStaging(),
    vmlinux: createVmlinuxCache({ ...deps, logger }),
  };
}
