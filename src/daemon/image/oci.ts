/**
 * OCI images in the image store: `image pull` from a registry and `image
 * import` of a local archive run the image worker (fetch into the shared
 * blob cache, flatten, mkfs) in a fresh staging directory without any
 * lock, then publish under the publication mutex: re-check the name, one
 * rename of the staging directory, one row. Two pulls that race for one
 * name have one winner; the loser's staging directory is removed (when it
 * pulled the same manifest it returns the winner's image). `prune` removes
 * blobs no image references; `login` stores registry credentials.
 */
import { join } from "node:path";
import type { Mutex } from "../../core/concurrency/index.ts";
import type { Logger } from "../../core/log/index.ts";
import {
  type Credentials,
  credentialsFromConfig,
  familiarReference,
  formatReference,
  hostPlatform,
  parsePlatform,
  parseReference,
  type RunDefaults,
  runDefaultsOf,
  withCredentials,
} from "../../core/oci/index.ts";
import type { Layout } from "../../core/paths/index.ts";
import { BangerError, ErrorCode, type ProgressEvent } from "../../protocol/index.ts";
import type { Fs } from "../../sys/fs/index.ts";
import type { BlobCache } from "../../sys/oci/blob-cache.ts";
import type { WorkerRequest, WorkerResult, WorkerRunOptions } from "../../sys/oci/worker-client.ts";
import type { ImageRecord, Store } from "../../sys/store/index.ts";
import type { ImageService } from "./index.ts";
import { createPublisher } from "./publish.ts";

/** What an OCI image's row keeps in `meta`. */
export interface OciImageMeta {
  platform: string;
  layers: string[];
  configDigest: string;
  runDefaults: RunDefaults;
}

export interface OciImagesDeps {
  store: Store;
  layout: Layout;
  logger: Logger;
  publishMutex: Mutex;
  now(): Date;
  newId(): string;
  fs: Pick<Fs, "mkdir" | "rm" | "rename" | "stat" | "readFile" | "writeFileAtomic">;
  runWorker(options: WorkerRunOptions): Promise<WorkerResult>;
  /** Copies a file (sparse, reflinked where the filesystem can). */
  copyFile(from: string, to: string): Promise<void>;
  blobs: Pick<BlobCache, "list" | "remove" | "clearDebris">;
  /** Argv prefix that puts the worker in the host's network namespace (BANGER_NETNS). */
  launcher?: readonly string[] | undefined;
  /** docker's config.json, for credentials (`$DOCKER_CONFIG/config.json` or `~/.docker/config.json`). */
  dockerConfigFile?: string | undefined;
  /** Registries spoken to over plain HTTP besides loopback ones. */
  insecureRegistries?: readonly string[] | undefined;
}

interface Options {
  signal?: AbortSignal | undefined;
  progress?: ((event: ProgressEvent) => void) | undefined;
}

export interface PullRequest {
  reference: string;
  /** Store under this name instead of the reference. */
  name?: string | undefined;
  platform?: string | undefined;
  insecureRegistries?: readonly string[] | undefined;
}

export interface ImportRequest {
  path: string;
  /** Recorded as the image's source instead of the path. */
  source?: string | undefined;
  name?: string | undefined;
  tag?: string | undefined;
  platform?: string | undefined;
}

export interface RegisterRequest {
  name: string;
  rootfs: string;
  kernel: string;
  initrd?: string | undefined;
}

export interface PruneResult {
  blobs: number;
  bytes: number;
}

export interface OciImages {
  pull(request: PullRequest, options?: Options): Promise<ImageRecord>;
  import(request: ImportRequest, options?: Options): Promise<ImageRecord>;
  /** Removes blobs that no image references (and cache debris). */
  prune(): Promise<PruneResult>;
  /** Copies a root filesystem, a kernel and an initrd made elsewhere into the store. */
  register(request: RegisterRequest): Promise<ImageRecord>;
  login(registry: string, credentials: Credentials): Promise<void>;
  logout(registry: string): Promise<boolean>;
}

/** The archive's own name for the image in docker's short form, if it is a valid reference. */
function nameFromArchive(suggested: string | undefined): string | undefined {
  if (!suggested) return undefined;
  try {
    return familiarReference(parseReference(suggested));
  } catch {
    return undefined;
  }
}

export function ociMetaOf(image: ImageRecord): OciImageMeta | undefined {
  if (!image.meta) return undefined;
  try {
    return JSON.parse(image.meta) as OciImageMeta;
  } catch {
    return undefined;
  }
}

