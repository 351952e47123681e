/**
 * banger's configuration: config.toml in the config dir. Every key is
 * optional with a documented default; an unknown key or a bad value is a
 * CONFIG_INVALID error naming the key and the file.
 */
import { parse as parseToml } from "smol-toml";
import { z } from "zod";
import { BangerError, ErrorCode } from "../../protocol/index.ts";
import { parseDurationMs } from "../units.ts";

const DaemonSection = z
  .object({
    /** Group that may use the socket (mode 0660); empty means owner only (0600). */
    socket_group: z.string().default(""),
    /** Daemon log level. */
    log_level: z.enum(["debug", "info", "warn", "error"]).default("info"),
    /** Size at which the daemon log and each VM's console.log rotate. */
    log_max_bytes: z
      .number()
      .int()
      .min(64 * 1024)
      .default(8 * 1024 * 1024),
    /** Rotated generations kept (name.1 … name.N) besides the live file. */
    log_files: z.number().int().min(1).max(20).default(3),
    /** Open client connections; also capped at half the daemon's open-file limit. */
    max_connections: z.number().int().min(8).max(65536).default(1024),
  })
  .strict();

const VmSection = z
  .object({
    /** Image used when `--image` is not given. */
    default_image: z.string().min(1).default("debian-bookworm"),
    cpus: z.number().int().min(1).max(32).default(1),
    memory_mib: z.number().int().min(128).max(262144).default(512),
    disk_gib: z.number().int().min(1).max(2048).default(2),
    /** Seconds a boot may take before it is declared hung (generous for TCG). */
    boot_timeout_s: z.number().int().min(5).max(3600).default(120),
    /** Extra guest kernel arguments, appended after banger's own. */
    kernel_args: z
      .array(z.string().regex(/^\S+$/, { message: "each argument must be one word without spaces" }))
      .default([]),
    /** Seconds a graceful stop waits at each step (power button, then quit). */
    stop_timeout_s: z.number().int().min(1).max(600).default(15),
    /**
     * `off`, or a duration (30s, 10m, 1h): a running VM with no exec in
     * flight and no traffic on its tap for that long is suspended to disk;
     * the next exec resumes it.
     */
    suspend_after_idle: z
      .string()
      .default("off")
      .refine((value) => value === "off" || parseDurationMs(value) !== undefined, {
        message: "must be 'off' or a duration such as 30s, 10m or 1h",
      }),
  })
  .strict();

const VmmSection = z
  .object({
    /** `auto` picks Firecracker once its driver is wired in and KVM is usable; today it means QEMU. */
    default: z.enum(["auto", "qemu", "firecracker"]).default("auto"),
    /** `auto` uses KVM only where a short probe boot proves it works. */
    accel: z.enum(["auto", "kvm", "tcg"]).default("auto"),
    qemu_binary: z.string().min(1).default("qemu-system-x86_64"),
    firecracker_binary: z.string().min(1).default("firecracker"),
  })
  .strict();

const NetworkSection = z
  .object({
    /** Bridge every VM's tap joins; the gateway address lives on it. */
    bridge: z
      .string()
      .regex(/^[a-zA-Z0-9_.-]{1,15}$/, { message: "must be a Linux interface name of at most 15 characters" })
      .default("banger0"),
    /** IPv4 subnet guests get addresses from; the first host address is the gateway. */
    subnet: z
      .string()
      .regex(/^\d{1,3}(\.\d{1,3}){3}\/(1[6-9]|2[0-9]|30)$/, {
        message: "must be an IPv4 CIDR with a /16 to /30 prefix",
      })
      .default("10.77.0.0/24"),
    /** DNS zone of the VMs' names (`<vm>.<domain>`), and the guests' search domain. */
    domain: z
      .string()
      .regex(/^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*$/, {
        message: "must be a lower-case DNS name such as `vm`",
      })
      .default("vm"),
    /** Port of the DNS server on the gateway and on 127.0.0.1. */
    dns_port: z.number().int().min(1).max(65535).default(53),
    /** Taps made ahead and attached to the bridge, so a VM start only renames one; 0 turns the pool off. */
    tap_pool_size: z.number().int().min(0).max(64).default(4),
    /** Whether guests may reach each other; false drops traffic between taps. */
    vm_to_vm: z.boolean().default(true),
    /** Default egress of new VMs: `allow`, `deny`, or comma-separated names (`*.suffix` for subdomains). */
    egress: z.string().min(1).default("allow"),
  })
  .strict();

