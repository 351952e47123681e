/**
 * `image promote VM NAME`, planned as argv: the stopped VM's root disk made
 * into a standalone raw ext4 (`qemu-img convert` of a qcow2 overlay, or a
 * sparse copy of a raw disk), then banger's per-VM material removed from it
 * with `debugfs -w` (no mount): the guest's SSH host keys, the daemon's
 * authorized key, what `vm auth sync` wrote (the user's keys, git identity
 * and auth files) and the machine id (left empty, as image builders leave
 * it), then `e2fsck -fy`. Pure.
 */

/** Files banger or the guest wrote for one VM, never for an image. */
export const PER_VM_FILES = [
  "/root/.ssh/authorized_keys",
  // What `vm auth sync` writes (the user's keys and git identity); its [auth] files are listed per VM.
  "/root/.ssh/authorized_keys2",
  "/root/.gitconfig",
  "/etc/ssh/ssh_host_ed25519_key",
  "/etc/ssh/ssh_host_ed25519_key.pub",
  "/etc/ssh/ssh_host_rsa_key",
  "/etc/ssh/ssh_host_rsa_key.pub",
  "/etc/ssh/ssh_host_ecdsa_key",
  "/etc/ssh/ssh_host_ecdsa_key.pub",
  "/var/lib/dbus/machine-id",
] as const;

export type PromoteSource = { kind: "qcow2"; path: string } | { kind: "raw"; path: string };

export interface PromotePlan {
  /** Makes `out` a standalone raw ext4 image of the VM's disk. */
  flatten: string[];
  /** debugfs reading `script` (written to `scriptFile`) to remove the per-VM files. */
  scrubArgv: string[];
  scrubScript: string;
  fsck: string[];
}

/** `extraFiles`: more absolute guest paths to remove (the VM's synced auth files); quotes are refused. */
export function planPromote(
  source: PromoteSource,
  out: string,
  scriptFile: string,
  extraFiles: readonly string[] = [],
): PromotePlan {
  const flatten =
    source.kind === "qcow2"
      ? ["qemu-img", "convert", "-O", "raw", source.path, out]
      : ["cp", "--sparse=always", "--reflink=auto", "--", source.path, out];
  const lines = PER_VM_FILES.map((file) => `rm ${file}`);
  for (const file of extraFiles) {
    if (/^\/[^"\n\\]*$/.test(file)) lines.push(`rm "${file}"`);
  }
  // An empty /etc/machine-id makes the next boot generate a fresh one.
  lines.push("rm /etc/machine-id", "write /dev/null /etc/machine-id");
  return {
    flatten,
    scrubArgv: ["debugfs", "-w", "-f", scriptFile, out],
    scrubScript: `${lines.join("\n")}\n`,
    fsck: ["e2fsck", "-fy", out],
  };
}
