/**
 * Images, pure side: the built-in catalog and its recipes, the build planner
 * (steps as argv), the guest kernel command line, and content digests.
 */
export {
  type CatalogEntry,
  catalogEntries,
  DEFAULT_IMAGE_NAME,
  defaultCatalogEntry,
  findCatalogEntry,
  MINIMAL_IMAGE_NAME,
} from "./catalog.ts";
export { planKernelCmdline } from "./cmdline.ts";
export {
  imageDigest,
  type NamedContent,
  recipeHash,
  shortDigest,
} from "./digest.ts";
export {
  APT_DEB822_SOURCES,
  type BuildPlan,
  type BuildStep,
  chooseAptSourcesFile,
  copyFileArgv,
  imageFiles,
  planCachedImageCopy,
  planDefaultImageBuild,
  removeTreeArgv,
  sparseCopyArgv,
} from "./plan.ts";
export { PER_VM_FILES, type PromoteSource, planPromote } from "./promote.ts";
