/**
 * The on-disk contract: every path banger creates, in one place.
 *
 * Defaults follow XDG for a user and /etc/banger, /var/lib/banger and
 * /run/banger for root. `BANGER_HOME=DIR` puts config, state and runtime all
 * under DIR (tests, benchmarks and side-by-side installs use it).
 */
import { join } from "node:path";

export interface LayoutInputs {
  env: Readonly<Record<string, string | undefined>>;
  uid: number;
  homeDir: string;
}

export interface Layout {
  /** Holds config.toml. */
  configDir: string;
  /** Durable state: the database, images, VM directories, keys, logs. */
  stateDir: string;
  /** Runtime files that die with the machine: socket, pid file, ssh control sockets. */
  runtimeDir: string;
  /** TOML config; every key optional. */
  configFile: string;
  /** SQLite database (WAL) of VMs and images. */
  dbFile: string;
  /** The daemon's JSON-RPC Unix socket. */
  socketFile: string;
  /** The daemon's pid, written once it listens. */
  pidFile: string;
  /** flock(2)ed by the one daemon of this home for its whole life. */
  lockFile: string;
  /** The daemon's JSON-lines log. */
  daemonLog: string;
  /** Image store: one content-addressed directory per image. */
  imagesDir: string;
  /** Half-built images; anything here at start-up is debris and removed. */
  imageStagingDir: string;
  /** Image layer and config blobs by digest (`sha256/<hex>`), shared by every image. */
  blobsDir: string;
  /** Registry credentials written by `banger image login` (0600; docker's `auths` shape). */
  registryAuthFile: string;
  /** One directory per VM, named by VM id. */
  vmsDir: string;
  /** One directory per published snapshot, and `.staging/` for those being written. */
  snapshotsDir: string;
  /** The daemon-managed SSH client key pair (id_ed25519, id_ed25519.pub). */
  sshDir: string;
  /** Probe results that are costly to recompute (accelerator probe). */
  cacheDir: string;
  /** OpenSSH ControlMaster sockets, short paths (sun_path is 108 bytes). */
  sshControlDir: string;
}

export function resolveLayout(inputs: LayoutInputs): Layout {
  const { env, uid, homeDir } = inputs;
  const bangerHome = nonEmpty(env.BANGER_HOME);
  let configDir: string;
  let stateDir: string;
  let runtimeDir: string;
  if (bangerHome !== undefined) {
    configDir = join(bangerHome, "config");
    stateDir = join(bangerHome, "state");
    runtimeDir = join(bangerHome, "run");
  } else if (uid === 0) {
    configDir = "/etc/banger";
    stateDir = "/var/lib/banger";
    runtimeDir = "/run/banger";
  } else {
    configDir = join(nonEmpty(env.XDG_CONFIG_HOME) ?? join(homeDir, ".config"), "banger");
    stateDir = join(nonEmpty(env.XDG_STATE_HOME) ?? join(homeDir, ".local", "state"), "banger");
    const xdgRuntime = nonEmpty(env.XDG_RUNTIME_DIR);
    runtimeDir = xdgRuntime !== undefined ? join(xdgRuntime, "banger") : join(stateDir, "run");
  }
  return {
    configDir,
    stateDir,
    runtimeDir,
    configFile: join(configDir, "config.toml"),
    dbFile: join(stateDir, "banger.db"),
    socketFile: join(runtimeDir, "bangerd.sock"),
    pidFile: join(runtimeDir, "bangerd.pid"),
    lockFile: join(stateDir, "bangerd.lock"),
    daemonLog: join(stateDir, "bangerd.log"),
    imagesDir: join(stateDir, "images"),
    imageStagingDir: join(stateDir, "images", ".staging"),
    blobsDir: join(stateDir, "blobs"),
    registryAuthFile: join(configDir, "registry-auth.json"),
    vmsDir: join(stateDir, "vms"),
    snapshotsDir: join(stateDir, "snapshots"),
    sshDir: join(stateDir, "ssh"),
    cacheDir: join(stateDir, "cache"),
    sshControlDir: join(runtimeDir, "ssh"),
  };
}

/**
 * Driver-neutral files inside one VM's directory, deterministic from the VM
 * id. The root disk's name is in ROOT_DISK_FILES (core/disk); each VMM
 * driver names its own private files (sockets, logs, metrics) in `dir`.
 */
export interface VmPaths {
  dir: string;
  /** Transient kernel and process handles (pid, tap, sockets); never in SQLite. */
  handles: string;
  /** The guest's serial console. */
  console: string;
  /** This boot's initrd: the image's with banger's guest agent appended. */
  initrd: string;
  /** The VMM's own stdout and stderr. */
  vmmLog: string;
  /** The guest's pinned SSH host key. */
  knownHosts: string;
  /** ControlMaster socket for this VM's multiplexed SSH connection. */
  sshControl: string;
}

export function vmPaths(layout: Layout, vmId: string): VmPaths {
  const dir = join(layout.vmsDir, vmId);
  return {
    dir,
    handles: join(dir, "handles.json"),
    console: join(dir, "console.log"),
    initrd: join(dir, "initrd.img"),
    vmmLog: join(dir, "vmm.log"),
    knownHosts: join(dir, "known_hosts"),
    sshControl: join(layout.sshControlDir, `${vmId}.ctl`),
  };
}

/** Files inside one image's directory in the image store. */
export interface ImagePaths {
  dir: string;
  kernel: string;
  /** ELF vmlinux extracted from the bzImage, for Firecracker before 1.17. */
  vmlinux: string;
  initrd: string;
  rootfs: string;
  manifest: string;
  /** Installed packages, one "name version" per line, sorted. */
  packages: string;
}

export function imagePaths(dir: string): ImagePaths {
  return {
    dir,
    kernel: join(dir, "vmlinuz"),
    vmlinux: join(dir, "vmlinux"),
    initrd: join(dir, "initrd.gz"),
    rootfs: join(dir, "rootfs.ext4"),
    manifest: join(dir, "manifest.json"),
    packages: join(dir, "packages.txt"),
  };
}

function nonEmpty(value: string | undefined): string | undefined {
  return value === undefined || value === "" ? undefined : value;
}
