// Runs the test suite with node's test runner. Tiers by suffix:
//   unit:        test/unit/**/*.test.ts         (fakes; no root, no network)
//   integration: test/integration/**/*.test.ts  (real socket, SQLite, ip/nft in a netns)
//   e2e:         test/e2e/**/*.test.ts          (real guests under QEMU)
// `all` runs every tier in one runner invocation, with coverage over src/.
import { spawnSync } from "node:child_process";

const tier = process.argv[2] ?? "all";
const globs = {
  unit: ["test/unit/**/*.test.ts"],
  integration: ["test/integration/**/*.test.ts"],
  e2e: ["test/e2e/**/*.test.ts"],
  all: ["test/unit/**/*.test.ts", "test/integration/**/*.test.ts", "test/e2e/**/*.test.ts"],
}[tier];
if (!globs) {
  console.error(`run-tests: unknown tier '${tier}' (unit, integration, e2e, all)`);
  process.exit(2);
}
const coverage =
  tier === "all"
    ? [
        "--experimental-test-coverage",
        "--test-coverage-include=src/**",
        `--test-coverage-lines=${process.env.BANGER_COVERAGE_LINES ?? 70}`,
      ]
    : [];
if ((tier === "e2e" || tier === "all") && process.getuid?.() === 0) {
  // Build the guest image once, before the e2e files run in parallel.
  const prebuild = spawnSync(process.execPath, [new URL("./prebuild-image.mjs", import.meta.url).pathname], {
    stdio: "inherit",
  });
  if (prebuild.status !== 0)
    console.error("run-tests: the image prebuild failed; e2e tests will try to build it themselves");
}
const args = ["--test", "--test-concurrency=2", "--test-timeout=900000", ...coverage, ...globs];
const result = spawnSync(process.execPath, args, { stdio: "inherit" });
process.exit(result.status ?? 1);
