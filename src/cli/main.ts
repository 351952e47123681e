/**
 * banger CLI entry point. Refuses an old Node.js with a one-line hint
 * (require-node.ts, evaluated first), then runs the command tree. Static
 * imports keep the bundle flat, so esbuild can leave out what the CLI never
 * uses (zod, with the protocol's schemas).
 */
import "./require-node.ts";
import { homedir } from "node:os";
import { dirname, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { resolveLayout } from "../core/paths/index.ts";
import { createCliContext } from "./context.ts";
import { runCli } from "./program.ts";

// bin/banger exports BANGER_ROOT; running this file directly derives it.
const root = process.env.BANGER_ROOT ?? resolve(dirname(fileURLToPath(import.meta.url)), "..", "..");
const layout = resolveLayout({ env: process.env, uid: process.getuid?.() ?? 0, homeDir: homedir() });
const ctx = createCliContext({ layout, env: process.env, root });
const status = await runCli(ctx, process.argv.slice(2));
// Exit once output is flushed, even if a handle (an stdin pipe) is still open.
process.exitCode = status;
if (process.stdout.writableLength > 0) await new Promise((resolve) => process.stdout.once("drain", resolve));
process.exit(status);
