/**
 * A faithful local stand-in for the Firecracker v1.16.1 binary (see
 * reference/firecracker.md §6). It takes Firecracker's flags, serves the API
 * on the Unix socket with Firecracker's routing, body validation (the spec,
 * with Firecracker's recipe, plus the runtime-only rules), state machine and
 * fault messages, and at InstanceStart boots the configured kernel, initrd,
 * drives, tap and boot_args under `qemu-system-x86_64 -M microvm` (TCG). The
 * serial console goes to this process's stdout. It exits when QEMU exits.
 * `PUT /snapshot/create` and `/snapshot/load` go through QEMU's migration
 * (see createSnapshot); relative drive paths resolve against the double's
 * working directory, as Firecracker's do.
 *
 * Fault messages follow Firecracker's sources; serde's "at line L column C"
 * suffix and OS-error details are approximated.
 *
 * Env: FC_DOUBLE_STRICT_LOG=<file> appends one JSON line per request with the
 * request's and the response's validation results. FC_DOUBLE_QEMU overrides
 * the QEMU binary.
 */
import { type ChildProcess, spawn } from "node:child_process";
import { once } from "node:events";
import {
  accessSync,
  appendFileSync,
  closeSync,
  constants,
  createWriteStream,
  existsSync,
  openSync,
  readFileSync,
  rmSync,
  statSync,
  type WriteStream,
  writeFileSync,
} from "node:fs";
import { createServer as createHttpServer, type IncomingMessage, type ServerResponse } from "node:http";
import { connect, createServer as createNetServer, type Server, type Socket } from "node:net";
import { basename, dirname, join } from "node:path";
import { parseArgs } from "node:util";
import { createSpecValidator, type SchemaIssue } from "./spec.ts";

const VERSION = "1.16.1";
const MAX_VCPUS = 32;
const PRE_BOOT = "The requested operation is not supported before starting the microVM.";
const POST_BOOT = "The requested operation is not supported after starting the microVM.";
const ID_PATTERN = /^[A-Za-z0-9_]+$/;
const MAC_PATTERN = /^([0-9a-fA-F]{2}:){5}[0-9a-fA-F]{2}$/;

type Json = Record<string, unknown>;
type State = "Not started" | "Running" | "Paused";

class Fault extends Error {
  readonly status: number;
  constructor(message: string, status = 400) {
    super(message);
    this.status = status;
  }
}

interface Reply {
  status: number;
  body?: unknown;
}

const { values: flags } = parseArgs({
  options: {
    "api-sock": { type: "string", default: "/run/firecracker.socket" },
    id: { type: "string", default: "anonymous-instance" },
    "log-path": { type: "string" },
    level: { type: "string" },
    "metrics-path": { type: "string" },
    "boot-timer": { type: "boolean" },
    "enable-pci": { type: "boolean" },
    version: { type: "boolean" },
  },
  strict: false,
});

if (flags.version) {
  process.stdout.write(`Firecracker v${VERSION}\n\n`);
  process.exit(0);
}

const apiSocket = String(flags["api-sock"]);
const instanceId = String(flags.id);
const logPath = typeof flags["log-path"] === "string" ? flags["log-path"] : undefined;
const strictLog = process.env.FC_DOUBLE_STRICT_LOG;
const validator = createSpecValidator();

function log(level: string, message: string): void {
  if (!logPath) return;
  try {
    appendFileSync(logPath, `${new Date().toISOString()} [${instanceId}:${level}] ${message}\n`);
  } catch {
    // Logging must never take the VMM down.
  }
}

// ---- VM resources, as Firecracker keeps them ----
const vm = {
  state: "Not started" as State,
  machine: {
    vcpu_count: 1,
    mem_size_mib: 128,
    smt: false,
    track_dirty_pages: false,
    huge_pages: "None",
  } as Json,
  bootSource: undefined as Json | undefined,
  drives: new Map<string, Json>(),
  ifaces: new Map<string, Json>(),
  vsock: undefined as Json | undefined,
  vsockServer: undefined as Server | undefined,
  entropy: undefined as Json | undefined,
  logger: undefined as Json | undefined,
  metrics: (typeof flags["metrics-path"] === "string"
    ? { metrics_path: flags["metrics-path"] }
    : undefined) as Json | undefined,
  mmds: {} as unknown,
  mmdsConfig: undefined as Json | undefined,
  balloon: undefined as Json | undefined,
  cpuConfig: undefined as Json | undefined,
  serial: undefined as Json | undefined,
  bootConfigured: false,
  qemu: undefined as ChildProcess | undefined,
  qmp: undefined as Qmp | undefined,
  nextHostPort: 1073741824,
};

// ---- the API server ----
if (existsSync(apiSocket)) {
  log("Error", `Failed to open the API socket at: ${apiSocket}. Check that it is not already used.`);
  process.stderr.write(`Error: RunWithApi(FailedToBindSocket(${JSON.stringify(apiSocket)}))\n`);
  process.exit(1);
}

