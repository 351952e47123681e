/**
 * Local images as ImageReaders: an OCI layout directory, or a tar of one,
 * and both `docker save` formats (legacy: `manifest.json` naming a config
 * file and plain `<id>/layer.tar` layers, often symlinks; Docker 25 and
 * later: an OCI layout plus `manifest.json` pointing into blobs/sha256).
 * A tar is unpacked into a scratch directory first, regular files only,
 * names confined like layer entries; its symlinks are kept as a map and
 * resolved when a path is read.
 */
import { createHash } from "node:crypto";
import { createReadStream, createWriteStream } from "node:fs";
import { copyFile, mkdir, readFile, stat } from "node:fs/promises";
import { dirname, join, posix } from "node:path";
import { pipeline } from "node:stream/promises";
import { extract as tarExtract } from "tar-stream";
import {
  type Descriptor,
  entryComponents,
  type ImageManifest,
  LayerEscapeError,
  type Platform,
  parseManifestDocument,
  selectManifest,
} from "../../core/oci/index.ts";
import { BangerError, ErrorCode } from "../../protocol/index.ts";
import type { ImageReader } from "./pull.ts";

const DOCUMENT_LIMIT = 4 * 1024 * 1024;
const MAX_LINK_HOPS = 16;

/** A directory of files plus the symlinks a tar held, by archive path. */
interface ArchiveFiles {
  root: string;
  links: Map<string, string>;
}

function invalid(file: string, why: string): BangerError {
  return new BangerError(ErrorCode.IMAGE_INVALID, `${file} is not an image archive: ${why}`, {
    hint: "import takes `docker save` output (either format), an OCI layout directory, or a tar of one",
  });
}

/** Unpacks a tar's regular files under `root`; symlinks are recorded, everything else skipped. */
async function unpackArchive(file: string, root: string, signal?: AbortSignal): Promise<ArchiveFiles> {
  const links = new Map<string, string>();
  const extract = tarExtract();
  const feeding = pipeline(createReadStream(file), extract, { signal });
  try {
    for await (const entry of extract) {
      const { header } = entry;
      const parts = entryComponents(header.name);
      const path = parts.join("/");
      if (header.type === "file" && parts.length > 0) {
        await mkdir(join(root, ...parts.slice(0, -1)), { recursive: true });
        await pipeline(entry, createWriteStream(join(root, ...parts), { flags: "wx" }));
        continue;
      }
      if (header.type === "symlink" && parts.length > 0) links.set(path, header.linkname ?? "");
      entry.resume();
    }
    await feeding;
  } catch (error) {
    extract.destroy();
    await feeding.catch(() => undefined);
    if (error instanceof LayerEscapeError) throw invalid(file, error.message);
    if (error instanceof BangerError) throw error;
    throw invalid(file, (error as Error).message);
  }
  return { root, links };
}

