/**
 * banger CLI entry point. Refuses an old Node.js with a one-line hint, then
 * loads the command tree.
 */
const [major = 0, minor = 0] = process.versions.node.split(".").map(Number);
if (major < 24 || (major === 24 && minor < 15)) {
  process.stderr.write(
    `banger: needs Node.js >= 24.15 (this is ${process.versions.node}); run 'npm ci' to install it locally\n`,
  );
  process.exit(11);
}

const { homedir } = await import("node:os");
const { dirname, resolve } = await import("node:path");
const { fileURLToPath } = await import("node:url");
const { resolveLayout } = await import("../core/paths/index.ts");
const { createCliContext } = await import("./context.ts");
const { runCli } = await import("./program.ts");

// bin/banger exports BANGER_ROOT; running this file directly derives it.
const root = process.env.BANGER_ROOT ?? resolve(dirname(fileURLToPath(import.meta.url)), "..", "..");
const layout = resolveLayout({ env: process.env, uid: process.getuid?.() ?? 0, homeDir: homedir() });
const ctx = createCliContext({ layout, env: process.env, root });
const status = await runCli(ctx, process.argv.slice(2));
// Exit once output is flushed, even if a handle (an stdin pipe) is still open.
process.exitCode = status;
if (process.stdout.writableLength > 0) await new Promise((resolve) => process.stdout.once("drain", resolve));
process.exit(status);
