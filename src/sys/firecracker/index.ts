/**
 * Firecracker adapter: the HTTP/1.1 API client over the Unix socket and the
 * VmmDriver that spawns Firecracker detached, configures it through the API
 * (the plan comes from src/core/firecracker), and stops, kills and pauses it.
 */
export {
  createFirecrackerClient,
  type FirecrackerClient,
  type FirecrackerReply,
  waitForApi,
} from "./client.ts";
export {
  createFirecrackerDriver,
  type FirecrackerDriver,
  type FirecrackerDriverOptions,
  pauseFirecracker,
  resumeFirecracker,
} from "./driver.ts";
