/**
 * bangerd entry point: runs the daemon in the foreground until SIGTERM,
 * SIGINT or `banger daemon stop`.
 */
const [major = 0, minor = 0] = process.versions.node.split(".").map(Number);
if (major < 24 || (major === 24 && minor < 15)) {
  process.stderr.write(
    `bangerd: needs Node.js >= 24.15 (this is ${process.versions.node}); run 'npm ci' to install it locally\n`,
  );
  process.exit(11);
}

const { startDaemon } = await import("./compose/index.ts");
const { exitStatusFor, isBangerError } = await import("../protocol/index.ts");

const args = process.argv.slice(2);
if (args.includes("--help") || args.includes("-h")) {
  process.stdout.write(
    "Usage: bangerd [--log-stderr]\n\nRuns the banger daemon in the foreground. `banger` starts it on demand.\n" +
      "Environment: BANGER_HOME=DIR puts config, state and runtime under DIR.\n",
  );
  process.exit(0);
}

try {
  const daemon = await startDaemon({ env: process.env, logToStderr: args.includes("--log-stderr") });
  const onSignal = (signal: string) => void daemon.stop(`received ${signal}`);
  process.on("SIGTERM", () => onSignal("SIGTERM"));
  process.on("SIGINT", () => onSignal("SIGINT"));
  process.on("SIGHUP", () => {});
  await daemon.stopped;
  process.exit(0);
} catch (error) {
  if (isBangerError(error)) {
    // One line (and its hint) that the CLI shows from the log's tail; the status tells the CLI why.
    process.stderr.write(`bangerd: ${error.message}\n${error.hint ? `hint: ${error.hint}\n` : ""}`);
    process.exit(exitStatusFor[error.code]);
  }
  process.stderr.write(`bangerd: ${(error as Error).stack ?? String(error)}\n`);
  process.exit(1);
}
