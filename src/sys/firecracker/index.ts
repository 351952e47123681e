/**
 * Firecracker adapter: the HTTP/1.1 API client over the Unix socket and the
 * VmmDriver that spawns Firecracker detached, configures it through the API
 * (the plan comes from src/core/firecracker), and stops, kills and pauses it.
 */
export {
  createFirecrackerClient,
  type FirecrackerClient,
  type FirecrackerReply,
  firecrackerRequest,
  waitForApi,
} from "./client.ts";
export {
  createFirecrackerDriver,
  FIRECRACKER_LOG,
  type FirecrackerDriver,
  type FirecrackerDriverOptions,
  pauseFirecracker,
  probeCapabilities,
  resumeFirecracker,
} from "./driver.ts";
