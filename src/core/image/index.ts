/**
 * Images, pure side: the built-in catalog and its recipes, the build planner
 * (steps as argv), the guest kernel command line, and content digests.
 */
export {
  type CatalogEntry,
  DEFAULT_IMAGE_NAME,
  defaultCatalogEntry,
  findCatalogEntry,
  type ImageRecipe,
  listCatalog,
} from "./catalog.ts";
export { type KernelCmdlineInputs, planKernelCmdline } from "./cmdline.ts";
export {
  type ImageDigestInputs,
  imageDigest,
  type NamedContent,
  normalizePackageList,
  recipeHash,
  shortDigest,
} from "./digest.ts";
export {
  APT_DEB822_SOURCES,
  type BuildPlan,
  type BuildStep,
  type BuildStepId,
  type CachedImageCopyInputs,
  chooseAptSourcesFile,
  type DefaultImageBuildInputs,
  imageFiles,
  planCachedImageCopy,
  planDefaultImageBuild,
  removeTreeArgv,
  sparseCopyArgv,
} from "./plan.ts";
