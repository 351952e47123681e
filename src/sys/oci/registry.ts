/**
 * A registry client on fetch: anonymous, Basic and Bearer-token auth from
 * the 401 challenge, the full manifest Accept list, redirects followed by
 * hand so credentials never cross to another origin, retries with backoff
 * on network errors and 429/5xx, and blob downloads hashed and counted
 * while they stream (a blob longer than declared is cut off at once).
 * Plain HTTP for loopback registries and those named insecure.
 */
import { createHash } from "node:crypto";
import { createWriteStream } from "node:fs";
import { rm } from "node:fs/promises";
import { Readable, Transform } from "node:stream";
import { pipeline } from "node:stream/promises";
import {
  basicAuthorization,
  type Challenge,
  type Credentials,
  type Descriptor,
  isLoopbackRegistry,
  MANIFEST_ACCEPT,
  parseChallenge,
  pullScope,
  registryApiHost,
  tokenUrl,
} from "../../core/oci/index.ts";
import { BangerError, ErrorCode } from "../../protocol/index.ts";

type Fetch = typeof globalThis.fetch;

export interface RegistryClientOptions {
  /** Registry host as in the reference (`docker.io`, `127.0.0.1:5000`). */
  registry: string;
  credentials?: Credentials | undefined;
  /** Hosts spoken to over plain HTTP besides loopback ones. */
  insecureRegistries?: readonly string[] | undefined;
  fetch?: Fetch | undefined;
  /** Attempts per request for retryable failures (default 4). */
  attempts?: number | undefined;
  /** First backoff; doubles per attempt (default 250 ms). */
  backoffMs?: number | undefined;
  signal?: AbortSignal | undefined;
}

export interface FetchedManifest {
  bytes: Buffer;
  contentType: string | undefined;
  /** sha256 of the bytes received, never the server's header. */
  digest: string;
  /** The server's Docker-Content-Digest, if it sent one. */
  headerDigest: string | undefined;
}

const REDIRECTS = new Set([301, 302, 303, 307, 308]);
const RETRYABLE = new Set([408, 429, 500, 502, 503, 504]);
const MAX_REDIRECTS = 10;
/** Bytes of a blob download buffered between the network, the hash and the file. */
const BLOB_BUFFER = 1024 * 1024;

function sha256Hex(bytes: Uint8Array): string {
  return `sha256:${createHash("sha256").update(bytes).digest("hex")}`;
}

export class RegistryClient {
  readonly registry: string;
  private readonly base: string;
  private readonly fetch: Fetch;
  private readonly credentials: Credentials | undefined;
  private readonly attempts: number;
  private readonly backoffMs: number;
  private readonly signal: AbortSignal | undefined;
  /** Authorization per scope (Bearer tokens are per repository; Basic is one value). */
  private readonly authorizations = new Map<string, string>();

  constructor(options: RegistryClientOptions) {
    this.registry = options.registry;
    const plain =
      isLoopbackRegistry(options.registry) || (options.insecureRegistries ?? []).includes(options.registry);
    this.base = `${plain ? "http" : "https"}://${registryApiHost(options.registry)}`;
    this.fetch = options.fetch ?? globalThis.fetch;
    this.credentials = options.credentials;
    this.attempts = options.attempts ?? 4;
    this.backoffMs = options.backoffMs ?? 250;
    this.signal = options.signal;
  }

  async getManifest(repository: string, reference: string): Promise<FetchedManifest> {
    const what = `${this.registry}/${repository}:${reference}`;
    const response = await this.send(repository, `/v2/${repository}/manifests/${reference}`, {
      accept: MANIFEST_ACCEPT,
    });
    if (response.status === 404) {
      const detail = await errorDetail(response);
      throw new BangerError(ErrorCode.IMAGE_NOT_FOUND, `image ${what} not found in the registry${detail}`, {
        hint: "check the name and tag; `banger image pull` takes docker's references (NAME[:TAG][@DIGEST])",
      });
    }
    await this.expectOk(response, `manifest ${what}`);
    const bytes = Buffer.from(await response.arrayBuffer());
    if (bytes.length > 4 * 1024 * 1024) {
      throw new BangerError(ErrorCode.IMAGE_INVALID, `manifest ${what} is larger than 4 MiB`);
    }
    return {
      bytes,
      contentType: response.headers.get("content-type") ?? undefined,
      digest: sha256Hex(bytes),
      headerDigest: response.headers.get("docker-content-digest") ?? undefined,
    };
  }

