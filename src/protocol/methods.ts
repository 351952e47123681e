/**
 * The method table: every RPC method's params and result, defined once.
 * The daemon validates params with these schemas; the CLI's types are
 * inferred from the same schemas. One concern, the wire table: a family
 * with schemas of its own moves to a file beside it (workspace.ts).
 */
import { z } from "zod";
import { ProgressStep } from "./notifications.ts";
import { poolMethods } from "./pool.ts";
import { SnapshotInfo, snapshotMethods, VmForkParams } from "./snapshot.ts";
import { VM_NAME_PATTERN } from "./wire.ts";
import { workspaceMethods } from "./workspace.ts";

/** `suspended`: the guest's memory is on disk and no VMM runs; `vm resume` (or an exec) restores it. */
export const VmState = z.enum([
  "created",
  "starting",
  "running",
  "paused",
  "suspended",
  "stopping",
  "stopped",
  "error",
]);
export type VmState = z.infer<typeof VmState>;

export const VmmKind = z.enum(["qemu", "firecracker"]);
export type VmmKind = z.infer<typeof VmmKind>;

/** DNS label: lowercase letters, digits and hyphens, 1 to 63, no edge hyphen. */
export const VmNameSchema = z.string().regex(VM_NAME_PATTERN, {
  message: "must be a DNS label: 1-63 lowercase letters, digits or hyphens, not starting or ending with '-'",
});

const Cpus = z.number().int().min(1).max(32);
const MemoryMib = z.number().int().min(128).max(262144);
const DiskGib = z.number().int().min(1).max(2048);

export const VmInfo = z.object({
  id: z.string(),
  name: z.string(),
  state: VmState,
  image: z.string(),
  vmm: VmmKind,
  cpus: z.number(),
  memoryMib: z.number(),
  diskGib: z.number(),
  guestIp: z.string(),
  mac: z.string(),
  createdAt: z.string(),
  updatedAt: z.string(),
  lastError: z.string().nullable(),
  dir: z.string(),
  pid: z.number().nullable(),
  /** Published ports, "HOST_IP:HOST_PORT->GUEST_PORT/PROTO". */
  ports: z.array(z.string()).optional(),
  /** Egress policy: allow, deny, or the allowed names. */
  egress: z.string().optional(),
});
export type VmInfo = z.infer<typeof VmInfo>;

export const ImageInfo = z.object({
  id: z.string(),
  name: z.string(),
  kind: z.string(),
  dir: z.string(),
  kernel: z.string(),
  initrd: z.string().nullable(),
  rootfs: z.string(),
  sizeBytes: z.number(),
  createdAt: z.string(),
  /** Registry reference or imported file (OCI images). */
  source: z.string().nullable().optional(),
  /** Manifest digest (OCI images). */
  digest: z.string().nullable().optional(),
  /** Names of the VMs that use it. */
  usedBy: z.array(z.string()).optional(),
  platform: z.string().optional(),
  /** ENTRYPOINT, CMD, ENV, WORKDIR, USER of an OCI image. */
  runDefaults: z
    .object({
      entrypoint: z.array(z.string()),
      cmd: z.array(z.string()),
      env: z.array(z.string()),
      workdir: z.string().optional(),
      user: z.string().optional(),
    })
    .optional(),
});
export type ImageInfo = z.infer<typeof ImageInfo>;

const PlatformText = z
  .string()
  .regex(/^[a-z0-9_]+(\/[a-z0-9_]+){0,2}$/, { message: "must be OS/ARCH[/VARIANT], e.g. linux/amd64" });
const RegistryHost = z
  .string()
  .min(1)
  .max(255)
  .regex(/^[A-Za-z0-9.\-[\]:]+$/, { message: "must be a registry host[:port]" });

export const DoctorCheck = z.object({
  name: z.string(),
  status: z.enum(["ok", "warn", "fail"]),
  detail: z.string(),
  hint: z.string().optional(),
});
export type DoctorCheck = z.infer<typeof DoctorCheck>;

const Empty = z.object({}).strict().optional();
const ByName = z.object({ name: z.string().min(1) }).strict();

