/** Short temp dirs (Unix socket paths are limited to 108 bytes). */
import { mkdtempSync, rmSync } from "node:fs";
import { join } from "node:path";

export function makeTempDir(prefix = "bgt-"): { path: string; cleanup(): void } {
  const path = mkdtempSync(join("/tmp", prefix));
  return { path, cleanup: () => rmSync(path, { recursive: true, force: true }) };
}
