/**
 * Image references with docker's defaults: `alpine` is
 * docker.io/library/alpine:latest, a first component holding a dot, a colon
 * or `localhost` names a registry (`host:port/repo:tag`), and `@sha256:HEX`
 * pins a digest. Pure.
 */
import { BangerError, ErrorCode } from "../../protocol/index.ts";

export interface ImageReference {
  /** Registry host as the user names it (`docker.io`, `127.0.0.1:5000`). */
  registry: string;
  /** Repository path (`library/alpine`). */
  repository: string;
  /** Tag; `latest` when neither tag nor digest is given. */
  tag: string | undefined;
  /** `sha256:<64 hex>` when pinned. */
  digest: string | undefined;
}

export const DOCKER_HUB = "docker.io";
/** The host docker.io's API answers on. */
const DOCKER_HUB_API_HOST = "registry-1.docker.io";

const COMPONENT = /^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*$/;
const TAG = /^[\w][\w.-]{0,127}$/;
const DIGEST = /^sha256:[a-f0-9]{64}$/;
const HOST =
  /^(?:[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?(?:\.[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)*|\[[0-9a-fA-F:]+\])(?::[0-9]{1,5})?$/;

function invalid(input: string, why: string): BangerError {
  return new BangerError(ErrorCode.INVALID_PARAMS, `invalid image reference "${input}": ${why}`, {
    hint: "use NAME[:TAG][@sha256:DIGEST], e.g. alpine, debian:bookworm, 127.0.0.1:5000/team/app:v1",
  });
}

export function parseReference(input: string): ImageReference {
  const text = input.trim();
  if (text === "") throw invalid(input, "it is empty");
  let rest = text;
  let digest: string | undefined;
  const at = rest.indexOf("@");
  if (at !== -1) {
    digest = rest.slice(at + 1);
    rest = rest.slice(0, at);
    if (!DIGEST.test(digest)) throw invalid(input, `"${digest}" is not a sha256 digest`);
  }
  let tag: string | undefined;
  const lastSlash = rest.lastIndexOf("/");
  const lastColon = rest.lastIndexOf(":");
  if (lastColon > lastSlash) {
    tag = rest.slice(lastColon + 1);
    rest = rest.slice(0, lastColon);
    if (!TAG.test(tag)) throw invalid(input, `"${tag}" is not a valid tag`);
  }
  const slash = rest.indexOf("/");
  let registry = DOCKER_HUB;
  let repository = rest;
  if (slash !== -1) {
    const first = rest.slice(0, slash);
    if (first.includes(".") || first.includes(":") || first === "localhost" || /[A-Z]/.test(first)) {
      if (!HOST.test(first)) throw invalid(input, `"${first}" is not a registry host`);
      registry = first;
      repository = rest.slice(slash + 1);
    }
  }
  if (registry === "index.docker.io" || registry === DOCKER_HUB_API_HOST) registry = DOCKER_HUB;
  if (registry === DOCKER_HUB && !repository.includes("/")) repository = `library/${repository}`;
  const parts = repository.split("/");
  for (const part of parts) {
    if (!COMPONENT.test(part))
      throw invalid(
        input,
        `"${part}" is not a valid repository component (lowercase letters, digits, . _ -)`,
      );
  }
  if (repository.length > 255) throw invalid(input, "the repository name is longer than 255 characters");
  if (tag === undefined && digest === undefined) tag = "latest";
  return { registry, repository, tag, digest };
}

/** The canonical text: registry/repository[:tag][@digest]. */
export function formatReference(ref: ImageReference): string {
  return `${ref.registry}/${ref.repository}${ref.tag === undefined ? "" : `:${ref.tag}`}${ref.digest === undefined ? "" : `@${ref.digest}`}`;
}

/** A short form as docker shows it: docker.io/library/ dropped. */
export function familiarReference(ref: ImageReference): string {
  const full = formatReference(ref);
  if (ref.registry !== DOCKER_HUB) return full;
  return full.slice(`${DOCKER_HUB}/`.length).replace(/^library\//, "");
}

/** The host:port the registry API answers on. */
export function registryApiHost(registry: string): string {
  return registry === DOCKER_HUB ? DOCKER_HUB_API_HOST : registry;
}

/** What a manifest request names: the digest when pinned, else the tag. */
export function manifestReference(ref: ImageReference): string {
  return ref.digest ?? ref.tag ?? "latest";
}

/** Loopback registries speak plain HTTP by default, as docker's do. */
export function isLoopbackRegistry(registry: string): boolean {
  const host = registry.replace(/:[0-9]+$/, "").replace(/^\[|\]$/g, "");
  return host === "localhost" || host === "::1" || /^127\.\d+\.\d+\.\d+$/.test(host);
}
