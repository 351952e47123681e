/**
 * A newc ("070701") cpio archive in memory, the format the kernel unpacks
 * as an initramfs. Appended to an image's initrd, it adds files to the
 * initramfs without rebuilding it (the kernel unpacks concatenated archives
 * in order).
 */
export interface CpioEntry {
  /** Path inside the archive, without a leading slash. */
  name: string;
  /** Full st_mode, e.g. 0o040755 for a directory, 0o100755 for an executable. */
  mode: number;
  data?: Uint8Array;
}

export function newcArchive(entries: readonly CpioEntry[]): Buffer {
  const parts: Buffer[] = [];
  let inode = 1;
  for (const entry of [...entries, { name: "TRAILER!!!", mode: 0 }]) {
    const data = Buffer.from(entry.data ?? new Uint8Array(0));
    const name = Buffer.from(`${entry.name}\0`, "utf8");
    const isTrailer = entry.name === "TRAILER!!!";
    const fields = [
      isTrailer ? 0 : inode++,
      entry.mode,
      0, // uid
      0, // gid
      isTrailer ? 1 : entry.mode & 0o040000 ? 2 : 1,
      0, // mtime: fixed, so the archive is reproducible
      data.length,
      0,
      0,
      0,
      0,
      name.length,
      0,
    ];
    const header = Buffer.from(
      `070701${fields.map((f) => f.toString(16).padStart(8, "0")).join("")}`,
      "ascii",
    );
    parts.push(header, name, pad(header.length + name.length), data, pad(data.length));
  }
  const archive = Buffer.concat(parts);
  return Buffer.concat([archive, pad(archive.length, 512)]);
}

function pad(length: number, to = 4): Buffer {
  return Buffer.alloc((to - (length % to)) % to);
}
