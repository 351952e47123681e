/**
 * Refuses an old Node.js with a one-line hint. main.ts imports this first,
 * so it runs before any other module of the CLI is evaluated.
 */
const [major = 0, minor = 0] = process.versions.node.split(".").map(Number);
if (major < 24 || (major === 24 && minor < 15)) {
  process.stderr.write(
    `banger: needs Node.js >= 24.15 (this is ${process.versions.node}); run 'npm ci' to install it locally\n`,
  );
  process.exit(11);
}
