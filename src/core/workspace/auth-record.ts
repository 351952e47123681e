/**
 * What a VM's directory remembers of its last `vm auth sync`
 * (AUTH_FILES_JSON): the guest paths it wrote credentials to (for `image
 * promote` to scrub and `vm snapshot` to refuse), and a salted digest of
 * the material it wrote, so that the sync after a start can be skipped when
 * the guest already holds exactly that material (a clone of a synced
 * snapshot, a restarted VM). The digest is salted per sync; the material
 * itself is never stored.
 */
import { createHash } from "node:crypto";

export interface AuthRecord {
  /** Guest paths of synced files (`~/` as given). */
  paths: string[];
  /** Set once a sync completed: hex salt and sha256 over salt and material. */
  salt?: string;
  digest?: string;
}

/** The material a sync writes, as the daemon receives it. */
export interface AuthMaterial {
  authorizedKeys: readonly string[];
  gitIdentity: { name: string; email: string } | null;
  files: readonly { guest: string; data: string }[];
}

/**
 * Reads a record: the current object form, or the older plain list of
 * paths. Anything else is `undefined` (callers treat it as holding secrets).
 */
export function parseAuthRecord(text: string): AuthRecord | undefined {
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch {
    return undefined;
  }
  const strings = (value: unknown): value is string[] =>
    Array.isArray(value) && value.every((entry) => typeof entry === "string");
  if (strings(parsed)) return { paths: parsed };
  if (typeof parsed !== "object" || parsed === null) return undefined;
  const { paths, salt, digest } = parsed as Record<string, unknown>;
  if (!strings(paths)) return undefined;
  const record: AuthRecord = { paths };
  if (typeof salt === "string" && typeof digest === "string") {
    record.salt = salt;
    record.digest = digest;
  }
  return record;
}

/** sha256 over the salt and a canonical encoding of the material, hex. */
export function authDigest(salt: string, material: AuthMaterial): string {
  const canonical = JSON.stringify([
    material.authorizedKeys,
    material.gitIdentity === null ? null : [material.gitIdentity.name, material.gitIdentity.email],
    material.files.map((file) => [file.guest, file.data]),
  ]);
  return createHash("sha256").update(salt).update("\0").update(canonical).digest("hex");
}

/** Whether `record` says the guest already holds exactly `material`. */
export function holdsMaterial(record: AuthRecord | undefined, material: AuthMaterial): boolean {
  if (!record?.salt || !record.digest) return false;
  return authDigest(record.salt, material) === record.digest;
}
