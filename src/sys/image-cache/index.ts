/**
 * Trust checks for the shared image build cache (BANGER_IMAGE_CACHE). Other
 * users may write to the directory that holds it, so an entry is used only
 * when the cache directory, the entry and each of its files are owned by
 * this daemon's user (or root), are not group- or world-writable and are not
 * symbolic links, and when the files copied out of it match the sha256
 * digests the daemon that stored it recorded in `digests.json`. The digests
 * are checked on the copies, so a file swapped after the check is caught.
 * An entry without `digests.json` (from before digests were recorded, or
 * planted without one) is refused like a planted one: nothing else can say
 * that its files are what a build stored, and recording them on first use
 * would bless whatever is there.
 */
import { createHash } from "node:crypto";
import { createReadStream } from "node:fs";
import { lstat, readFile } from "node:fs/promises";
import { basename, join } from "node:path";
import { BangerError, ErrorCode } from "../../protocol/index.ts";

/** The record of an entry's file digests, written last before the entry is renamed into place. */
const CACHE_DIGESTS_FILE = "digests.json";

/** The checks bound to one cache directory and this daemon's user, as the image service takes them. */
export function createBuildCacheChecks(options: { cacheDir: string; uid: number }) {
  return {
    assertTrusted: (entryDir: string, files: readonly string[]) =>
      assertCacheEntryTrusted({ cacheDir: options.cacheDir, entryDir, files, uid: options.uid }),
    assertCopyMatches: assertCacheCopyMatches,
    digestRecord: async (files: readonly string[]) => ({
      name: CACHE_DIGESTS_FILE,
      content: `${JSON.stringify(await digestFiles(files), null, 2)}\n`,
    }),
  };
}

/** Refuses an entry that another user could have planted or changed. */
async function assertCacheEntryTrusted(options: {
  cacheDir: string;
  entryDir: string;
  files: readonly string[];
  uid: number;
}): Promise<void> {
  const record = join(options.entryDir, CACHE_DIGESTS_FILE);
  const paths = [
    options.cacheDir,
    options.entryDir,
    ...options.files.map((file) => join(options.entryDir, basename(file))),
    record,
  ];
  for (const path of paths) {
    const stats = await lstat(path).catch(() => undefined);
    const problem = !stats
      ? path === record
        ? "is missing: the entry has no record of its files' digests to check them against"
        : "is missing"
      : stats.isSymbolicLink()
        ? "is a symbolic link"
        : stats.uid !== options.uid && stats.uid !== 0
          ? `is owned by uid ${stats.uid}, not by this daemon's user (uid ${options.uid}) or root`
          : (stats.mode & 0o022) !== 0
            ? `is group- or world-writable (mode ${(stats.mode & 0o777).toString(8)})`
            : undefined;
    if (problem) throw untrusted(options.entryDir, `${path} ${problem}`);
  }
}

/** sha256 of each file, keyed by file name. */
async function digestFiles(files: readonly string[]): Promise<Record<string, string>> {
  const digests: Record<string, string> = {};
  for (const file of files) digests[basename(file)] = await sha256File(file);
  return digests;
}

/** Compares copies taken out of `entryDir` with the digests it recorded. */
async function assertCacheCopyMatches(entryDir: string, copies: readonly string[]): Promise<void> {
  const recordFile = join(entryDir, CACHE_DIGESTS_FILE);
  let text: string;
  try {
    text = await readFile(recordFile, "utf8");
  } catch (error) {
    throw untrusted(entryDir, `its ${CACHE_DIGESTS_FILE} cannot be read: ${String(error)}`);
  }
  let recorded: Record<string, unknown>;
  try {
    recorded = JSON.parse(text);
  } catch (error) {
    throw untrusted(entryDir, `its ${CACHE_DIGESTS_FILE} is not JSON: ${String(error)}`);
  }
  for (const copy of copies) {
    const name = basename(copy);
    const actual = await sha256File(copy);
    if (recorded[name] !== actual) {
      throw untrusted(
        entryDir,
        `${name} has sha256 ${actual.slice(0, 16)}…, the entry recorded ${String(recorded[name] ?? "none").slice(0, 16)}…`,
      );
    }
  }
}

function untrusted(entryDir: string, reason: string): BangerError {
  return new BangerError(
    ErrorCode.IMAGE_BUILD_FAILED,
    `refusing the image cache entry ${entryDir}: ${reason}`,
    {
      hint: `remove it (rm -rf ${entryDir}); the next \`banger image build-default\` rebuilds it and records its digests. Keep the cache directory owned by the daemon's user and not writable by others`,
    },
  );
}

function sha256File(path: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const hash = createHash("sha256");
    createReadStream(path)
      .on("data", (chunk) => hash.update(chunk))
      .on("error", reject)
      .on("end", () => resolve(hash.digest("hex")));
  });
}
