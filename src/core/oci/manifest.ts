/**
 * OCI and Docker v2 manifests, indexes and image configs: media types, the
 * Accept list every manifest request sends, parsing with one error per bad
 * document, and choosing an index entry by platform (never by position).
 * Pure.
 */
import { z } from "zod";
import { BangerError, ErrorCode } from "../../protocol/index.ts";

const MediaType = {
  ociIndex: "application/vnd.oci.image.index.v1+json",
  dockerList: "application/vnd.docker.distribution.manifest.list.v2+json",
  ociManifest: "application/vnd.oci.image.manifest.v1+json",
  dockerManifest: "application/vnd.docker.distribution.manifest.v2+json",
} as const;

/** Sent on every manifest GET and HEAD: without it distribution answers OCI content with 404. */
export const MANIFEST_ACCEPT = [
  MediaType.ociIndex,
  MediaType.dockerList,
  MediaType.ociManifest,
  MediaType.dockerManifest,
].join(", ");

const digestSchema = z.string().regex(/^sha256:[a-f0-9]{64}$/, "a sha256 digest");

const descriptorSchema = z.object({
  mediaType: z.string().optional(),
  digest: digestSchema,
  size: z.number().int().nonnegative(),
  platform: z
    .object({
      architecture: z.string(),
      os: z.string(),
      variant: z.string().optional(),
    })
    .optional(),
  annotations: z.record(z.string(), z.string()).optional(),
});
export type Descriptor = z.infer<typeof descriptorSchema>;

const indexSchema = z.object({
  schemaVersion: z.literal(2),
  mediaType: z.string().optional(),
  manifests: z.array(descriptorSchema),
});
export type ImageIndex = z.infer<typeof indexSchema>;

const manifestSchema = z.object({
  schemaVersion: z.literal(2),
  mediaType: z.string().optional(),
  config: descriptorSchema,
  layers: z.array(descriptorSchema),
});
export type ImageManifest = z.infer<typeof manifestSchema>;

const configSchema = z.object({
  architecture: z.string().optional(),
  os: z.string().optional(),
  variant: z.string().optional(),
  created: z.string().optional(),
  config: z
    .object({
      Entrypoint: z.array(z.string()).nullish(),
      Cmd: z.array(z.string()).nullish(),
      Env: z.array(z.string()).nullish(),
      WorkingDir: z.string().nullish(),
      User: z.string().nullish(),
      Labels: z.record(z.string(), z.string()).nullish(),
    })
    .nullish(),
  rootfs: z.object({ type: z.literal("layers"), diff_ids: z.array(digestSchema) }),
});
export type ImageConfig = z.infer<typeof configSchema>;

export type ManifestDocument =
  | { kind: "index"; index: ImageIndex }
  | { kind: "manifest"; manifest: ImageManifest };

function corrupt(what: string, why: string): BangerError {
  return new BangerError(ErrorCode.IMAGE_INVALID, `${what} is not a valid image document: ${why}`, {
    hint: "the registry or archive serves something banger cannot read; check the reference",
  });
}

function parseJson(bytes: Uint8Array, what: string): unknown {
  try {
    return JSON.parse(Buffer.from(bytes).toString("utf8"));
  } catch (error) {
    throw corrupt(what, (error as Error).message);
  }
}

function issues(error: z.ZodError): string {
  return error.issues.map((issue) => `${issue.path.join(".") || "(root)"}: ${issue.message}`).join("; ");
}

/**
 * Decides index or manifest from the response's Content-Type, then the
 * body's mediaType, then its shape (umoci writes OCI manifests without
 * mediaType).
 */
