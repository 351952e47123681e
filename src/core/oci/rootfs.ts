/**
 * The ext4 root filesystem made from a flattened image tree: its size and
 * inode count from what the tree holds (with room for the journal and
 * metadata; VMs grow the filesystem at boot), and the mkfs.ext4 argv. Pure.
 */

export interface TreeUsage {
  /** Bytes of file data, each file rounded up to 4 KiB blocks. */
  bytes: number;
  /** Files, directories, links and nodes. */
  inodes: number;
}

const MIB = 1024 * 1024;

export function rootfsSizeBytes(usage: TreeUsage): number {
  const metadata = usage.inodes * 256 + usage.inodes * 64;
  const wanted = (usage.bytes + metadata) * 1.15 + 48 * MIB;
  return Math.ceil(wanted / MIB) * MIB;
}

export function planRootfsMkfs(options: { tree: string; out: string; usage: TreeUsage }): string[] {
  const inodes = Math.ceil(options.usage.inodes * 1.25) + 4096;
  const sizeMib = rootfsSizeBytes(options.usage) / MIB;
  return [
    "mkfs.ext4",
    "-q",
    "-F",
    "-L",
    "rootfs",
    "-b",
    "4096",
    "-N",
    String(inodes),
    "-E",
    "root_owner=0:0",
    "-d",
    options.tree,
    options.out,
    `${sizeMib}M`,
  ];
}