export function createOciImages(deps: OciImagesDeps): OciImages {
  const { store, layout, fs } = deps;
  const log = deps.logger.child({ service: "image-oci" });
  /** Start times of pulls in flight: their blobs are not referenced by a row yet, so prune keeps newer blobs. */
  const inFlight = new Map<string, number>();
  const publish = createPublisher({ store, layout, fs, newId: deps.newId, publishMutex: deps.publishMutex });

  async function readJson(path: string | undefined): Promise<unknown> {
    if (!path) return undefined;
    const text = await fs.readFile(path).catch(() => undefined);
    if (text === undefined) return undefined;
    try {
      return JSON.parse(text.toString());
    } catch {
      return undefined;
    }
  }

  async function credentialsFor(registry: string): Promise<Credentials | undefined> {
    return (
      credentialsFromConfig(await readJson(layout.registryAuthFile), registry) ??
      credentialsFromConfig(await readJson(deps.dockerConfigFile), registry)
    );
  }

  /** `name` is known up front for pulls; an import may take the name its archive gives. */
  async function runInStaging(
    request: Omit<WorkerRequest, "stagingDir" | "blobsDir">,
    name: string | ((result: WorkerResult) => string),
    source: string,
    options: Options,
  ): Promise<ImageRecord> {
    const id = deps.newId();
    /** The image this pull may replace: the one holding the name when it started. */
    let replaces = typeof name === "string" ? store.getImageByName(name)?.id : undefined;
    const stagingDir = join(layout.imageStagingDir, `pull-${id}`);
    await fs.mkdir(layout.blobsDir);
    await fs.mkdir(stagingDir);
    const started = deps.now();
    inFlight.set(id, started.getTime() - 1000);
    try {
      const result = await deps.runWorker({
        request: { ...request, stagingDir, blobsDir: layout.blobsDir },
        launcher: request.source.kind === "registry" ? deps.launcher : undefined,
        compileCacheDir: join(layout.cacheDir, "image-worker"),
        signal: options.signal,
        onProgress: (event) => options.progress?.({ status: "running", ...event }),
      });
      const imageName = typeof name === "string" ? name : name(result);
      if (typeof name !== "string") replaces = store.getImageByName(imageName)?.id;
      const meta: OciImageMeta = {
        platform: request.platform,
        layers: result.layers.map((layer) => layer.digest),
        configDigest: result.configDigest,
        runDefaults: runDefaultsOf(result.config),
      };
      const record: ImageRecord = {
        id,
        name: imageName,
        kind: "oci",
        dir: join(layout.imagesDir, id),
        kernel: "",
        initrd: null,
        rootfs: join(layout.imagesDir, id, "rootfs.ext4"),
        sizeBytes: result.rootfsBytes,
        createdAt: deps.now().toISOString(),
        source,
        digest: result.manifestDigest,
        meta: JSON.stringify(meta),
      };
      options.progress?.({ step: "image.publish", message: `publishing ${imageName}`, status: "running" });
      const published = await publish(record, stagingDir, replaces);
      log.info("image pulled", {
        image: imageName,
        source,
        digest: result.manifestDigest,
        fetchedBytes: result.fetchedBytes,
        ms: deps.now().getTime() - started.getTime(),
      });
      return published;
    } finally {
      inFlight.delete(id);
      await fs.rm(stagingDir);
    }
  }

  return {
    async pull(request, options = {}) {
      const ref = parseReference(request.reference);
      const platform = request.platform ?? "";
      const canonicalPlatform = platform ? platform : `linux/${hostPlatform(process.arch).architecture}`;
      parsePlatform(canonicalPlatform);
      const name = request.name ?? familiarReference(ref);
      return runInStaging(
        {
          source: {
            kind: "registry",
            reference: formatReference(ref),
            credentials: await credentialsFor(ref.registry),
            insecureRegistries: [...(deps.insecureRegistries ?? []), ...(request.insecureRegistries ?? [])],
          },
          platform: canonicalPlatform,
        },
        name,
        formatReference(ref),
        options,
      );
    },

    async import(request, options = {}) {
      const platform = request.platform ?? `linux/${hostPlatform(process.arch).architecture}`;
      parsePlatform(platform);
      const fallback = `import-${deps.newId().slice(0, 8)}`;
      return runInStaging(
        { source: { kind: "archive", path: request.path, tag: request.tag }, platform },
        request.name ?? ((result) => nameFromArchive(result.suggestedName) ?? fallback),
        request.source ?? request.path,
        options,
      );
    },

    async prune() {
      const referenced = new Set<string>();
      for (const image of store.listImages()) {
        const meta = ociMetaOf(image);
        for (const digest of [...(meta?.layers ?? []), meta?.configDigest])
          if (digest) referenced.add(digest);
      }
      return deps.publishMutex.run(async () => {
        const keepAfter = Math.min(Number.POSITIVE_INFINITY, ...inFlight.values());
        let blobs = 0;
        let bytes = 0;
        for (const blob of await deps.blobs.list()) {
          if (referenced.has(blob.digest) || blob.mtimeMs >= keepAfter) continue;
          await deps.blobs.remove(blob.digest);
          blobs += 1;
          bytes += blob.size;
        }
        if (inFlight.size === 0) await deps.blobs.clearDebris();
        log.info("blobs pruned", { blobs, bytes });
        return { blobs, bytes };
      });
    },

    async register(request) {
      const id = deps.newId();
      const stagingDir = join(layout.imageStagingDir, `register-${id}`);
      const files: [string, string | undefined][] = [
        ["rootfs.ext4", request.rootfs],
        ["vmlinuz", request.kernel],
        ["initrd.gz", request.initrd],
      ];
      for (const [, path] of files) {
        if (path === undefined) continue;
        const found = await fs.stat(path);
        if (!found || found.isDirectory) {
          throw new BangerError(ErrorCode.INVALID_PARAMS, `${path} is not a file`, {
            hint: "image register takes the paths of a root filesystem image, a kernel and optionally an initrd",
          });
        }
      }
      if (store.getImageByName(request.name)) {
        throw new BangerError(ErrorCode.NAME_TAKEN, `an image named '${request.name}' exists`, {
          hint: "pick another name, or delete that image first",
        });
      }
      await fs.mkdir(stagingDir);
      try {
        for (const [file, path] of files)
          if (path !== undefined) await deps.copyFile(path, join(stagingDir, file));
        const dir = join(layout.imagesDir, id);
        const record: ImageRecord = {
          id,
          name: request.name,
          kind: "registered",
          dir,
          kernel: join(dir, "vmlinuz"),
          initrd: request.initrd === undefined ? null : join(dir, "initrd.gz"),
          rootfs: join(dir, "rootfs.ext4"),
          sizeBytes: (await fs.stat(join(stagingDir, "rootfs.ext4")))?.size ?? 0,
          createdAt: deps.now().toISOString(),
          source: request.rootfs,
        };
        return await publish(record, stagingDir, undefined);
      } finally {
        await fs.rm(stagingDir);
      }
    },

    async login(registry, credentials) {
      const document = withCredentials(await readJson(layout.registryAuthFile), registry, credentials);
      await fs.mkdir(layout.configDir);
      await fs.writeFileAtomic(layout.registryAuthFile, `${JSON.stringify(document, null, 2)}\n`, {
        mode: 0o600,
      });
    },

    async logout(registry) {
      const before = await readJson(layout.registryAuthFile);
      if (!credentialsFromConfig(before, registry)) return false;
      await fs.writeFileAtomic(
        layout.registryAuthFile,
        `${JSON.stringify(withCredentials(before, registry, undefined), null, 2)}\n`,
        {
          mode: 0o600,
        },
      );
      return true;
    },
  };
}

/**
 * The image resolution VMs use: a stored image or catalog entry as before,
 * else a registry reference pulled on first use (one pull per name at a
 * time; later callers join it).
 */
export function withAutoPull(
  images: Pick<ImageService, "resolve" | "vmlinux">,
  oci: Pick<OciImages, "pull">,
  store: Pick<Store, "getImageByName">,
): Pick<ImageService, "resolve" | "vmlinux"> {
  const pulling = new Map<string, Promise<ImageRecord>>();
  return {
    vmlinux: (image, options) => images.vmlinux(image, options),
    async resolve(ref, options = {}) {
      try {
        return await images.resolve(ref, options);
      } catch (error) {
        if (!(error instanceof BangerError) || error.code !== ErrorCode.IMAGE_NOT_FOUND) throw error;
        let name: string;
        try {
          name = familiarReference(parseReference(ref));
        } catch {
          throw error;
        }
        const stored = store.getImageByName(name);
        if (stored) return stored;
        let running = pulling.get(name);
        if (!running) {
          running = oci.pull({ reference: ref }, options).finally(() => pulling.delete(name));
          pulling.set(name, running);
        }
        return await running;
      }
    },
  };
}