const server = createHttpServer((req, res) => {
  const chunks: Buffer[] = [];
  req.on("data", (chunk: Buffer) => chunks.push(chunk));
  req.on("end", () => {
    void handle(req, Buffer.concat(chunks)).then((reply) => send(req, res, reply, Buffer.concat(chunks)));
  });
});
server.listen(apiSocket, () => log("Info", "API server started."));
server.on("error", (error) => {
  process.stderr.write(`Error: RunWithApi(FailedToBindAndRunHttpServer(${String(error)}))\n`);
  process.exit(1);
});

function send(req: IncomingMessage, res: ServerResponse, reply: Reply, raw: Buffer): void {
  const method = req.method ?? "GET";
  const path = new URL(req.url ?? "/", "http://localhost").pathname;
  if (strictLog) {
    let body: unknown;
    try {
      body = raw.length > 0 ? JSON.parse(raw.toString("utf8")) : undefined;
    } catch {
      body = raw.toString("utf8");
    }
    const request = raw.length > 0 ? validator.validateRequest(method, path, body) : undefined;
    const response =
      reply.status === 204 ? undefined : validator.validateResponse(method, path, reply.status, reply.body);
    appendFileSync(
      strictLog,
      `${JSON.stringify({
        method,
        path,
        body,
        requestValid: request ? request.valid : method === "GET",
        requestIssues: request?.issues.map(describeIssue) ?? [],
        status: reply.status,
        response: reply.body,
        responseValid: response ? response.valid : true,
        responseIssues: response?.issues.map(describeIssue) ?? [],
      })}\n`,
    );
  }
  if (reply.status === 204) {
    res.writeHead(204);
    res.end();
    return;
  }
  const text = JSON.stringify(reply.body);
  res.writeHead(reply.status, {
    "Content-Type": "application/json",
    "Content-Length": Buffer.byteLength(text),
  });
  res.end(text);
}

async function handle(req: IncomingMessage, raw: Buffer): Promise<Reply> {
  const method = req.method ?? "GET";
  const path = new URL(req.url ?? "/", "http://localhost").pathname;
  try {
    const result = await route(method, path, raw);
    return result === undefined ? { status: 204 } : { status: 200, body: result };
  } catch (error) {
    const fault = error instanceof Fault ? error : new Fault(`Internal VMM error: ${String(error)}`);
    log("Error", `Received Error. Status code: ${fault.status}. Message: ${fault.message}`);
    return { status: fault.status, body: { fault_message: fault.message } };
  }
}

/** Mirrors parsed_request.rs: dispatch on (method, first path token, body present). */
async function route(method: string, path: string, raw: Buffer): Promise<unknown> {
  const tokens = path.replace(/^\/+/, "").split("/");
  if (tokens.at(-1) === "") tokens.pop();
  const [first = "", second] = tokens;
  const hasBody = raw.length > 0;
  const body = () => parseBody(method, path, raw);

  if (method === "GET" && !hasBody) {
    if (first === "") return instanceInfo();
    if (first === "version") return { firecracker_version: VERSION };
    if (first === "vm" && second === "config") return fullConfig();
    if (first === "machine-config") return { ...vm.machine };
    if (first === "mmds") return vm.mmds ?? {};
    if (first === "balloon") return getBalloon(second);
    if (first === "hotplug" && second === "memory") return requireBooted(() => unsupported("memory hotplug"));
  }
  if (method === "GET" && hasBody) throw new Fault("GET request cannot have a body.");
  if (method === "PUT" && hasBody) {
    switch (first) {
      case "actions":
        return action(body());
      case "boot-source":
        return preBoot(body(), putBootSource);
      case "machine-config":
        return preBoot(body(), (config) => putMachineConfig(config, false));
      case "drives":
        return putDrive(checkedId(second), body());
      case "network-interfaces":
        return putIface(checkedId(second), body());
      case "vsock":
        return preBoot(body(), putVsock);
      case "entropy":
        return preBoot(body(), (config) => {
          vm.entropy = config;
          vm.bootConfigured = true;
        });
      case "logger":
        return preBoot(body(), (config) => {
          vm.logger = config;
        });
      case "metrics":
        return preBoot(body(), (config) => {
          if (vm.metrics) throw new Fault("Metrics error: Reinitialization of metrics not allowed.");
          vm.metrics = config;
        });
      case "serial":
        return preBoot(body(), (config) => {
          vm.serial = config;
        });
      case "mmds":
        if (second === "config") return preBoot(body(), putMmdsConfig);
        vm.mmds = body();
        return undefined;
      case "balloon":
        return preBoot(body(), (config) => {
          vm.balloon = config;
          vm.bootConfigured = true;
        });
      case "cpu-config":
        return preBoot(body(), (config) => {
          vm.cpuConfig = config;
          vm.bootConfigured = true;
        });
      case "pmem":
        checkedId(second);
        return preBoot(body(), () => unsupported("pmem devices"));
      case "snapshot":
        return snapshot(second, body());
      case "hotplug":
        if (second === "memory") return preBoot(body(), () => unsupported("memory hotplug"));
    }
  }
  if (method === "PUT" && !hasBody) throw new Fault("Empty PUT request.");
  if (method === "PATCH" && (hasBody || first === "balloon")) {
    switch (first) {
      case "balloon":
        if (hasBody) body();
        return requireBooted(() => unsupported("balloon updates"));
      case "drives":
        return patchDrive(checkedId(second), body());
      case "machine-config":
        return preBoot(body(), (config) => putMachineConfig(config, true));
      case "mmds":
        vm.mmds = mergePatch(vm.mmds, body());
        return undefined;
      case "network-interfaces": {
        const id = checkedId(second);
        const config = body();
        sameId(id, config.iface_id);
        return requireBooted(() => {
          if (!vm.ifaces.has(id)) throw new Fault("Network config error: Device not found");
        });
      }
      case "pmem":
        checkedId(second);
        body();
        return requireBooted(() => unsupported("pmem devices"));
      case "vm":
        return patchVm(body());
      case "hotplug":
        if (second === "memory") {
          body();
          return requireBooted(() => unsupported("memory hotplug"));
        }
    }
  }
  if (method === "PATCH" && !hasBody) throw new Fault("Empty PATCH request.");
  if (method === "DELETE" && !hasBody && ["drives", "pmem", "network-interfaces"].includes(first)) {
    checkedId(second);
    return requireBooted(() => {
      throw new Fault("PCI is not enabled");
    });
  }
  if (method === "DELETE" && hasBody) throw new Fault("Empty Delete request.");
  throw new Fault(`Invalid request method and/or path: ${method} ${first}.`);
}

