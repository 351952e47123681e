/**
 * Resolving an image reference: an image already in the store, else the
 * first registered source that matches the ref makes it through the
 * store's publication path. Concurrent callers for one ref share one
 * fetch, which stops only when every caller has given up.
 */
import { defaultCatalogEntry, findCatalogEntry } from "../../core/image/index.ts";
import { BangerError, ErrorCode, type ProgressEvent } from "../../protocol/index.ts";
import type { ImageRecord } from "../../sys/store/index.ts";
import { SharedTask } from "./shared-task.ts";
import type { ImageSource } from "./source.ts";
import type { ImageStore } from "./store.ts";

export interface MakeOptions {
  signal?: AbortSignal | undefined;
  progress?: ((event: ProgressEvent) => void) | undefined;
  /** Replace an existing image of that name (refused while a VM uses it). */
  force?: boolean | undefined;
}

/** IMAGE_NOT_FOUND for `ref`, hinting how a matching source would make it. */
export function imageNotFound(ref: string, sources: readonly ImageSource[]): BangerError {
  const source = sources.find((candidate) => candidate.matches(ref));
  return new BangerError(ErrorCode.IMAGE_NOT_FOUND, `no image named '${ref}'`, {
    hint:
      source?.hint(ref) ??
      `run \`banger image list\` to see the images; '${defaultCatalogEntry().name}' is built on first use`,
  });
}

export function createImageResolver(deps: {
  store: ImageStore;
  sources: readonly ImageSource[];
  /** The configured default image (vm.default_image). */
  defaultImage?: string | undefined;
}) {
  const { store, sources } = deps;
  // build-default builds the configured default when the catalog has it (an OCI default is pulled, not built).
  const defaultBuild =
    deps.defaultImage && findCatalogEntry(deps.defaultImage) ? deps.defaultImage : defaultCatalogEntry().name;
  const inFlight = new Map<string, SharedTask<ImageRecord, ProgressEvent>>();

  /** Joins the fetch of `ref` in flight, or starts one. */
  function make(ref: string, source: ImageSource, options: MakeOptions): Promise<ImageRecord> {
    let task = inFlight.get(ref);
    if (!task) {
      task = new SharedTask<ImageRecord, ProgressEvent>();
      inFlight.set(ref, task);
    }
    const shared = task;
    return shared
      .join(
        (signal, progress) =>
          store.publish({
            ref,
            force: options.force ?? false,
            signal,
            progress,
            fill: (stagingDir) => source.fetch(ref, stagingDir, { signal, progress }),
          }),
        { signal: options.signal, onEvent: options.progress },
      )
      .finally(() => {
        if (!shared.busy && inFlight.get(ref) === shared) inFlight.delete(ref);
      });
  }

  function sourceFor(ref: string): ImageSource {
    const source = sources.find((candidate) => candidate.matches(ref));
    if (!source) throw imageNotFound(ref, sources);
    return source;
  }

  return {
    get(ref: string): ImageRecord {
      const image = store.find(ref);
      if (!image) throw imageNotFound(ref, sources);
      return image;
    },

    async resolve(ref: string, options: MakeOptions = {}): Promise<ImageRecord> {
      const image = store.find(ref);
      if (image) return image;
      return make(ref, sourceFor(ref), { signal: options.signal, progress: options.progress });
    },

    /** Builds the default catalog image, joining a build of it already in flight. */
    async buildDefault(options: MakeOptions = {}): Promise<ImageRecord> {
      return make(defaultBuild, sourceFor(defaultBuild), options);
    },
  };
}
