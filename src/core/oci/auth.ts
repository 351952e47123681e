/**
 * Registry authentication, pure side: parsing a `WWW-Authenticate`
 * challenge (Basic or Bearer), the token request URL, and finding a
 * registry's credentials in docker's `config.json` `auths` or banger's own
 * credentials file (the same shape).
 */
import { DOCKER_HUB } from "./reference.ts";

export interface Credentials {
  username: string;
  password: string;
}

export type Challenge =
  | { scheme: "basic"; realm: string | undefined }
  | { scheme: "bearer"; realm: string; service: string | undefined; scope: string | undefined };

export function parseChallenge(header: string | null | undefined): Challenge | undefined {
  if (!header) return undefined;
  const match = /^\s*(\w+)\s*(.*)$/s.exec(header);
  if (!match) return undefined;
  const scheme = (match[1] as string).toLowerCase();
  const params = new Map<string, string>();
  for (const param of (match[2] as string).matchAll(/(\w+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^\s,]+))/g)) {
    params.set((param[1] as string).toLowerCase(), (param[2] ?? param[3] ?? "").replace(/\\(.)/g, "$1"));
  }
  if (scheme === "basic") return { scheme: "basic", realm: params.get("realm") };
  if (scheme === "bearer") {
    const realm = params.get("realm");
    if (!realm) return undefined;
    return { scheme: "bearer", realm, service: params.get("service"), scope: params.get("scope") };
  }
  return undefined;
}

export function pullScope(repository: string): string {
  return `repository:${repository}:pull`;
}

export function tokenUrl(challenge: Extract<Challenge, { scheme: "bearer" }>, scope: string): URL {
  const url = new URL(challenge.realm);
  if (challenge.service) url.searchParams.set("service", challenge.service);
  url.searchParams.set("scope", scope);
  return url;
}

export function basicAuthorization(credentials: Credentials): string {
  return `Basic ${Buffer.from(`${credentials.username}:${credentials.password}`).toString("base64")}`;
}

/** The keys docker's config.json may use for one registry. */
function authKeys(registry: string): string[] {
  if (registry === DOCKER_HUB) {
    return [
      "https://index.docker.io/v1/",
      "index.docker.io",
      "docker.io",
      "registry-1.docker.io",
      "https://registry-1.docker.io",
    ];
  }
  return [
    registry,
    `https://${registry}`,
    `http://${registry}`,
    `https://${registry}/v1/`,
    `https://${registry}/v2/`,
  ];
}

interface AuthEntry {
  auth?: unknown;
  username?: unknown;
  password?: unknown;
}

/**
 * Credentials for a registry from a config.json document (docker's, or
 * banger's own file, which uses the same `auths` shape). Credential helpers
 * (`credsStore`) are not consulted.
 */
export function credentialsFromConfig(document: unknown, registry: string): Credentials | undefined {
  if (document === null || typeof document !== "object") return undefined;
  const auths = (document as { auths?: unknown }).auths;
  if (auths === null || typeof auths !== "object") return undefined;
  for (const key of authKeys(registry)) {
    const entry = (auths as Record<string, AuthEntry>)[key];
    if (!entry) continue;
    if (typeof entry.auth === "string" && entry.auth !== "") {
      const decoded = Buffer.from(entry.auth, "base64").toString("utf8");
      const colon = decoded.indexOf(":");
      if (colon > 0) return { username: decoded.slice(0, colon), password: decoded.slice(colon + 1) };
    }
    if (typeof entry.username === "string" && typeof entry.password === "string") {
      return { username: entry.username, password: entry.password };
    }
  }
  return undefined;
}

/** A credentials document with one registry's entry set (or removed when credentials is undefined). */
export function withCredentials(
  document: unknown,
  registry: string,
  credentials: Credentials | undefined,
): object {
  const base = document !== null && typeof document === "object" ? { ...(document as object) } : {};
  const auths = { ...(((base as { auths?: object }).auths ?? {}) as Record<string, unknown>) };
  for (const key of authKeys(registry)) delete auths[key];
  if (credentials) {
    auths[registry] = {
      auth: Buffer.from(`${credentials.username}:${credentials.password}`).toString("base64"),
    };
  }
  return { ...base, auths };
}