// ---- body parsing: serde-like messages from spec validation ----
function parseBody(method: string, path: string, raw: Buffer): Json {
  let body: unknown;
  try {
    body = JSON.parse(raw.toString("utf8"));
  } catch (error) {
    throw serde(`${(error as Error).message}`);
  }
  const outcome = validator.validateRequest(method, path, body);
  const issue = outcome.issues.find((candidate) => !runtimeChecked(candidate));
  if (outcome.template && issue) throw serde(serdeMessage(issue, body));
  if (typeof body !== "object" || body === null || Array.isArray(body)) {
    throw serde(`invalid type: ${typeName(body)}, expected a map`);
  }
  return body as Json;
}

/** vcpu_count bounds are checked by the VMM, not by serde, and have their own message. */
function runtimeChecked(issue: SchemaIssue): boolean {
  return issue.instancePath === "/vcpu_count" && (issue.keyword === "minimum" || issue.keyword === "maximum");
}

function serde(detail: string): Fault {
  return new Fault(`An error occurred when deserializing the json body of a request: ${detail}.`);
}

function serdeMessage(issue: SchemaIssue, body: unknown): string {
  const value = pointer(body, issue.instancePath);
  switch (issue.keyword) {
    case "required":
      return `missing field \`${String(issue.params.missingProperty)}\``;
    case "additionalProperties": {
      const known = Object.keys((issue.parentSchema?.properties as Json | undefined) ?? {});
      return `unknown field \`${String(issue.params.additionalProperty)}\`, expected ${oneOf(known)}`;
    }
    case "enum":
      return `unknown variant \`${String(value)}\`, expected ${oneOf((issue.params.allowedValues as string[]) ?? [])}`;
    case "type":
      return `invalid type: ${typeName(value)}, expected ${String(issue.params.type)}`;
    case "minimum":
    case "maximum":
      return `invalid value: ${typeName(value)}, expected ${issue.message.replace(/^must be /, "")}`;
    default:
      return `${issue.instancePath || "body"} ${issue.message}`;
  }
}

function oneOf(names: readonly string[]): string {
  const quoted = names.map((name) => `\`${name}\``);
  if (quoted.length === 2) return `${quoted[0]} or ${quoted[1]}`;
  return `one of ${quoted.join(", ")}`;
}

function typeName(value: unknown): string {
  if (value === null) return "null";
  if (Array.isArray(value)) return "sequence";
  if (typeof value === "object") return "map";
  if (typeof value === "string") return `string ${JSON.stringify(value)}`;
  if (typeof value === "number")
    return Number.isInteger(value) ? `integer \`${value}\`` : `floating point \`${value}\``;
  return `${typeof value} \`${String(value)}\``;
}

function pointer(body: unknown, path: string): unknown {
  let at = body;
  for (const part of path.split("/").slice(1))
    at = (at as Json | undefined)?.[part.replace(/~1/g, "/").replace(/~0/g, "~")];
  return at;
}

function describeIssue(issue: SchemaIssue): string {
  return `${issue.keyword} ${issue.instancePath || "/"}: ${issue.message}`;
}

