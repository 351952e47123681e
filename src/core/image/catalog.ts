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

/** The image a VM gets when it names none: a developer's Debian. */
export const DEFAULT_IMAGE_NAME = "debian-bookworm";

/**
 * The small image: what banger-init, the agent, SSH, git and disk growth
 * need and no more. Tests, CI and the bench boot it (BANGER_DEFAULT_IMAGE);
 * its recipe is the build-cache key, so any change here rebuilds it.
 */
export const MINIMAL_IMAGE_NAME = "debian-bookworm-minimal";

const minimalPackages = Object.freeze([
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
]);

/** What `banger vm run -- make test` expects of a Linux box, on top of the minimal set. */
const developerPackages = Object.freeze([
  "build-essential",
  "python3",
  "make",
  "jq",
  "less",
  "vim-tiny",
  "procps",
  "iputils-ping",
  "dnsutils",
  "unzip",
]);

const dpkgPathFilters = Object.freeze([
  "path-exclude=/usr/share/man/*",
  "path-exclude=/usr/share/locale/*",
  "path-exclude=/usr/share/doc/*",
  "path-include=/usr/share/doc/*/copyright",
]);

const debianBookwormMinimal: CatalogEntry = Object.freeze({
  name: MINIMAL_IMAGE_NAME,
  kind: "debian",
  description: "Debian 12 (bookworm), cloud kernel, OpenSSH, git, curl; small and quick to build",
  recipe: Object.freeze({
    suite: "bookworm",
    variant: "minbase",
    packages: minimalPackages,
    dpkgPathFilters,
    rootfsSize: "1G",
  }),
});

const debianBookworm: CatalogEntry = Object.freeze({
  name: DEFAULT_IMAGE_NAME,
  kind: "debian",
  description:
    "Debian 12 (bookworm) for development: the minimal image plus build-essential, python3, jq, vim-tiny, ...",
  recipe: Object.freeze({
    suite: "bookworm",
    variant: "minbase",
    packages: Object.freeze([...minimalPackages, ...developerPackages]),
    dpkgPathFilters,
    rootfsSize: "2G",
  }),
});

const catalog: readonly CatalogEntry[] = Object.freeze([debianBookworm, debianBookwormMinimal]);

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
