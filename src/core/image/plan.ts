/**
 * Build planning: the default image as an ordered list of commands. Pure:
 * the service runs each step through the Runner and reports it as progress.
 */
import { join } from "node:path";
import { type ImagePaths, imagePaths } from "../paths/index.ts";
import { defaultCatalogEntry, type ImageRecipe } from "./catalog.ts";

type BuildStepId = "rootfs" | "customize" | "kernel" | "initrd" | "mkfs" | "cleanup" | "cache-copy";

export interface BuildStep {
  /** Machine name; progress reports it as `image.<id>`. */
  id: BuildStepId;
  /** What the step does, for humans. */
  message: string;
  argv: readonly string[];
}

interface DefaultImageBuildInputs {
  /** A fresh, empty directory; it becomes the image directory once published. */
  stagingDir: string;
  /** banger's guest/ directory (init, setup, helper scripts). */
  guestFilesDir: string;
  /** apt's own sources file (deb822 or one-line); mmdebstrap uses it as the mirror spec. */
  aptSourcesFile: string;
  recipe?: ImageRecipe | undefined;
}

export interface BuildPlan {
  /** Files of the finished image, inside stagingDir. */
  paths: ImagePaths;
  /** The rootfs tree, removed by the last step. */
  rootfsTree: string;
  steps: BuildStep[];
}

/** Debian's deb822 sources file; hosts installed before bookworm have only the one-line file. */
export const APT_DEB822_SOURCES = "/etc/apt/sources.list.d/debian.sources";
const APT_ONE_LINE_SOURCES = "/etc/apt/sources.list";

/**
 * The apt sources file mmdebstrap is given. Passing apt's own file keeps the
 * host's mirror, suites and security source; no mirror host is hard-coded.
 */
export function chooseAptSourcesFile(deb822Exists: boolean): string {
  return deb822Exists ? APT_DEB822_SOURCES : APT_ONE_LINE_SOURCES;
}

/**
 * The default image from scratch: mmdebstrap (root mode, so the tree has real
 * root ownership for mkfs.ext4 -d), banger's customization, kernel and
 * package list out, busybox initramfs, ext4 image, tree removed.
 */
export function planDefaultImageBuild(inputs: DefaultImageBuildInputs): BuildPlan {
  const recipe = inputs.recipe ?? defaultCatalogEntry().recipe;
  const paths = imagePaths(inputs.stagingDir);
  const tree = join(inputs.stagingDir, "rootfs");
  const guest = (script: string) => join(inputs.guestFilesDir, script);
  const steps: BuildStep[] = [
    {
      id: "rootfs",
      message: `installing Debian ${recipe.suite} (${recipe.packages.length} packages) with mmdebstrap`,
      argv: [
        "mmdebstrap",
        "--mode=root",
        `--variant=${recipe.variant}`,
        `--include=${recipe.packages.join(",")}`,
        ...recipe.dpkgPathFilters.map((filter) => `--dpkgopt=${filter}`),
        recipe.suite,
        tree,
        inputs.aptSourcesFile,
      ],
    },
    {
      id: "customize",
      message: "installing banger-init and the guest configuration",
      argv: ["sh", guest("customize"), tree, inputs.guestFilesDir],
    },
    {
      id: "kernel",
      message: "copying out the kernel and the package list",
      argv: ["sh", guest("export-boot"), tree, inputs.stagingDir],
    },
    {
      id: "initrd",
      message: "building the busybox initramfs",
      argv: ["sh", guest("mkinitramfs"), tree, join(tree, "bin", "busybox"), paths.initrd],
    },
    {
      id: "mkfs",
      message: `writing the ${recipe.rootfsSize} ext4 root filesystem`,
      argv: ["mkfs.ext4", "-q", "-F", "-L", "rootfs", "-d", tree, paths.rootfs, recipe.rootfsSize],
    },
    {
      id: "cleanup",
      message: "removing the rootfs tree",
      argv: removeTreeArgv(tree),
    },
  ];
  return { paths, rootfsTree: tree, steps };
}

interface CachedImageCopyInputs {
  /** A build-cache entry holding a finished image's files. */
  cacheEntryDir: string;
  stagingDir: string;
}

/** Files an image directory holds that a cache entry must hold too. */
export function imageFiles(paths: ImagePaths): string[] {
  return [paths.kernel, paths.initrd, paths.rootfs, paths.packages];
}

/** Copies a cached build into a staging dir; sparse, because the rootfs is mostly holes. */
export function planCachedImageCopy(inputs: CachedImageCopyInputs): BuildPlan {
  const paths = imagePaths(inputs.stagingDir);
  return {
    paths,
    rootfsTree: join(inputs.stagingDir, "rootfs"),
    steps: [
      {
        id: "cache-copy",
        message: `copying the image from the build cache ${inputs.cacheEntryDir}`,
        argv: sparseCopyArgv(imageFiles(imagePaths(inputs.cacheEntryDir)), inputs.stagingDir),
      },
    ],
  };
}

/** `cp --sparse=always` of several files into one directory. */
export function sparseCopyArgv(sources: readonly string[], targetDir: string): string[] {
  return ["cp", "--sparse=always", "--", ...sources, `${targetDir}/`];
}

/** One file to a new name: sparse, and a reflink where the filesystem has them. */
export function copyFileArgv(from: string, to: string): string[] {
  return ["cp", "--sparse=always", "--reflink=auto", "--", from, to];
}

/**
 * Removes a tree without crossing into other filesystems: a build killed
 * mid-way can leave /proc, /sys or /dev/pts mounted inside the rootfs tree.
 */
export function removeTreeArgv(dir: string): string[] {
  return ["rm", "-rf", "--one-file-system", "--", dir];
}