// ---- state machine ----
function preBoot<T>(config: Json, apply: (config: Json) => T): T {
  if (vm.state !== "Not started") throw new Fault(POST_BOOT);
  return apply(config);
}

function requireBooted<T>(apply: () => T): T {
  if (vm.state === "Not started") throw new Fault(PRE_BOOT);
  return apply();
}

function unsupported(what: string): never {
  throw new Fault(
    `The requested operation is not supported: ${what} (the Firecracker test double does not emulate them)`,
  );
}

function checkedId(id: string | undefined): string {
  if (id === undefined || id === "") throw new Fault("The ID cannot be empty.");
  if (!ID_PATTERN.test(id))
    throw new Fault("API Resource IDs can only contain alphanumeric characters and underscores.");
  return id;
}

function sameId(pathId: string, bodyId: unknown): void {
  if (pathId !== bodyId) throw new Fault("The id from the path does not match the id from the body!");
}

function instanceInfo(): Json {
  return { id: instanceId, state: vm.state, vmm_version: VERSION, app_name: "Firecracker" };
}

function fullConfig(): Json {
  const config: Json = {
    "machine-config": { ...vm.machine },
    drives: [...vm.drives.values()],
    "network-interfaces": [...vm.ifaces.values()],
  };
  if (vm.bootSource) config["boot-source"] = vm.bootSource;
  if (vm.vsock) config.vsock = vm.vsock;
  if (vm.entropy) config.entropy = vm.entropy;
  if (vm.logger) config.logger = vm.logger;
  if (vm.metrics) config.metrics = vm.metrics;
  if (vm.mmdsConfig) config["mmds-config"] = vm.mmdsConfig;
  if (vm.balloon) config.balloon = vm.balloon;
  if (vm.cpuConfig) config["cpu-config"] = vm.cpuConfig;
  return config;
}

function getBalloon(sub: string | undefined): unknown {
  if (sub === "statistics" || sub === "hinting")
    return requireBooted(() => unsupported("balloon statistics"));
  if (!vm.balloon) throw new Fault("Balloon config error: No balloon device found.");
  return vm.balloon;
}

function putBootSource(config: Json): void {
  const kernel = String(config.kernel_image_path);
  if (!readable(kernel)) {
    throw new Fault(
      `Boot source error: The kernel file cannot be opened: No such file or directory (os error 2)`,
    );
  }
  if (config.initrd_path !== undefined && !readable(String(config.initrd_path))) {
    throw new Fault(
      "Boot source error: The initrd file cannot be opened due to invalid path or invalid permissions. No such file or directory (os error 2)",
    );
  }
  vm.bootSource = config;
  vm.bootConfigured = true;
}

function putMachineConfig(config: Json, partial: boolean): void {
  const next: Json = partial
    ? { ...vm.machine, ...config }
    : { smt: false, track_dirty_pages: false, huge_pages: "None", ...config };
  const vcpus = Number(next.vcpu_count);
  if (vcpus < 1 || vcpus > MAX_VCPUS || (next.smt === true && vcpus > 1 && vcpus % 2 === 1)) {
    throw new Fault(
      `Machine config error: The number of vCPUs must be greater than 0, less than ${MAX_VCPUS} and must be 1 or an even number if SMT is enabled.`,
    );
  }
  const memory = Number(next.mem_size_mib);
  if (memory === 0 || (next.huge_pages === "2M" && memory % 2 !== 0)) {
    throw new Fault(
      "Machine config error: The memory size (MiB) is either 0, or not a multiple of the configured page size.",
    );
  }
  vm.machine = next;
  vm.bootConfigured = true;
}

function putDrive(id: string, config: Json): void {
  sameId(id, config.drive_id);
  if (vm.state !== "Not started") throw new Fault("PCI is not enabled");
  if (config.socket === undefined) {
    if (config.path_on_host === undefined || config.is_read_only === undefined) {
      throw new Fault(
        "Drive config error: Unable to create the virtio block device: path_on_host and is_read_only are required for a virtio-blk drive",
      );
    }
    const path = String(config.path_on_host);
    if (!readable(path, config.is_read_only !== true)) {
      throw new Fault(
        `Drive config error: Unable to create the virtio block device: Virtio backend error: Error manipulating the backing file: No such file or directory (os error 2) ${path}`,
      );
    }
  }
  if (config.is_root_device === true) {
    for (const [otherId, other] of vm.drives) {
      if (otherId !== id && other.is_root_device === true) {
        throw new Fault("Drive config error: A root block device already exists!");
      }
    }
  }
  vm.drives.set(id, config);
  vm.bootConfigured = true;
}

function patchDrive(id: string, config: Json): void {
  sameId(id, config.drive_id);
  requireBooted(() => {
    const drive = vm.drives.get(id);
    if (!drive) {
      throw new Fault(
        `Drive config error: Unable to patch the block device: Device not found Please verify the request arguments.`,
      );
    }
    if (config.path_on_host !== undefined) drive.path_on_host = config.path_on_host;
    if (config.rate_limiter !== undefined) drive.rate_limiter = config.rate_limiter;
  });
}

