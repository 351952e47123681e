/**
 * Loads config.toml from the config dir. A missing file means defaults.
 */
import { readFile } from "node:fs/promises";
import { type Config, type ConfigDefaults, defaultConfig, parseConfig } from "../../core/config/index.ts";

export async function loadConfigFile(path: string, defaults: ConfigDefaults = {}): Promise<Config> {
  let text: string;
  try {
    text = await readFile(path, "utf8");
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === "ENOENT") return defaultConfig(defaults);
    throw error;
  }
  return parseConfig(text, path, defaults);
}