const AuthSection = z
  .object({
    /** The CLI user's public keys put in the guest's authorized_keys2; globs, `~` is the CLI user's home. */
    authorized_keys: z.array(z.string().min(1)).default(["~/.ssh/*.pub"]),
    /** Copy user.name and user.email from the CLI user's git config. */
    git_identity: z.boolean().default(true),
    /** Host files (the CLI user's) copied to the guest with mode 0600; `guest` defaults to `host`. */
    files: z
      .array(
        z
          .object({
            host: z.string().min(1),
            guest: z
              .string()
              .regex(/^(\/|~\/)[^\0\n]*$/, { message: "must be absolute or start with ~/" })
              .optional(),
          })
          .strict(),
      )
      .default([]),
  })
  .strict();

const ImageSection = z
  .object({
    /** Registries spoken to over plain HTTP (host[:port]); loopback ones always are. */
    insecure_registries: z
      .array(
        z.string().regex(/^[A-Za-z0-9.\-[\]:]+$/, { message: "each entry must be a registry host[:port]" }),
      )
      .default([]),
  })
  .strict();

/**
 * A warm pool (`[[pool]]`): `count` VMs made ahead from a snapshot (restored)
 * or an image (booted; the default image when neither is given), kept paused; a `vm run` or `vm create` whose spec
 * matches takes one instead of starting a VM.
 */
const PoolEntry = z
  .object({
    /** Names the pool in `pool ls` and its members' names (`pool-NAME-…`). */
    name: z
      .string()
      .regex(/^[a-z0-9]([a-z0-9-]{0,14}[a-z0-9])?$/, {
        message: "must be 1-16 lowercase letters, digits or inner hyphens",
      })
      .default("default"),
    snapshot: z.string().min(1).optional(),
    image: z.string().min(1).optional(),
    count: z.number().int().min(1).max(32).default(2),
    /** The most guest memory the pool's paused members may hold; fewer members are kept if it is less than count × memory. */
    memory_budget_mib: z.number().int().min(128).optional(),
  })
  .strict()
  .refine((entry) => entry.snapshot === undefined || entry.image === undefined, {
    message: "give a snapshot or an image, not both (neither: the default image)",
  });

const ConfigSchema = z
  .object({
    daemon: DaemonSection.default(DaemonSection.parse({})),
    vm: VmSection.default(VmSection.parse({})),
    vmm: VmmSection.default(VmmSection.parse({})),
    network: NetworkSection.default(NetworkSection.parse({})),
    image: ImageSection.default(ImageSection.parse({})),
    auth: AuthSection.default(AuthSection.parse({})),
    pool: z
      .array(PoolEntry)
      .default([])
      .refine((entries) => new Set(entries.map((entry) => entry.name)).size === entries.length, {
        message: "each [[pool]] needs its own name",
      }),
  })
  .strict();
export type PoolConfig = z.infer<typeof PoolEntry>;

export type Config = z.infer<typeof ConfigSchema>;

/**
 * Defaults that come from the daemon's environment rather than the schema;
 * a key set in config.toml wins over them.
 */
export interface ConfigDefaults {
  /** The default of `vm.default_image` (BANGER_DEFAULT_IMAGE: tests and CI boot the minimal image). */
  vmDefaultImage?: string | undefined;
}

export function defaultConfig(defaults: ConfigDefaults = {}): Config {
  return ConfigSchema.parse(withDefaults({}, defaults));
}

/** Parses config text; `file` only names the source in errors. */
export function parseConfig(text: string, file: string, defaults: ConfigDefaults = {}): Config {
  let raw: unknown;
  try {
    raw = parseToml(text);
  } catch (error) {
    throw new BangerError(ErrorCode.CONFIG_INVALID, `${file}: not valid TOML: ${(error as Error).message}`, {
      hint: "fix the syntax error, or remove the file to use the defaults",
    });
  }
  const result = ConfigSchema.safeParse(withDefaults(raw, defaults));
  if (!result.success) {
    const issue = result.error.issues[0]!;
    const key = keyOf(issue);
    throw new BangerError(ErrorCode.CONFIG_INVALID, `${file}: ${key}: ${describeIssue(issue)}`, {
      data: { file, key },
    });
  }
  return result.data;
}

/** The parsed TOML with the environment's defaults filled in where the file left a key out. */
function withDefaults(raw: unknown, defaults: ConfigDefaults): unknown {
  if (!defaults.vmDefaultImage || !isTable(raw)) return raw;
  const vm = raw.vm ?? {};
  if (!isTable(vm) || vm.default_image !== undefined) return raw;
  return { ...raw, vm: { ...vm, default_image: defaults.vmDefaultImage } };
}

function isTable(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

function keyOf(issue: z.core.$ZodIssue): string {
  const path = issue.path.map(String);
  if (issue.code === "unrecognized_keys") {
    return [...path, issue.keys[0] ?? "?"].join(".");
  }
  return path.join(".") || "(top level)";
}

function describeIssue(issue: z.core.$ZodIssue): string {
  if (issue.code === "unrecognized_keys") return "unknown key";
  return issue.message;
}