function putIface(id: string, config: Json): void {
  sameId(id, config.iface_id);
  if (vm.state !== "Not started") throw new Fault("PCI is not enabled");
  const mac = config.guest_mac;
  if (mac !== undefined && !MAC_PATTERN.test(String(mac))) {
    throw serde(`invalid value: string ${JSON.stringify(mac)}, expected a MAC address`);
  }
  if (mac !== undefined) {
    for (const [otherId, other] of vm.ifaces) {
      if (otherId !== id && String(other.guest_mac ?? "").toLowerCase() === String(mac).toLowerCase()) {
        throw new Fault(`Network config error: The MAC address is already in use: ${String(mac)}`);
      }
    }
  }
  const tap = String(config.host_dev_name);
  if (!existsSync(join("/sys/class/net", tap))) {
    throw new Fault(
      `Network config error: Cannot open/create the tap device: Open tap device failed: Error while creating ifreq structure: No such device (os error 19). Invalid TUN/TAP Backend provided by ${tap}. Check our documentation on setting up the network devices.`,
    );
  }
  vm.ifaces.set(id, config);
  vm.bootConfigured = true;
}

function putMmdsConfig(config: Json): void {
  for (const iface of (config.network_interfaces as string[]) ?? []) {
    if (!vm.ifaces.has(iface)) {
      throw new Fault(
        "MMMDS config error: The list of network interface IDs provided contains at least one ID that does not correspond to any existing network interface.",
      );
    }
  }
  vm.mmdsConfig = config;
  vm.bootConfigured = true;
}

async function putVsock(config: Json): Promise<void> {
  const udsPath = String(config.uds_path);
  if (vm.vsockServer) {
    const previous = vm.vsockServer;
    vm.vsockServer = undefined;
    await new Promise<void>((resolve) => previous.close(() => resolve()));
    rmSync(String(vm.vsock?.uds_path), { force: true });
  }
  const listener = createNetServer((socket) => serveVsock(socket));
  await new Promise<void>((resolve, reject) => {
    listener.once("error", (error: NodeJS.ErrnoException) =>
      reject(
        new Fault(
          `Vsock config error: Cannot create backend for vsock device: Error binding to the host-side Unix socket: ${error.code === "EADDRINUSE" ? "Address in use (os error 98)" : error.message}`,
        ),
      ),
    );
    listener.listen(udsPath, () => resolve());
  });
  vm.vsockServer = listener;
  vm.vsock = config;
  vm.bootConfigured = true;
}

/**
 * Host-initiated hybrid vsock: `CONNECT <port>\n` → `OK <host port>\n` while
 * the guest runs. QEMU under TCG has no vsock, so the double maps it onto
 * what QEMU can give: a virtio-serial port named `banger.0` on a Unix-socket
 * chardev (vsockSerialPath), which banger's guest agent serves when it finds
 * one. A CONNECT to any port reaches that one stream; when QEMU refuses (the
 * guest is not up) the connection is closed, as Firecracker does when nothing
 * listens in the guest.
 */
function serveVsock(socket: Socket): void {
  let buffered = Buffer.alloc(0);
  socket.on("error", () => {});
  const onData = (chunk: Buffer) => {
    buffered = Buffer.concat([buffered, chunk]);
    const newline = buffered.indexOf(0x0a);
    if (newline < 0) return;
    socket.off("data", onData);
    socket.pause();
    const match = /^CONNECT (\d+)$/.exec(buffered.subarray(0, newline).toString("latin1"));
    if (!match || vm.state === "Not started") {
      socket.destroy();
      return;
    }
    const rest = buffered.subarray(newline + 1);
    const guest = connect(vsockSerialPath());
    guest.once("error", () => socket.destroy());
    guest.once("connect", () => {
      socket.write(`OK ${vm.nextHostPort++}\n`);
      if (rest.length > 0) guest.write(rest);
      socket.pipe(guest);
      guest.pipe(socket);
      socket.resume();
      socket.once("close", () => guest.destroy());
      guest.once("close", () => socket.destroy());
    });
  };
  socket.on("data", onData);
}

/** The QEMU chardev socket that stands in for the guest's vsock (next to the API socket). */
function vsockSerialPath(): string {
  return join(dirname(apiSocket), `${basename(apiSocket)}.vsock`);
}

async function action(config: Json): Promise<void> {
  switch (config.action_type) {
    case "InstanceStart":
      if (vm.state !== "Not started") throw new Fault(POST_BOOT);
      await instanceStart();
      return;
    case "SendCtrlAltDel":
      await requireBooted(() => qmp().command("system_powerdown"));
      return;
    case "FlushMetrics":
      requireBooted(() => {
        if (vm.metrics)
          appendFileSync(
            String(vm.metrics.metrics_path),
            `${JSON.stringify({ utc_timestamp_ms: Date.now() })}\n`,
          );
      });
      return;
  }
}

