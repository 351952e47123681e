// Builds the test image (the small catalog image debian-bookworm-minimal,
// which the test helpers and the bench make every daemon's default through
// BANGER_DEFAULT_IMAGE) once into the shared image cache (BANGER_IMAGE_CACHE,
// default /var/tmp/banger-image-cache), so every e2e test's daemon copies it
// instead of building its own. The developer image is never built here. Uses a throwaway
// BANGER_HOME and stops its daemon by pid afterwards.
import { spawnSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { join } from "node:path";

const root = join(import.meta.dirname, "..");
const cache = process.env.BANGER_IMAGE_CACHE ?? "/var/tmp/banger-image-cache";
const home = mkdtempSync("/tmp/bgi-");
const env = {
  BANGER_DEFAULT_IMAGE: "debian-bookworm-minimal",
  ...process.env,
  BANGER_HOME: home,
  BANGER_IMAGE_CACHE: cache,
};
console.log(`prebuild-image: building the test image into ${cache} (cached after the first run)`);
const started = Date.now();
const build = spawnSync(join(root, "bin/banger"), ["image", "build-default"], {
  env,
  stdio: ["ignore", "inherit", "inherit"],
});
spawnSync(join(root, "bin/banger"), ["daemon", "stop"], { env, stdio: "ignore" });
try {
  const pid = Number.parseInt(readFileSync(join(home, "run", "bangerd.pid"), "utf8"), 10);
  if (pid > 0) process.kill(pid, "SIGKILL");
} catch {
  // The daemon stopped and removed its pid file.
}
rmSync(home, { recursive: true, force: true });
console.log(`prebuild-image: done in ${((Date.now() - started) / 1000).toFixed(1)} s (exit ${build.status})`);
process.exit(build.status ?? 1);