export function parseManifestDocument(
  bytes: Uint8Array,
  contentType: string | undefined,
  what: string,
): ManifestDocument {
  const body = parseJson(bytes, what) as Record<string, unknown> | null;
  if (body === null || typeof body !== "object") throw corrupt(what, "not a JSON object");
  const type =
    contentType?.split(";")[0]?.trim() || (typeof body.mediaType === "string" ? body.mediaType : "");
  const isIndex =
    type === MediaType.ociIndex ||
    type === MediaType.dockerList ||
    (!("config" in body) && Array.isArray(body.manifests));
  if (type.includes("schema1") || body.schemaVersion === 1) {
    throw new BangerError(
      ErrorCode.IMAGE_INVALID,
      `${what} is a Docker schema 1 manifest, which banger does not read`,
      {
        hint: "push the image again with a current docker or skopeo (schema 2 / OCI)",
      },
    );
  }
  if (isIndex) {
    const parsed = indexSchema.safeParse(body);
    if (!parsed.success) throw corrupt(what, issues(parsed.error));
    return { kind: "index", index: parsed.data };
  }
  const parsed = manifestSchema.safeParse(body);
  if (!parsed.success) throw corrupt(what, issues(parsed.error));
  return { kind: "manifest", manifest: parsed.data };
}

export function parseImageConfig(bytes: Uint8Array, what: string): ImageConfig {
  const parsed = configSchema.safeParse(parseJson(bytes, what));
  if (!parsed.success) throw corrupt(what, issues(parsed.error));
  return parsed.data;
}

export interface Platform {
  os: string;
  architecture: string;
  variant?: string | undefined;
}

/** `linux/amd64`, `linux/arm64/v8`; os defaults to linux. */
export function parsePlatform(text: string): Platform {
  const parts = text.split("/");
  if (parts.length === 1 && parts[0]) return { os: "linux", architecture: parts[0] };
  const [os, architecture, variant] = parts;
  if (!os || !architecture || parts.length > 3) {
    throw new BangerError(ErrorCode.INVALID_PARAMS, `invalid platform "${text}"`, {
      hint: "use OS/ARCH[/VARIANT], e.g. linux/amd64 or linux/arm64/v8",
    });
  }
  return { os, architecture, variant };
}

function formatPlatform(platform: Platform): string {
  return `${platform.os}/${platform.architecture}${platform.variant ? `/${platform.variant}` : ""}`;
}

/** The platform this host runs VMs for, from Node's process.arch. */
export function hostPlatform(nodeArch: string): Platform {
  const architecture = nodeArch === "x64" ? "amd64" : nodeArch === "ia32" ? "386" : nodeArch;
  return { os: "linux", architecture };
}

/**
 * The index entry for a platform. Variant must match when asked for;
 * otherwise an entry without variant, then the first with one. Attestation
 * entries (`unknown/unknown`) never match.
 */
export function selectManifest(index: ImageIndex, want: Platform, what: string): Descriptor {
  const candidates = index.manifests.filter(
    (entry) => entry.platform?.os === want.os && entry.platform.architecture === want.architecture,
  );
  const chosen = want.variant
    ? candidates.find((entry) => entry.platform?.variant === want.variant)
    : (candidates.find((entry) => !entry.platform?.variant) ?? candidates[0]);
  if (chosen) return chosen;
  const offered = index.manifests
    .filter((entry) => entry.platform && entry.platform.os !== "unknown")
    .map((entry) => formatPlatform(entry.platform as Platform));
  throw new BangerError(ErrorCode.IMAGE_NOT_FOUND, `${what} has no image for ${formatPlatform(want)}`, {
    hint:
      offered.length > 0
        ? `it offers ${[...new Set(offered)].join(", ")}; pick one with --platform`
        : "this index lists no platforms",
  });
}

/** The config's platform check after choosing a manifest directly by tag. */
export function checkConfigPlatform(config: ImageConfig, want: Platform, what: string): void {
  if (config.os !== undefined && config.architecture !== undefined) {
    if (config.os !== want.os || config.architecture !== want.architecture) {
      throw new BangerError(
        ErrorCode.IMAGE_NOT_FOUND,
        `${what} is for ${config.os}/${config.architecture}, not ${formatPlatform(want)}`,
        { hint: "pull a tag built for this platform, or pass --platform to say which one you want" },
      );
    }
  }
}