async function patchVm(config: Json): Promise<void> {
  if (vm.state === "Not started") throw new Fault(PRE_BOOT);
  if (config.state === "Paused") {
    await qmp().command("stop");
    vm.state = "Paused";
  } else {
    await qmp().command("cont");
    vm.state = "Running";
  }
}

async function snapshot(kind: string | undefined, config: Json): Promise<void> {
  if (kind === "create") {
    if (vm.state === "Not started") throw new Fault(PRE_BOOT);
    if (vm.state !== "Paused") {
      throw new Fault("Create snapshot error: Cannot save the microVM state: The microVM must be paused.");
    }
    if (config.snapshot_type === "Diff" && vm.machine.track_dirty_pages !== true) {
      throw new Fault(
        "Create snapshot error: Diff snapshots are not allowed on uVMs with dirty page tracking disabled.",
      );
    }
    await createSnapshot(String(config.snapshot_path), String(config.mem_file_path));
    return;
  }
  if (kind === "load") {
    if (vm.state !== "Not started") throw new Fault(POST_BOOT);
    if (vm.bootConfigured) {
      throw new Fault(
        "Load snapshot error: Loading a microVM snapshot not allowed after configuring boot-specific resources.",
      );
    }
    const both = config.mem_backend !== undefined && config.mem_file_path !== undefined;
    const neither = config.mem_backend === undefined && config.mem_file_path === undefined;
    if (both)
      throw serde("too many fields: either `mem_backend` or `mem_file_path` exclusively is required.");
    if (neither) throw serde("missing field: either `mem_backend` or `mem_file_path` is required");
    await loadSnapshot(config);
    return;
  }
  throw new Fault(`Invalid request method and/or path: PUT snapshot.`);
}

/**
 * The double's snapshot: `snapshot_path` holds its own VM description as
 * JSON (Firecracker's vmstate is a binary of the same role), and
 * `mem_file_path` QEMU's migration stream of the paused guest (memory and
 * device state), written through a Unix socket since QEMU 7.2 has no
 * `file:` migration.
 */
async function createSnapshot(snapshotPath: string, memPath: string): Promise<void> {
  const socketPath = join(dirname(apiSocket), `${basename(apiSocket)}.mig`);
  rmSync(socketPath, { force: true });
  let output: WriteStream;
  try {
    output = createWriteStream(memPath, { flags: "w", mode: 0o600 });
    await once(output, "open");
  } catch (error) {
    throw new Fault(
      `Create snapshot error: Cannot save the microVM state: Failed to open memory file: ${errnoText(error)}`,
    );
  }
  const received = new Promise<void>((resolve, reject) => {
    const listener = createNetServer((socket) => {
      listener.close();
      socket.pipe(output);
      output.once("finish", () => resolve());
      socket.once("error", reject);
    });
    listener.once("error", reject);
    listener.listen(socketPath);
  });
  try {
    await qmp().command("migrate-set-parameters", { "max-bandwidth": 64 * 1024 ** 3 });
    await qmp().command("migrate", { uri: `unix:${socketPath}` });
    for (;;) {
      const status = (await qmp().command("query-migrate")) as Json;
      if (status.status === "completed") break;
      if (status.status === "failed" || status.status === "cancelled") {
        throw new Fault(
          `Create snapshot error: Cannot save the microVM state: ${String(status["error-desc"] ?? status.status)}`,
        );
      }
      await new Promise((resolve) => setTimeout(resolve, 10));
    }
    await received;
  } finally {
    output.destroy();
    rmSync(socketPath, { force: true });
  }
  const state = {
    firecracker_version: VERSION,
    machine: vm.machine,
    bootSource: vm.bootSource,
    drives: [...vm.drives.values()],
    ifaces: [...vm.ifaces.values()],
    vsock: vm.vsock,
    entropy: vm.entropy,
  };
  try {
    writeFileSync(snapshotPath, JSON.stringify(state), { mode: 0o600 });
  } catch (error) {
    throw new Fault(`Create snapshot error: Cannot save the microVM state: ${errnoText(error)}`);
  }
  log("Info", `Snapshot created at ${snapshotPath}`);
}

