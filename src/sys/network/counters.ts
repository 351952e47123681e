/**
 * A link's byte counters, read from sysfs (the daemon's namespace's view:
 * `ip netns exec` mounts its own /sys). Undefined when the link is gone or
 * the files cannot be read.
 */
import { readFile } from "node:fs/promises";

const LINK_NAME = /^[A-Za-z0-9_.-]{1,15}$/;

/** rx_bytes + tx_bytes of `link`. */
export async function readLinkBytes(
  link: string,
  sysClassNet = "/sys/class/net",
): Promise<number | undefined> {
  if (!LINK_NAME.test(link)) return undefined;
  try {
    const [rx, tx] = await Promise.all(
      ["rx_bytes", "tx_bytes"].map((file) => readFile(`${sysClassNet}/${link}/statistics/${file}`, "utf8")),
    );
    const total = Number(rx) + Number(tx);
    return Number.isFinite(total) ? total : undefined;
  } catch {
    return undefined;
  }
}