  /** A small blob (a config) read into memory and checked against its descriptor. */
  async getBlob(repository: string, descriptor: Descriptor): Promise<Buffer> {
    if (descriptor.size > 16 * 1024 * 1024) {
      throw new BangerError(
        ErrorCode.IMAGE_INVALID,
        `blob ${descriptor.digest} declares ${descriptor.size} bytes, too many for a config`,
      );
    }
    const response = await this.send(repository, `/v2/${repository}/blobs/${descriptor.digest}`, {});
    await this.expectOk(response, `blob ${descriptor.digest}`);
    const bytes = Buffer.from(await response.arrayBuffer());
    checkBlob(descriptor, bytes.length, sha256Hex(bytes), `${this.registry}/${repository}`);
    return bytes;
  }

  /**
   * Streams a blob into `file`, hashing and counting as it goes. On any
   * failure the file is removed. A connection that breaks mid-body is
   * retried from the start; a wrong digest or size is not.
   */
  async downloadBlob(
    repository: string,
    descriptor: Descriptor,
    file: string,
    onBytes?: (delta: number) => void,
  ): Promise<void> {
    const where = `${this.registry}/${repository}`;
    for (let attempt = 1; ; attempt += 1) {
      let received = 0;
      try {
        const response = await this.send(repository, `/v2/${repository}/blobs/${descriptor.digest}`, {});
        await this.expectOk(response, `blob ${descriptor.digest}`);
        if (!response.body)
          throw new BangerError(ErrorCode.IMAGE_PULL_FAILED, `blob ${descriptor.digest} came with no body`);
        const verifier = blobVerifier(descriptor, where, (bytes) => {
          received += bytes;
          onBytes?.(bytes);
        });
        // Large buffers on the file side: written in few large writes, not one per network chunk.
        const out = createWriteStream(file, { highWaterMark: BLOB_BUFFER });
        await pipeline(
          Readable.fromWeb(response.body as never, { highWaterMark: BLOB_BUFFER }),
          verifier,
          out,
          {
            signal: this.signal,
          },
        );
        return;
      } catch (error) {
        await rm(file, { force: true });
        onBytes?.(-received);
        if (isBangerError(error) || this.signal?.aborted || attempt >= this.attempts) throw this.wrap(error);
        await this.sleep(attempt);
      }
    }
  }

  /** One request with auth and retries; the caller reads the body. */
  private async send(repository: string, path: string, headers: Record<string, string>): Promise<Response> {
    const scope = pullScope(repository);
    let challenged = false;
    for (let attempt = 1; ; attempt += 1) {
      let response: Response;
      try {
        const authorization = this.authorizations.get(scope) ?? this.authorizations.get("*");
        response = await this.follow(`${this.base}${path}`, {
          ...headers,
          ...(authorization ? { authorization } : {}),
        });
      } catch (error) {
        if (this.signal?.aborted || attempt >= this.attempts) throw this.wrap(error);
        await this.sleep(attempt);
        continue;
      }
      if (response.status === 401 && !challenged) {
        challenged = true;
        const challenge = parseChallenge(response.headers.get("www-authenticate"));
        await response.body?.cancel();
        await this.authorize(challenge, scope);
        attempt -= 1;
        continue;
      }
      if (response.status === 401) {
        await response.body?.cancel();
        throw this.unauthorized(repository);
      }
      if (RETRYABLE.has(response.status) && attempt < this.attempts) {
        await response.body?.cancel();
        await this.sleep(attempt, response.headers.get("retry-after"));
        continue;
      }
      return response;
    }
  }

  private async authorize(challenge: Challenge | undefined, scope: string): Promise<void> {
    if (challenge?.scheme === "bearer") {
      const url = tokenUrl(challenge, scope);
      const response = await this.follow(
        url.toString(),
        this.credentials ? { authorization: basicAuthorization(this.credentials) } : {},
      );
      if (response.status === 401 || response.status === 403) {
        await response.body?.cancel();
        throw this.unauthorized(scope);
      }
      await this.expectOk(response, `token from ${url.origin}`);
      const body = (await response.json().catch(() => ({}))) as { token?: unknown; access_token?: unknown };
      const token = typeof body.token === "string" ? body.token : body.access_token;
      if (typeof token !== "string" || token === "") {
        throw new BangerError(
          ErrorCode.REGISTRY_UNAUTHORIZED,
          `the token server ${url.origin} returned no token`,
        );
      }
      this.authorizations.set(scope, `Bearer ${token}`);
      return;
    }
    if (challenge?.scheme === "basic" && this.credentials) {
      this.authorizations.set("*", basicAuthorization(this.credentials));
      return;
    }
    throw this.unauthorized(scope);
  }