/** An archive path with its symlinks followed (within the archive). */
function resolvePath(files: ArchiveFiles, path: string, what: string): string {
  let current = posix.normalize(path).replace(/^\.\//, "");
  for (let hop = 0; hop < MAX_LINK_HOPS; hop += 1) {
    const target = files.links.get(current);
    if (target === undefined) break;
    current = posix.normalize(posix.join(posix.dirname(current), target));
  }
  let parts: string[];
  try {
    parts = entryComponents(current);
  } catch {
    throw invalid(what, `"${path}" points outside the archive`);
  }
  return join(files.root, ...parts);
}

async function readDocument(path: string, what: string): Promise<Buffer> {
  const found = await stat(path).catch(() => undefined);
  if (!found?.isFile()) throw invalid(what, `it has no ${posix.basename(path)}`);
  if (found.size > DOCUMENT_LIMIT) throw invalid(what, `${posix.basename(path)} is larger than 4 MiB`);
  return readFile(path);
}

async function fileDigest(path: string): Promise<{ digest: string; size: number }> {
  const hash = createHash("sha256");
  let size = 0;
  for await (const chunk of createReadStream(path)) {
    hash.update(chunk as Buffer);
    size += (chunk as Buffer).length;
  }
  return { digest: `sha256:${hash.digest("hex")}`, size };
}

async function copyChecked(from: string, descriptor: Descriptor, to: string, what: string): Promise<void> {
  const { digest, size } = await fileDigest(from);
  if (digest !== descriptor.digest || size !== descriptor.size) {
    throw new BangerError(
      ErrorCode.IMAGE_INVALID,
      `${what}: blob ${descriptor.digest} holds ${size} bytes with digest ${digest}`,
    );
  }
  await copyFile(from, to);
}

interface DockerSaveEntry {
  Config?: unknown;
  RepoTags?: unknown;
  Layers?: unknown;
}

/**
 * Opens an archive or layout. `scratch` is an empty directory for a tar's
 * contents (inside the pull's staging directory). Returns the reader and
 * the name the archive gives the image, if any.
 */
export async function openLocalImage(
  path: string,
  scratch: string,
  options: { tag?: string | undefined; signal?: AbortSignal | undefined } = {},
): Promise<{ reader: ImageReader; suggestedName: string | undefined }> {
  const found = await stat(path).catch(() => undefined);
  if (!found) {
    throw new BangerError(ErrorCode.INVALID_PARAMS, `${path} does not exist`, {
      hint: "give the path of a `docker save` tar, an OCI layout directory or a tar of one",
    });
  }
  const files: ArchiveFiles = found.isDirectory()
    ? { root: path, links: new Map() }
    : await unpackArchive(path, scratch, options.signal);
  const manifestJson = join(files.root, "manifest.json");
  if (await stat(manifestJson).catch(() => undefined)) return dockerSaveReader(files, path);
  if (await stat(join(files.root, "index.json")).catch(() => undefined))
    return ociLayoutReader(files, path, options.tag);
  throw invalid(path, "it has neither manifest.json (docker save) nor index.json (OCI layout)");
}

async function dockerSaveReader(
  files: ArchiveFiles,
  what: string,
): Promise<{ reader: ImageReader; suggestedName: string | undefined }> {
  let entries: DockerSaveEntry[];
  try {
    entries = JSON.parse(
      (await readDocument(join(files.root, "manifest.json"), what)).toString("utf8"),
    ) as DockerSaveEntry[];
  } catch (error) {
    if (error instanceof BangerError) throw error;
    throw invalid(what, `manifest.json is not JSON (${(error as Error).message})`);
  }
  const entry = Array.isArray(entries) ? entries[0] : undefined;
  if (!entry || typeof entry.Config !== "string" || !Array.isArray(entry.Layers)) {
    throw invalid(what, "manifest.json names no Config and Layers");
  }
  if (entries.length > 1) {
    throw invalid(what, `it holds ${entries.length} images; save one image per file`);
  }
  const configPath = resolvePath(files, entry.Config, what);
  const configBytes = await readDocument(configPath, what);
  const layerPaths = (entry.Layers as unknown[]).map((layer) => {
    if (typeof layer !== "string") throw invalid(what, "manifest.json has a layer that is not a path");
    return resolvePath(files, layer, what);
  });
  const layers: Descriptor[] = [];
  for (const layerPath of layerPaths) {
    const { digest, size } = await fileDigest(layerPath).catch(() => {
      throw invalid(what, `a layer named in manifest.json is missing`);
    });
    layers.push({ digest, size });
  }
  const configDigest = `sha256:${createHash("sha256").update(configBytes).digest("hex")}`;
  const manifest: ImageManifest = {
    schemaVersion: 2,
    config: { digest: configDigest, size: configBytes.length },
    layers,
  };
  const manifestBytes = Buffer.from(JSON.stringify(manifest));
  const byDigest = new Map<string, string>(
    layers.map((layer, index) => [layer.digest, layerPaths[index] as string]),
  );
  byDigest.set(configDigest, configPath);
  const tags = Array.isArray(entry.RepoTags)
    ? entry.RepoTags.filter((tag): tag is string => typeof tag === "string")
    : [];
  return {
    suggestedName: tags[0],
    reader: {
      what,
      resolve: async () => ({
        manifest,
        digest: `sha256:${createHash("sha256").update(manifestBytes).digest("hex")}`,
      }),
      readBlob: async (descriptor) => readDocument(byDigest.get(descriptor.digest) ?? "", what),
      fetchBlob: (descriptor, file) =>
        copyChecked(byDigest.get(descriptor.digest) ?? "", descriptor, file, what),
    },
  };
}

async function ociLayoutReader(
  files: ArchiveFiles,
  what: string,
  tag: string | undefined,
): Promise<{ reader: ImageReader; suggestedName: string | undefined }> {
  const blobPath = (digest: string): string => resolvePath(files, `blobs/${digest.replace(":", "/")}`, what);
  const index = parseManifestDocument(
    await readDocument(join(files.root, "index.json"), what),
    undefined,
    `${what}: index.json`,
  );
  if (index.kind !== "index") throw invalid(what, "index.json is not an image index");
  const refName = (entry: Descriptor): string | undefined =>
    entry.annotations?.["org.opencontainers.image.ref.name"];
  const tagged =
    tag === undefined
      ? index.index.manifests
      : index.index.manifests.filter((entry) => refName(entry) === tag);
  if (tagged.length === 0) throw invalid(what, `it has no image tagged "${tag}"`);
  const platformed = tagged.every((entry) => entry.platform !== undefined);
  if (tagged.length > 1 && !platformed) {
    const tags = index.index.manifests.map(refName).filter((name) => name !== undefined);
    throw new BangerError(ErrorCode.INVALID_PARAMS, `${what} holds ${tagged.length} images`, {
      hint: `say which with --tag (it has ${[...new Set(tags)].join(", ")})`,
    });
  }
  const tops = tagged;
  const suggestedName = tops
    .map((entry) => entry.annotations?.["io.containerd.image.name"])
    .find((name) => name !== undefined);
  const checkedRead = async (descriptor: Descriptor): Promise<Buffer> => {
    const bytes = await readDocument(blobPath(descriptor.digest), what);
    const digest = `sha256:${createHash("sha256").update(bytes).digest("hex")}`;
    if (digest !== descriptor.digest)
      throw new BangerError(
        ErrorCode.IMAGE_INVALID,
        `${what}: blob ${descriptor.digest} has digest ${digest}`,
      );
    return bytes;
  };
  return {
    suggestedName,
    reader: {
      what,
      async resolve(platform: Platform) {
        if (tops.length === 0) throw invalid(what, "index.json lists no images");
        let descriptor =
          tops.length === 1
            ? (tops[0] as Descriptor)
            : selectManifest({ ...index.index, manifests: tops }, platform, what);
        for (let depth = 0; depth < 4; depth += 1) {
          const document = parseManifestDocument(
            await checkedRead(descriptor),
            descriptor.mediaType,
            `${what}: ${descriptor.digest}`,
          );
          if (document.kind === "manifest") return { manifest: document.manifest, digest: descriptor.digest };
          descriptor = selectManifest(document.index, platform, what);
        }
        throw invalid(what, "its indexes nest too deep");
      },
      readBlob: checkedRead,
      fetchBlob: async (descriptor, file) => {
        await mkdir(dirname(file), { recursive: true });
        await copyChecked(blobPath(descriptor.digest), descriptor, file, what);
      },
    },
  };
}
