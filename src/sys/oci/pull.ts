/**
 * Pulling an image into a tree: resolve the manifest (through an index by
 * platform), read and check the config, fetch the layers into the blob
 * cache in parallel with byte progress, and apply each layer to the tree (on
 * a thread of its own, flatten-thread.ts) as soon as it and every layer
 * below it are there. The source is a registry or a local archive
 * (`ImageReader`); both share the checks.
 */
import {
  checkConfigPlatform,
  type Descriptor,
  type ImageConfig,
  type ImageManifest,
  type ImageReference,
  manifestReference,
  type Platform,
  parseImageConfig,
  parseManifestDocument,
  selectManifest,
} from "../../core/oci/index.ts";
import { BangerError, ErrorCode, type ProgressStep } from "../../protocol/index.ts";
import type { BlobCache } from "./blob-cache.ts";
import { FlattenThread } from "./flatten-thread.ts";
import type { RegistryClient } from "./registry.ts";

/** Where an image's documents and blobs come from. */
export interface ImageReader {
  /** For messages: the reference or the file. */
  readonly what: string;
  /** The image manifest for the platform, with its digest. */
  resolve(platform: Platform): Promise<{ manifest: ImageManifest; digest: string }>;
  /** A small blob (the config), checked against its descriptor. */
  readBlob(descriptor: Descriptor): Promise<Buffer>;
  /** Writes a layer blob to `file`, checked against its descriptor. */
  fetchBlob(descriptor: Descriptor, file: string, onBytes: (delta: number) => void): Promise<void>;
}

export type PullProgress = (event: {
  step: ProgressStep;
  message: string;
  current?: number;
  total?: number;
}) => void;

export interface PulledImage {
  manifestDigest: string;
  configDigest: string;
  config: ImageConfig;
  layers: Descriptor[];
  /** Bytes of layers fetched now (not already cached). */
  fetchedBytes: number;
  /** Compressed bytes of all layers. */
  layerBytes: number;
}

export interface PullOptions {
  reader: ImageReader;
  platform: Platform;
  cache: BlobCache;
  /** An empty directory the image's filesystem is applied to. */
  tree: string;
  progress?: PullProgress | undefined;
  signal?: AbortSignal | undefined;
  /** Layers fetched at once (default 3). */
  parallel?: number | undefined;
}

export async function pullIntoTree(options: PullOptions): Promise<PulledImage> {
  const { reader, cache, progress } = options;
  const { manifest, digest } = await reader.resolve(options.platform);
  const configBytes = await reader.readBlob(manifest.config);
  const config = parseImageConfig(configBytes, `the config of ${reader.what}`);
  checkConfigPlatform(config, options.platform, reader.what);
  const diffIds = config.rootfs.diff_ids;
  if (diffIds.length !== manifest.layers.length) {
    throw new BangerError(
      ErrorCode.IMAGE_INVALID,
      `${reader.what} lists ${manifest.layers.length} layers but its config has ${diffIds.length} diff_ids`,
    );
  }
  const total = manifest.layers.reduce((sum, layer) => sum + layer.size, 0);
  let done = 0;
  let fetchedBytes = 0;
  const report = (delta: number): void => {
    done += delta;
    progress?.({
      step: "image.pull.layers",
      message: `fetching ${manifest.layers.length} layers`,
      current: done,
      total,
    });
  };
  // Layers whose blob this pull fetched and checked on its way into the cache: not hashed again.
  const checkedNow = new Set<number>();
  const fetches = runLimited(manifest.layers, options.parallel ?? 3, async (layer, index) => {
    const fetched = await cache.ensure(layer.digest, layer.size, (file) =>
      reader.fetchBlob(layer, file, (delta) => {
        fetchedBytes += delta;
        report(delta);
      }),
    );
    if (fetched) checkedNow.add(index);
    else report(layer.size);
  });
  // Awaited in order below; a later layer's failure must not count as unhandled meanwhile.
  for (const fetch of fetches) fetch.catch(() => undefined);
  // Each layer is applied, on the flatten thread, as soon as it and every layer below it are cached,
  // while this thread goes on fetching the layers above.
  const flattener = new FlattenThread(options.tree);
  try {
    for (const [index, layer] of manifest.layers.entries()) {
      await fetches[index];
      options.signal?.throwIfAborted();
      progress?.({
        step: "image.pull.apply",
        message: `applying layer ${index + 1} of ${manifest.layers.length}`,
        current: index,
        total: manifest.layers.length,
      });
      await flattener.apply(
        {
          file: cache.path(layer.digest),
          digest: layer.digest,
          diffId: diffIds[index],
          digestChecked: checkedNow.has(index),
        },
        index,
        options.signal,
      );
    }
    await flattener.finish(options.signal);
  } finally {
    await flattener.close();
    await Promise.allSettled(fetches);
  }
  return {
    manifestDigest: digest,
    configDigest: manifest.config.digest,
    config,
    layers: manifest.layers,
    fetchedBytes,
    layerBytes: total,
  };
}

/** Starts `work` for every item with at most `limit` running; one promise per item, in order. */
function runLimited<T>(
  items: readonly T[],
  limit: number,
  work: (item: T, index: number) => Promise<void>,
): Promise<void>[] {
  let running = 0;
  const waiting: (() => void)[] = [];
  return items.map(async (item, index) => {
    if (running >= limit) await new Promise<void>((resolve) => waiting.push(resolve));
    running += 1;
    try {
      await work(item, index);
    } finally {
      running -= 1;
      waiting.shift()?.();
    }
  });
}

/** A registry as an ImageReader. */
export function registryReader(client: RegistryClient, ref: ImageReference, what: string): ImageReader {
  return {
    what,
    async resolve(platform) {
      const top = await client.getManifest(ref.repository, manifestReference(ref));
      checkManifestDigest(top.digest, ref.digest ?? top.headerDigest, what);
      const document = parseManifestDocument(top.bytes, top.contentType, `the manifest of ${what}`);
      if (document.kind === "manifest") return { manifest: document.manifest, digest: top.digest };
      const chosen = selectManifest(document.index, platform, what);
      const inner = await client.getManifest(ref.repository, chosen.digest);
      checkManifestDigest(inner.digest, chosen.digest, what);
      const resolved = parseManifestDocument(inner.bytes, inner.contentType, `the manifest of ${what}`);
      if (resolved.kind !== "manifest") {
        throw new BangerError(ErrorCode.IMAGE_INVALID, `${what}: an index entry points at another index`);
      }
      return { manifest: resolved.manifest, digest: inner.digest };
    },
    readBlob: (descriptor) => client.getBlob(ref.repository, descriptor),
    fetchBlob: (descriptor, file, onBytes) => client.downloadBlob(ref.repository, descriptor, file, onBytes),
  };
}

function checkManifestDigest(actual: string, expected: string | undefined, what: string): void {
  if (expected !== undefined && actual !== expected) {
    throw new BangerError(
      ErrorCode.IMAGE_INVALID,
      `the manifest of ${what} has digest ${actual}, expected ${expected}`,
      {
        hint: "the registry served a manifest that does not match its digest; nothing was published",
      },
    );
  }
}
