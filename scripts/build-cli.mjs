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
const schemaModules = new Map([
  [join(root, "src/protocol"), /^\.\/(methods|notifications|pool|snapshot|workspace)\.ts$/],
  [join(root, "src/core/oci"), /^\.\/manifest\.ts$/],
]);
const schemaModulesAreSideEffectFree = {
  name: "schema-modules-are-side-effect-free",
  setup(pluginBuild) {
    pluginBuild.onResolve({ filter: /^\.\/[a-z-]+\.ts$/ }, (args) =>
      schemaModules.get(args.resolveDir)?.test(args.path)
        ? { path: join(args.resolveDir, args.path), sideEffects: false }
        : undefined,
    );
  },
};
const result = await build({
  entryPoints: [entry],
  metafile: true,
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

// zod is most of a bundle that holds it, and parsing it is most of a cold start: keep it out.
const [output] = Object.values(result.metafile.outputs);
if (Object.keys(output.inputs).some((path) => path.includes("node_modules/zod/"))) {
  const withZod = Object.entries(result.metafile.inputs)
    .filter(
      ([path, input]) =>
        !path.includes("node_modules/") && input.imports.some((i) => i.path.includes("node_modules/zod/")),
    )
    .map(([path]) => path);
  console.error(
    `build-cli: zod got into the CLI bundle through ${withZod.join(", ")}; the CLI must use only types and plain constants of those modules (a schema value keeps its module, and zod, in the bundle)`,
  );
  process.exit(1);
}