export const CreateVmParams = z
  .object({
    name: VmNameSchema.optional(),
    image: z.string().min(1).optional(),
    cpus: Cpus.optional(),
    memoryMib: MemoryMib.optional(),
    diskGib: DiskGib.optional(),
    vmm: VmmKind.optional(),
    start: z.boolean().optional(),
    /** `[HOST_IP:]HOST_PORT:GUEST_PORT[/udp]`, docker's syntax. */
    publish: z.array(z.string().max(64)).max(64).optional(),
    /** allow, deny, or comma-separated names (`*.suffix` for subdomains). */
    egress: z.string().min(1).max(4096).optional(),
    /**
     * A snapshot to start from instead of booting: its image, VMM, vCPUs and
     * memory are the snapshot's (a different value given here is
     * SNAPSHOT_MISMATCH); the disk may only grow.
     */
    from: z.string().min(1).optional(),
  })
  .strict();
export type CreateVmParams = z.infer<typeof CreateVmParams>;

export const OperationInfo = z.object({
  id: z.string(),
  kind: z.string(),
  state: z.enum(["running", "succeeded", "failed", "cancelled"]),
  step: ProgressStep,
  message: z.string(),
  vmName: z.string().nullable(),
  error: z.object({ code: z.string(), message: z.string(), hint: z.string().optional() }).nullable(),
  startedAt: z.string(),
  finishedAt: z.string().nullable(),
});
export type OperationInfo = z.infer<typeof OperationInfo>;

/** One listening socket of a guest (`vm.ports`). */
const GuestSocket = z.object({
  protocol: z.enum(["tcp", "udp", "tcp6", "udp6"]),
  address: z.string(),
  port: z.number(),
  process: z.string().nullable(),
  pid: z.number().nullable(),
});

/** `vm.stats`: host-side usage of a VM and, when its guest answers, the guest's own view. */
export const VmStats = z.object({
  name: z.string(),
  state: VmState,
  sampledAt: z.string(),
  /** The VMM process; null when it is not running (see vmmUnavailable). */
  vmm: z
    .object({
      pid: z.number(),
      /** CPU time over the sample interval; 100 = one core busy throughout. */
      cpuPercent: z.number().nullable(),
      sampleMs: z.number(),
      rssBytes: z.number(),
    })
    .nullable(),
  vmmUnavailable: z.string().nullable(),
  /** The root disk file on the host; reported for stopped VMs too. */
  disk: z.object({ path: z.string(), allocatedBytes: z.number(), apparentBytes: z.number() }).nullable(),
  diskUnavailable: z.string().nullable(),
  /** From inside the guest over SSH; a field is null when the guest did not report it. */
  guest: z
    .object({
      uptimeSeconds: z.number().nullable(),
      memoryTotalBytes: z.number().nullable(),
      memoryAvailableBytes: z.number().nullable(),
      rootfsSizeBytes: z.number().nullable(),
      rootfsUsedBytes: z.number().nullable(),
      rootfsAvailableBytes: z.number().nullable(),
    })
    .nullable(),
  guestUnavailable: z.string().nullable(),
  /** Packets the egress policy dropped since the firewall table was made; absent when not counted. */
  egressDropped: z.number().nullable().optional(),
});
export type VmStats = z.infer<typeof VmStats>;

/** One `vm.health` check: `vmm` (process alive), `agent` (`true` through the guest agent), `ssh-banner`. */
export const HealthCheck = z.object({
  name: z.string(),
  ok: z.boolean(),
  detail: z.string(),
});
export type HealthCheck = z.infer<typeof HealthCheck>;

export const VmHealth = z.object({
  name: z.string(),
  state: VmState,
  healthy: z.boolean(),
  checks: z.array(HealthCheck),
});
export type VmHealth = z.infer<typeof VmHealth>;

