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

/**
 * The protocol's schema modules only build zod schemas: evaluating them has
 * no effect beyond their exports. Saying so lets esbuild drop them, and zod
 * with them, from the CLI, which uses only their types (the daemon
 * validates). A CLI that starts using a schema value keeps it.
 */
const schemaModulesAreSideEffectFree = {
  name: "schema-modules-are-side-effect-free",
  setup(pluginBuild) {
    pluginBuild.onResolve({ filter: /^\.\/(methods|notifications)\.ts$/ }, (args) =>
      args.resolveDir === join(root, "src/protocol")
        ? { path: join(args.resolveDir, args.path), sideEffects: false }
        : undefined,
    );
  },
};
await build({
  entryPoints: [entry],
  outfile: join(root, "dist/banger.mjs"),
  bundle: true,
  plugins: [schemaModulesAreSideEffectFree],
  platform: "node",
  target: "node24",
  format: "esm",
  minify: true,
  sourcemap: false,
  legalComments: "none",
  logLevel: "warning",
  banner: {
    js: "import { createRequire as __bangerCreateRequire } from 'node:module'; const require = __bangerCreateRequire(import.meta.url);",
  },
});
