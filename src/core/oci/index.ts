/**
 * OCI images, pure side: references with docker's defaults, manifests and
 * indexes (media types, Accept list, platform choice), registry auth
 * challenges and credential lookup, and the meaning of each layer entry
 * (whiteouts, opaque dirs, confinement to the tree).
 */
export {
  basicAuthorization,
  type Challenge,
  type Credentials,
  credentialsFromConfig,
  parseChallenge,
  pullScope,
  tokenUrl,
  withCredentials,
} from "./auth.ts";
export {
  BUILD_REGISTRIES_CONF,
  type DockerfileBuild,
  fromReferences,
  planDockerfileBuild,
} from "./dockerfile.ts";
export {
  classifyEntry,
  type EntryMeaning,
  entryComponents,
  LayerEscapeError,
  type ReadLinkInTree,
  resolveParents,
} from "./layer-path.ts";
export {
  checkConfigPlatform,
  type Descriptor,
  hostPlatform,
  type ImageConfig,
  type ImageIndex,
  type ImageManifest,
  MANIFEST_ACCEPT,
  type ManifestDocument,
  type Platform,
  parseImageConfig,
  parseManifestDocument,
  parsePlatform,
  selectManifest,
} from "./manifest.ts";
export {
  familiarReference,
  formatReference,
  type ImageReference,
  isLoopbackRegistry,
  manifestReference,
  parseReference,
  registryApiHost,
} from "./reference.ts";
export { planRootfsMkfs, rootfsSizeBytes, type TreeUsage } from "./rootfs.ts";
export {
  applyRunDefaults,
  commandFor,
  type ExecRequest,
  envFor,
  parseUserSpec,
  type RunDefaults,
  runDefaultsOf,
  type UserSpec,
} from "./run-defaults.ts";