/** Every method: its params schema and its result schema. */
export const methods = {
  "daemon.hello": {
    params: z
      .object({ protocol: z.number().int(), build: z.string(), client: z.string().optional() })
      .strict(),
    result: z.object({
      protocol: z.number(),
      build: z.string(),
      pid: z.number(),
      compatible: z.boolean(),
      runningVms: z.number(),
    }),
  },
  "daemon.ping": {
    params: Empty,
    result: z.object({ pong: z.literal(true), time: z.string() }),
  },
  "daemon.status": {
    params: Empty,
    result: z.object({
      pid: z.number(),
      build: z.string(),
      protocol: z.number(),
      node: z.string(),
      startedAt: z.string(),
      uptimeMs: z.number(),
      socket: z.string(),
      stateDir: z.string(),
      netns: z.string().nullable(),
      vms: z.object({ total: z.number(), running: z.number() }),
      operations: z.number(),
    }),
  },
  "daemon.shutdown": {
    params: z.object({ stopVms: z.boolean().optional() }).strict().optional(),
    result: z.object({ stopping: z.literal(true), stoppedVms: z.array(z.string()) }),
  },
  "daemon.doctor": {
    params: Empty,
    result: z.object({ checks: z.array(DoctorCheck) }),
  },
  "vm.create": {
    params: CreateVmParams,
    result: VmInfo,
  },
  "vm.create.begin": {
    params: CreateVmParams,
    result: z.object({ operation: OperationInfo }),
  },
  "vm.create.status": {
    params: z
      .object({ operationId: z.string(), waitMs: z.number().int().min(0).max(60000).optional() })
      .strict(),
    result: z.object({ operation: OperationInfo, vm: VmInfo.nullable() }),
  },
  "vm.create.cancel": {
    params: z.object({ operationId: z.string() }).strict(),
    result: z.object({ operation: OperationInfo }),
  },
  "vm.list": {
    params: Empty,
    result: z.object({ vms: z.array(VmInfo) }),
  },
  "vm.show": { params: ByName, result: VmInfo },
  "vm.start": { params: ByName, result: VmInfo },
  "vm.stop": { params: ByName, result: VmInfo },
  "vm.restart": { params: ByName, result: VmInfo },
  "vm.kill": { params: ByName, result: VmInfo },
  "vm.pause": { params: ByName, result: VmInfo },
  "vm.resume": { params: ByName, result: VmInfo },
  "vm.suspend": { params: ByName, result: VmInfo },
  /**
   * Without `force` a delete is refused while the VM's workspace holds
   * unexported work, and then while the VM is running or paused; with it
   * the VM is killed first and the work is lost.
   */
  "vm.delete": {
    params: z.object({ name: z.string().min(1), force: z.boolean().optional() }).strict(),
    result: z.object({ name: z.string(), deleted: z.literal(true) }),
  },
  "vm.set": {
    params: z
      .object({
        name: z.string(),
        cpus: Cpus.optional(),
        memoryMib: MemoryMib.optional(),
        diskGib: DiskGib.optional(),
      })
      .strict(),
    result: VmInfo,
  },
  /**
   * Runs an argv in the guest through its agent (no shell unless the argv is one).
   * The VM image's run defaults apply as docker's do: an empty argv runs
   * ENTRYPOINT then CMD; with `entrypoint` (docker run) the argv replaces CMD
   * after ENTRYPOINT; the image's ENV comes before `env`; WORKDIR and USER
   * apply when `cwd` and `user` are not given.
   * Bytes travel on `$/stream` (with a tty, output arrives on stdout only);
   * `$/signal` and `$/resize` reach the process group and its PTY; `$/cancel`
   * or a closed connection kill the group. `detach` returns at once.
   */
  "vm.exec": {
    params: z
      .object({
        name: z.string().min(1),
        argv: z.array(z.string()),
        entrypoint: z.boolean().optional(),
        env: z.array(z.string().regex(/^[^=]+=/, "must be KEY=VALUE")).optional(),
        cwd: z.string().min(1).optional(),
        user: z.string().min(1).optional(),
        stdin: z.boolean().optional(),
        tty: z
          .object({ cols: z.number().int().min(0).max(65535), rows: z.number().int().min(0).max(65535) })
          .optional(),
        timeoutMs: z.number().int().positive().optional(),
        detach: z.boolean().optional(),
      })
      .strict(),
    result: z.object({
      exitCode: z.number().nullable(),
      signal: z.string().nullable(),
      timedOut: z.boolean().optional(),
    }),
  },
  "vm.proxy": {
    params: z.object({ name: z.string().min(1), port: z.number().int().min(1).max(65535) }).strict(),
    result: z.object({ closed: z.literal(true) }),
  },
  "vm.logs": {
    params: z
      .object({
        name: z.string().min(1),
        follow: z.boolean().optional(),
        tailBytes: z.number().int().min(0).optional(),
      })
      .strict(),
    result: z.object({ bytes: z.number() }),
  },
  "vm.ssh-config": {
    params: ByName,
    result: z.object({
      user: z.string(),
      host: z.string(),
      identityFile: z.string(),
      knownHostsFile: z.string(),
    }),
  },
  "vm.stats": { params: ByName, result: VmStats },
  "vm.ports": { params: ByName, result: z.object({ name: z.string(), sockets: z.array(GuestSocket) }) },
  "vm.egress": {
    params: z.object({ name: z.string().min(1), egress: z.string().min(1).max(4096) }).strict(),
    result: VmInfo,
  },
  "vm.health": { params: ByName, result: VmHealth },
  "image.list": {
    params: Empty,
    result: z.object({ images: z.array(ImageInfo) }),
  },
  "image.show": { params: ByName, result: ImageInfo },
  "image.build-default": {
    params: z.object({ force: z.boolean().optional() }).strict().optional(),
    result: ImageInfo,
  },
  "image.delete": {
    params: z.object({ name: z.string().min(1), force: z.boolean().optional() }).strict(),
    result: z.object({
      name: z.string(),
      deleted: z.literal(true),
      vmsDeleted: z.array(z.string()).optional(),
    }),
  },
  "image.pull": {
    params: z
      .object({
        reference: z.string().min(1).max(1024),
        name: z.string().min(1).max(255).optional(),
        platform: PlatformText.optional(),
        insecureRegistries: z.array(RegistryHost).max(16).optional(),
      })
      .strict(),
    result: ImageInfo,
  },
  "image.import": {
    params: z
      .object({
        path: z.string().min(1).max(4096),
        name: z.string().min(1).max(255).optional(),
        tag: z.string().min(1).max(128).optional(),
        platform: PlatformText.optional(),
      })
      .strict(),
    result: ImageInfo,
  },
  "image.build": {
    params: z
      .object({
        name: z.string().min(1).max(255),
        context: z.string().min(1).max(4096),
        dockerfile: z.string().min(1).max(4096).optional(),
        buildArgs: z
          .array(z.string().regex(/^[A-Za-z_][A-Za-z0-9_]*=/s, { message: "must be KEY=VALUE" }))
          .max(256)
          .optional(),
      })
      .strict(),
    result: ImageInfo,
  },
  "image.promote": {
    params: z.object({ vm: z.string().min(1), name: z.string().min(1).max(255) }).strict(),
    result: ImageInfo,
  },
  "image.register": {
    params: z
      .object({
        name: z.string().min(1).max(255),
        rootfs: z.string().min(1).max(4096),
        kernel: z.string().min(1).max(4096),
        initrd: z.string().min(1).max(4096).optional(),
      })
      .strict(),
    result: ImageInfo,
  },
  "image.catalog": {
    params: Empty,
    result: z.object({
      entries: z.array(
        z.object({
          name: z.string(),
          kind: z.string(),
          description: z.string(),
          /** The daemon's vm.default_image. */
          default: z.boolean(),
          present: z.boolean(),
        }),
      ),
    }),
  },
  "image.prune": {
    params: z.object({ all: z.boolean().optional() }).strict().optional(),
    result: z.object({ images: z.array(z.string()), blobs: z.number(), bytes: z.number() }),
  },
  "image.login": {
    params: z
      .object({
        registry: RegistryHost,
        username: z.string().min(1).max(1024),
        password: z.string().min(1).max(65536),
      })
      .strict(),
    result: z.object({ registry: z.string() }),
  },
  "image.logout": {
    params: z.object({ registry: RegistryHost }).strict(),
    result: z.object({ registry: z.string(), removed: z.boolean() }),
  },
  "vm.fork": {
    params: VmForkParams,
    result: z.object({ snapshot: SnapshotInfo, vms: z.array(VmInfo) }),
  },
  ...snapshotMethods,
  ...poolMethods,
  ...workspaceMethods,
} as const;

export type MethodTable = typeof methods;
export type MethodName = keyof MethodTable;
export type ParamsOf<M extends MethodName> = z.input<MethodTable[M]["params"]>;
export type ResultOf<M extends MethodName> = z.infer<MethodTable[M]["result"]>;
