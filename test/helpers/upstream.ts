/**
 * An "internet" for network tests: a namespace joined to the daemon's
 * namespace by a veth pair on 198.51.100.0/24 (documentation addresses).
 * The daemon's side is 198.51.100.2 with its default route through the
 * upstream, 198.51.100.1, which also holds 198.51.100.3; both serve HTTP,
 * and .1 answers DNS for the test zone. The daemon's namespace gets
 * /etc/netns/NAME/resolv.conf naming the upstream DNS, so it must be made
 * before the daemon starts. `dispose` removes all of it.
 */
import { type ChildProcess, execFileSync, spawn } from "node:child_process";
import { mkdirSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";

export const UPLINK = "198.51.100.2";
export const UPSTREAM = "198.51.100.1";
export const UPSTREAM_OTHER = "198.51.100.3";

export interface Upstream {
  netns: string;
  dispose(): Promise<void>;
}

export async function createUpstream(options: {
  daemonNetns: string;
  zone: Record<string, string>;
}): Promise<Upstream> {
  const netns = `${options.daemonNetns.slice(0, 20)}-up`;
  const ip = (...args: string[]) => execFileSync("ip", args);
  ip("netns", "add", netns);
  const resolvDir = join("/etc/netns", options.daemonNetns);
  let server: ChildProcess | undefined;
  const dispose = async () => {
    if (server?.exitCode === null) {
      server.kill("SIGTERM");
      await new Promise((resolve) => server?.once("exit", resolve));
    }
    try {
      ip("netns", "del", netns);
    } catch {
      // Already gone.
    }
    rmSync(resolvDir, { recursive: true, force: true });
  };
  try {
    ip(
      "link",
      "add",
      "fnu0",
      "netns",
      options.daemonNetns,
      "type",
      "veth",
      "peer",
      "name",
      "fnu1",
      "netns",
      netns,
    );
    ip("-n", options.daemonNetns, "addr", "add", `${UPLINK}/24`, "dev", "fnu0");
    ip("-n", options.daemonNetns, "link", "set", "fnu0", "up");
    ip("-n", options.daemonNetns, "link", "set", "lo", "up");
    ip("-n", options.daemonNetns, "route", "add", "default", "via", UPSTREAM);
    ip("-n", netns, "addr", "add", `${UPSTREAM}/24`, "dev", "fnu1");
    ip("-n", netns, "addr", "add", `${UPSTREAM_OTHER}/24`, "dev", "fnu1");
    ip("-n", netns, "link", "set", "fnu1", "up");
    ip("-n", netns, "link", "set", "lo", "up");
    mkdirSync(resolvDir, { recursive: true });
    writeFileSync(join(resolvDir, "resolv.conf"), `nameserver ${UPSTREAM}\n`);
    server = spawn(
      "ip",
      ["netns", "exec", netns, process.execPath, join(import.meta.dirname, "upstream-server.ts")],
      {
        env: {
          ...process.env,
          UPSTREAM_ADDRESSES: `${UPSTREAM},${UPSTREAM_OTHER}`,
          UPSTREAM_ZONE: JSON.stringify(options.zone),
        },
        stdio: ["ignore", "pipe", "inherit"],
      },
    );
    await new Promise<void>((resolve, reject) => {
      server?.stdout?.on("data", (chunk: Buffer) => {
        if (chunk.toString().includes("ready")) resolve();
      });
      server?.once("exit", (code) => reject(new Error(`upstream server exited with ${code}`)));
    });
  } catch (error) {
    await dispose();
    throw error;
  }
  return { netns, dispose };
}