  /** Follows redirects by hand: Authorization is dropped once the origin changes. */
  private async follow(url: string, headers: Record<string, string>): Promise<Response> {
    let current = new URL(url);
    const sent = { ...headers };
    for (let hop = 0; hop <= MAX_REDIRECTS; hop += 1) {
      const response = await this.fetch(current, {
        headers: sent,
        redirect: "manual",
        signal: this.signal ?? null,
      });
      const location = response.headers.get("location");
      if (!REDIRECTS.has(response.status) || !location) return response;
      await response.body?.cancel();
      const next = new URL(location, current);
      if (next.origin !== current.origin) delete sent.authorization;
      current = next;
    }
    throw new BangerError(ErrorCode.IMAGE_PULL_FAILED, `${url} redirected more than ${MAX_REDIRECTS} times`);
  }

  private async expectOk(response: Response, what: string): Promise<void> {
    if (response.ok) return;
    const detail = await errorDetail(response);
    throw new BangerError(
      ErrorCode.IMAGE_PULL_FAILED,
      `${this.registry} answered ${response.status} for ${what}${detail}`,
    );
  }

  private unauthorized(scope: string): BangerError {
    return new BangerError(
      ErrorCode.REGISTRY_UNAUTHORIZED,
      `${this.registry} refused access to ${scope.replace(/^repository:|:pull$/g, "")}${this.credentials ? " with the stored credentials" : " without credentials"}`,
    );
  }

  private wrap(error: unknown): Error {
    if (isBangerError(error)) return error;
    if (this.signal?.aborted) return new BangerError(ErrorCode.CANCELLED, "the pull was cancelled");
    const cause =
      error instanceof Error ? ((error.cause as Error | undefined)?.message ?? error.message) : String(error);
    return new BangerError(
      ErrorCode.IMAGE_PULL_FAILED,
      `cannot reach registry ${this.registry} (${this.base}): ${cause}`,
      {
        cause: error,
      },
    );
  }

  private sleep(attempt: number, retryAfter?: string | null): Promise<void> {
    const asked = retryAfter ? Number(retryAfter) * 1000 : Number.NaN;
    const delay = Number.isFinite(asked) ? Math.min(asked, 10_000) : this.backoffMs * 2 ** (attempt - 1);
    return new Promise((resolve) => setTimeout(resolve, delay));
  }
}

function isBangerError(error: unknown): error is BangerError {
  return error instanceof BangerError;
}

/**
 * A pass-through that counts and hashes a blob's bytes: it fails as soon as
 * the blob is longer than its descriptor says, and at its end unless size and
 * digest match. `onBytes` hears each chunk's length as it passes.
 */
function blobVerifier(descriptor: Descriptor, where: string, onBytes?: (bytes: number) => void): Transform {
  const hash = createHash("sha256");
  let received = 0;
  return new Transform({
    highWaterMark: BLOB_BUFFER,
    transform(chunk: Buffer, _encoding, done) {
      received += chunk.length;
      if (received > descriptor.size) {
        done(
          new BangerError(
            ErrorCode.IMAGE_INVALID,
            `blob ${descriptor.digest} from ${where} is larger than its declared ${descriptor.size} bytes`,
            { hint: "the registry serves content that does not match the manifest; nothing was published" },
          ),
        );
        return;
      }
      hash.update(chunk);
      onBytes?.(chunk.length);
      done(null, chunk);
    },
    flush(done) {
      try {
        checkBlob(descriptor, received, `sha256:${hash.digest("hex")}`, where);
        done();
      } catch (error) {
        done(error as Error);
      }
    },
  });
}

function checkBlob(descriptor: Descriptor, size: number, digest: string, where: string): void {
  if (digest !== descriptor.digest) {
    throw new BangerError(
      ErrorCode.IMAGE_INVALID,
      `blob ${descriptor.digest} from ${where} has digest ${digest}`,
      {
        hint: "the registry served corrupt content; nothing was published",
      },
    );
  }
  if (size !== descriptor.size) {
    throw new BangerError(
      ErrorCode.IMAGE_INVALID,
      `blob ${descriptor.digest} from ${where} is ${size} bytes, its descriptor says ${descriptor.size}`,
    );
  }
}

async function errorDetail(response: Response): Promise<string> {
  const text = await response.text().catch(() => "");
  try {
    const body = JSON.parse(text) as { errors?: { code?: string; message?: string }[] };
    const first = body.errors?.[0];
    if (first) return `: ${first.code ?? ""} ${first.message ?? ""}`.trimEnd();
  } catch {
    // not JSON: fall through
  }
  return text ? `: ${text.slice(0, 200)}` : "";
}