async function loadSnapshot(config: Json): Promise<void> {
  const snapshotPath = String(config.snapshot_path);
  const backend = config.mem_backend as Json | undefined;
  if (backend !== undefined && backend.backend_type !== "File") {
    unsupported("memory backends other than File");
  }
  const memPath = String(backend?.backend_path ?? config.mem_file_path);
  let state: Json;
  try {
    state = JSON.parse(readFileSync(snapshotPath, "utf8")) as Json;
  } catch (error) {
    // Firecracker exits after a failed load; so does the double, once it has answered.
    exitSoon();
    throw new Fault(
      `Load snapshot error: Cannot build a microVM from snapshot: Failed to load snapshot state from file: ${errnoText(error)}`,
    );
  }
  if (state.firecracker_version !== VERSION) {
    exitSoon();
    throw new Fault(
      `Load snapshot error: Cannot build a microVM from snapshot: Invalid snapshot version: ${String(state.firecracker_version)}`,
    );
  }
  vm.machine = state.machine as Json;
  vm.bootSource = state.bootSource as Json;
  for (const drive of state.drives as Json[]) vm.drives.set(String(drive.drive_id), drive);
  for (const iface of state.ifaces as Json[]) vm.ifaces.set(String(iface.iface_id), { ...iface });
  for (const override of (config.network_overrides as Json[] | undefined) ?? []) {
    const iface = vm.ifaces.get(String(override.iface_id));
    if (!iface) {
      exitSoon();
      throw new Fault(
        `Load snapshot error: Cannot build a microVM from snapshot: Invalid network configuration: network override for unknown interface ${String(override.iface_id)}`,
      );
    }
    iface.host_dev_name = override.host_dev_name;
  }
  vm.entropy = state.entropy as Json | undefined;
  const vsock = state.vsock as Json | undefined;
  if (vsock) {
    const override = config.vsock_override as Json | undefined;
    await putVsock({ ...vsock, ...(override ? { uds_path: override.uds_path } : {}) });
  }
  let memory: number;
  try {
    memory = openSync(memPath, "r");
  } catch (error) {
    exitSoon();
    throw new Fault(
      `Load snapshot error: Cannot build a microVM from snapshot: Failed to restore from the memory file: ${errnoText(error)}`,
    );
  }
  try {
    await launchQemu(["-incoming", "fd:3"], memory);
  } finally {
    closeSync(memory);
  }
  for (;;) {
    const status = (await qmp().command("query-status")) as Json;
    if (status.status !== "inmigrate") break;
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
  vm.state = "Paused";
  if (config.resume_vm === true) {
    await qmp().command("cont");
    vm.state = "Running";
  }
  log("Info", `Snapshot loaded from ${snapshotPath}`);
}

function exitSoon(): void {
  setTimeout(() => shutdown(1), 100);
}

function errnoText(error: unknown): string {
  const code = (error as NodeJS.ErrnoException).code;
  return code === "ENOENT" ? "No such file or directory (os error 2)" : String((error as Error).message);
}

function mergePatch(target: unknown, patch: unknown): unknown {
  if (typeof patch !== "object" || patch === null || Array.isArray(patch)) return patch;
  const base =
    typeof target === "object" && target !== null && !Array.isArray(target) ? { ...(target as Json) } : {};
  for (const [name, value] of Object.entries(patch as Json)) {
    if (value === null) delete base[name];
    else base[name] = mergePatch(base[name], value);
  }
  return base;
}

function readable(path: string, writable = false): boolean {
  try {
    accessSync(path, writable ? constants.R_OK | constants.W_OK : constants.R_OK);
    return statSync(path).isFile() || statSync(path).isBlockDevice();
  } catch {
    return false;
  }
}

// ---- the guest, under QEMU ----
function qemuArgv(qmpPath: string): string[] {
  const boot = vm.bootSource!;
  const argv = [
    "-M",
    "microvm",
    "-accel",
    "tcg,tb-size=64",
    "-cpu",
    "max",
    "-m",
    `${Number(vm.machine.mem_size_mib)}M`,
    "-smp",
    String(vm.machine.vcpu_count),
    "-nodefaults",
    "-no-user-config",
    "-display",
    "none",
    "-no-reboot",
    "-chardev",
    "file,id=console,path=/proc/self/fd/1,append=on",
    "-serial",
    "chardev:console",
    "-qmp",
    `unix:${qmpPath},server=on,wait=off`,
    "-kernel",
    String(boot.kernel_image_path),
  ];
  if (boot.initrd_path !== undefined) argv.push("-initrd", String(boot.initrd_path));
  // Firecracker appends the root= argument for the root drive and pci=off.
  const extra: string[] = [];
  const drives = [...vm.drives.values()].sort((a, b) => Number(b.is_root_device) - Number(a.is_root_device));
  const root = drives.find((drive) => drive.is_root_device === true);
  if (root) {
    extra.push(root.partuuid ? `root=PARTUUID=${String(root.partuuid)}` : "root=/dev/vda");
    extra.push(root.is_read_only ? "ro" : "rw");
  }
  extra.push("pci=off");
  const cmdline =
    boot.boot_args === undefined
      ? "reboot=k panic=1 nomodule 8250.nr_uarts=0 i8042.noaux i8042.nomux i8042.dumbkbd swiotlb=noforce"
      : String(boot.boot_args);
  argv.push("-append", [cmdline, ...extra].join(" "));
  for (const drive of drives) {
    const id = String(drive.drive_id);
    argv.push(
      "-drive",
      `id=${id},file=${String(drive.path_on_host)},format=raw,if=none${drive.is_read_only ? ",readonly=on" : ""}`,
      "-device",
      `virtio-blk-device,drive=${id}`,
    );
  }
  for (const iface of vm.ifaces.values()) {
    const id = String(iface.iface_id);
    argv.push(
      "-netdev",
      `tap,id=${id},ifname=${String(iface.host_dev_name)},script=no,downscript=no`,
      "-device",
      `virtio-net-device,netdev=${id}${iface.guest_mac ? `,mac=${String(iface.guest_mac)}` : ""}`,
    );
  }
  if (vm.entropy) {
    argv.push("-object", "rng-random,id=rng0,filename=/dev/urandom", "-device", "virtio-rng-device,rng=rng0");
  }
  if (vm.vsock) {
    argv.push(
      "-chardev",
      `socket,id=vsock0,path=${vsockSerialPath()},server=on,wait=off`,
      "-device",
      "virtio-serial-device",
      "-device",
      "virtserialport,chardev=vsock0,name=banger.0",
    );
  }
  return argv;
}

async function instanceStart(): Promise<void> {
  if (!vm.bootSource)
    throw new Fault("Start microvm error: Cannot start microvm without kernel configuration.");
  await launchQemu([]);
  vm.state = "Running";
  log("Info", "Successfully started microvm that was configured from one single json");
}

/** Spawns QEMU for the configured VM (plus `extra` arguments, and `incoming` as its fd 3) and connects QMP. */
async function launchQemu(extra: readonly string[], incoming?: number): Promise<void> {
  const qmpPath = join(dirname(apiSocket), `${basename(apiSocket)}.qmp`);
  rmSync(qmpPath, { force: true });
  const qemuBinary = process.env.FC_DOUBLE_QEMU ?? "qemu-system-x86_64";
  // setpriv --pdeathsig: QEMU dies with this process even on SIGKILL.
  const child = spawn("setpriv", ["--pdeathsig", "KILL", "--", qemuBinary, ...qemuArgv(qmpPath), ...extra], {
    stdio: ["ignore", "inherit", "inherit", ...(incoming === undefined ? [] : [incoming])],
  });
  vm.qemu = child;
  let exited = false;
  child.on("exit", (code, signal) => {
    exited = true;
    log("Info", `QEMU exited (code ${code}, signal ${signal}); Firecracker exits with it.`);
    rmSync(qmpPath, { force: true });
    rmSync(vsockSerialPath(), { force: true });
    shutdown(code === 0 ? 0 : 1);
  });
  const deadline = Date.now() + 30_000;
  for (;;) {
    if (exited) throw new Fault("Start microvm error: the guest VMM (QEMU) exited during boot");
    try {
      vm.qmp = await Qmp.open(qmpPath);
      break;
    } catch {
      if (Date.now() > deadline) throw new Fault("Start microvm error: QEMU's QMP socket did not answer");
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
  }
}

function qmp(): Qmp {
  if (!vm.qmp) throw new Fault("Internal VMM error: no QMP connection");
  return vm.qmp;
}

/** Minimal QMP client: one command at a time, replies are the first non-event line. */
class Qmp {
  readonly #socket: Socket;
  #buffer = "";
  #waiters: ((line: Json) => void)[] = [];

  private constructor(socket: Socket) {
    this.#socket = socket;
    socket.on("data", (chunk: Buffer) => {
      this.#buffer += chunk.toString("utf8");
      for (let newline = this.#buffer.indexOf("\n"); newline >= 0; newline = this.#buffer.indexOf("\n")) {
        const line = this.#buffer.slice(0, newline).trim();
        this.#buffer = this.#buffer.slice(newline + 1);
        if (!line) continue;
        const message = JSON.parse(line) as Json;
        if ("event" in message) continue;
        this.#waiters.shift()?.(message);
      }
    });
    socket.on("error", () => {});
  }

  static async open(path: string): Promise<Qmp> {
    const socket = await new Promise<Socket>((resolve, reject) => {
      const candidate = connect(path, () => resolve(candidate));
      candidate.once("error", reject);
    });
    const client = new Qmp(socket);
    await client.#next(); // greeting
    await client.command("qmp_capabilities");
    return client;
  }

  #next(): Promise<Json> {
    return new Promise((resolve) => this.#waiters.push(resolve));
  }

  async command(execute: string, args?: Json): Promise<unknown> {
    const reply = this.#next();
    this.#socket.write(
      `${JSON.stringify(args === undefined ? { execute } : { execute, arguments: args })}\n`,
    );
    const message = await reply;
    if ("error" in message)
      throw new Fault(`Internal VMM error: QMP ${execute}: ${JSON.stringify(message.error)}`);
    return message.return;
  }
}

function shutdown(code: number): never {
  // Like Firecracker, the API socket is left behind; whoever spawned us removes it.
  if (vm.qemu && vm.qemu.exitCode === null) vm.qemu.kill("SIGKILL");
  process.exit(code);
}

process.on("SIGTERM", () => shutdown(143));
process.on("SIGINT", () => shutdown(130));
