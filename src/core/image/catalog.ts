/** The built-in image catalog: what each buildable image is made of. */

export interface ImageRecipe {
  /** Debian suite mmdebstrap installs. */
  suite: string;
  /** mmdebstrap variant: minbase is the smallest set apt can run in. */
  variant: "minbase";
  /** Packages installed on top of the variant. */
  packages: readonly string[];
  /** dpkg path-exclude/path-include filters, in order (later filters win). */
  dpkgPathFilters: readonly string[];
  /** Size of the root filesystem image, as mkfs.ext4 takes it; VMs grow it at boot. */
  rootfsSize: string;
}

export interface CatalogEntry {
  name: string;
  kind: string;
  description: string;
  recipe: ImageRecipe;
}

/** The image a VM gets when it names none. */
export const DEFAULT_IMAGE_NAME = "debian-bookworm";

const debianBookworm: CatalogEntry = Object.freeze({
  name: DEFAULT_IMAGE_NAME,
  kind: "debian",
  description: "Debian 12 (bookworm), cloud kernel, OpenSSH, git; boots banger-init",
  recipe: Object.freeze({
    suite: "bookworm",
    variant: "minbase",
    packages: Object.freeze([
      "linux-image-cloud-amd64",
      "openssh-server",
      "ca-certificates",
      "git",
      "curl",
      "tmux",
      "sudo",
      "iproute2",
      "kmod",
      "udev",
      "busybox-static",
      "e2fsprogs",
    ]),
    dpkgPathFilters: Object.freeze([
      "path-exclude=/usr/share/man/*",
      "path-exclude=/usr/share/locale/*",
      "path-exclude=/usr/share/doc/*",
      "path-include=/usr/share/doc/*/copyright",
    ]),
    rootfsSize: "1G",
  }),
});

const catalog: readonly CatalogEntry[] = Object.freeze([debianBookworm]);

/** The catalog entry called `name`, or undefined. */
export function findCatalogEntry(name: string): CatalogEntry | undefined {
  return catalog.find((entry) => entry.name === name);
}

/** Every entry of the built-in catalog. */
export function catalogEntries(): readonly CatalogEntry[] {
  return catalog;
}

/** The entry the default image is built from. */
export function defaultCatalogEntry(): CatalogEntry {
  return debianBookworm;
}
