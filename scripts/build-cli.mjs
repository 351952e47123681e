// Bundles the CLI into dist/banger.mjs with esbuild: the CLI runs on every
// command, so its start-up time matters (one file loads far faster than a
// tree of .ts modules). The daemon runs from source.
import { existsSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const root = join(dirname(fileURLToPath(import.meta.url)), "..");
const entry = join(root, "src/cli/main.ts");
if (!existsSync(entry)) {
  console.log("build-cli: no src/cli/main.ts yet, nothing to bundle");
  process.exit(0);
}
const { build } = await import("esbuild");
await build({
  entryPoints: [entry],
  outfile: join(root, "dist/banger.mjs"),
  bundle: true,
  platform: "node",
  target: "node24",
  format: "esm",
  minify: false,
  sourcemap: false,
  legalComments: "none",
  logLevel: "warning",
  banner: {
    js: "import { createRequire as __bangerCreateRequire } from 'node:module'; const require = __bangerCreateRequire(import.meta.url);",
  },
});
