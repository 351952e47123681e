/**
 * Stable error codes at the RPC boundary. A code is never renamed or reused:
 * users and scripts search for them, and the CLI maps each to an exit status
 * and a hint.
 */
export const ErrorCode = {
  INVALID_PARAMS: "INVALID_PARAMS",
  METHOD_NOT_FOUND: "METHOD_NOT_FOUND",
  PARSE_ERROR: "PARSE_ERROR",
  HANDSHAKE_REQUIRED: "HANDSHAKE_REQUIRED",
  VERSION_MISMATCH: "VERSION_MISMATCH",
  VM_NOT_FOUND: "VM_NOT_FOUND",
  NAME_TAKEN: "NAME_TAKEN",
  BAD_STATE: "BAD_STATE",
  IMAGE_NOT_FOUND: "IMAGE_NOT_FOUND",
  IMAGE_BUILD_FAILED: "IMAGE_BUILD_FAILED",
  IMAGE_PULL_FAILED: "IMAGE_PULL_FAILED",
  IMAGE_INVALID: "IMAGE_INVALID",
  REGISTRY_UNAUTHORIZED: "REGISTRY_UNAUTHORIZED",
  OPERATION_NOT_FOUND: "OPERATION_NOT_FOUND",
  BOOT_FAILED: "BOOT_FAILED",
  GUEST_UNREACHABLE: "GUEST_UNREACHABLE",
  VM_STOPPED: "VM_STOPPED",
  NETWORK_FAILED: "NETWORK_FAILED",
  TOOL_MISSING: "TOOL_MISSING",
  PERMISSION_DENIED: "PERMISSION_DENIED",
  CONFIG_INVALID: "CONFIG_INVALID",
  CANCELLED: "CANCELLED",
  DAEMON_UNAVAILABLE: "DAEMON_UNAVAILABLE",
  RUNTIME_TOO_OLD: "RUNTIME_TOO_OLD",
  /** A request exceeds a fixed limit (argument bytes, frame size). */
  LIMIT_EXCEEDED: "LIMIT_EXCEEDED",
  /** The daemon is out of a shared resource (file descriptors, processes, connections) for now. */
  RESOURCE_EXHAUSTED: "RESOURCE_EXHAUSTED",
  /** Another daemon holds this home's lock. */
  DAEMON_RUNNING: "DAEMON_RUNNING",
  /** The state database is damaged or from a newer banger. */
  STORE_INVALID: "STORE_INVALID",
  WORKSPACE_NOT_FOUND: "WORKSPACE_NOT_FOUND",
  WORKSPACE_FAILED: "WORKSPACE_FAILED",
  UNEXPORTED_WORK: "UNEXPORTED_WORK",
  BRANCH_DIVERGED: "BRANCH_DIVERGED",
  SNAPSHOT_NOT_FOUND: "SNAPSHOT_NOT_FOUND",
  /** A snapshot cannot restore into what was asked (driver, machine shape, kernel, VMM version). */
  SNAPSHOT_MISMATCH: "SNAPSHOT_MISMATCH",
  /** The VM holds synced credentials and the snapshot was not told `--include-secrets`. */
  SNAPSHOT_SECRETS: "SNAPSHOT_SECRETS",
  INTERNAL: "INTERNAL",
} as const;

export type ErrorCode = (typeof ErrorCode)[keyof typeof ErrorCode];

const knownCodes = new Set<string>(Object.values(ErrorCode));

export function isErrorCode(value: unknown): value is ErrorCode {
  return typeof value === "string" && knownCodes.has(value);
}

/** Process exit status the CLI uses for each code (1 is "generic failure"). */
export const exitStatusFor: Record<ErrorCode, number> = {
  INVALID_PARAMS: 2,
  METHOD_NOT_FOUND: 2,
  PARSE_ERROR: 2,
  HANDSHAKE_REQUIRED: 2,
  VERSION_MISMATCH: 3,
  VM_NOT_FOUND: 4,
  NAME_TAKEN: 5,
  BAD_STATE: 6,
  IMAGE_NOT_FOUND: 4,
  IMAGE_BUILD_FAILED: 7,
  IMAGE_PULL_FAILED: 7,
  IMAGE_INVALID: 7,
  REGISTRY_UNAUTHORIZED: 9,
  OPERATION_NOT_FOUND: 4,
  BOOT_FAILED: 7,
  GUEST_UNREACHABLE: 7,
  VM_STOPPED: 6,
  NETWORK_FAILED: 7,
  TOOL_MISSING: 8,
  PERMISSION_DENIED: 9,
  CONFIG_INVALID: 2,
  CANCELLED: 130,
  DAEMON_UNAVAILABLE: 10,
  RUNTIME_TOO_OLD: 11,
  LIMIT_EXCEEDED: 2,
  RESOURCE_EXHAUSTED: 12,
  DAEMON_RUNNING: 13,
  STORE_INVALID: 14,
  WORKSPACE_NOT_FOUND: 4,
  WORKSPACE_FAILED: 7,
  UNEXPORTED_WORK: 6,
  BRANCH_DIVERGED: 6,
  SNAPSHOT_NOT_FOUND: 4,
  SNAPSHOT_MISMATCH: 6,
  SNAPSHOT_SECRETS: 6,
  INTERNAL: 1,
};

/** Default hint shown when an error carries none of its own. */
const defaultHint: Partial<Record<ErrorCode, string>> = {
  VM_NOT_FOUND: "run `banger vm list` to see the VMs that exist",
  NAME_TAKEN: "pick another name, or delete the existing VM with `banger vm delete NAME`",
  BAD_STATE: "run `banger vm show NAME` to see its state",
  VM_STOPPED: "the VM was stopped while the command ran; start it with `banger vm start NAME`",
  TOOL_MISSING: "run `banger doctor` to see what is missing and how to install it",
  PERMISSION_DENIED: "run banger as root, or run `banger doctor` for the rights it needs",
  VERSION_MISMATCH: "stop the old daemon with `banger daemon stop` and try again",
  DAEMON_UNAVAILABLE: "start it with `banger daemon start`, or read `banger daemon logs`",
  IMAGE_PULL_FAILED:
    "check the reference and that the registry is reachable; `--insecure-registry HOST` for plain HTTP",
  IMAGE_INVALID: "the image's content failed banger's checks; nothing was published",
  REGISTRY_UNAUTHORIZED:
    "log in with `banger image login REGISTRY`, or check the credentials in ~/.docker/config.json",
  INTERNAL: "this is a bug in banger; `banger daemon logs` has the details",
  CONFIG_INVALID: "fix the named key in the config file, or remove it to use the default",
  CANCELLED: "the operation was cancelled and its partial work undone",
  LIMIT_EXCEEDED: "make the request smaller (for big inputs, pipe them through stdin)",
  RESOURCE_EXHAUSTED:
    "close idle banger clients and retry; `banger daemon logs` names the resource (raise `ulimit -n` if it is file descriptors)",
  WORKSPACE_NOT_FOUND: "prepare one with `banger vm workspace prepare NAME --repo PATH`",
  WORKSPACE_FAILED:
    "the message shows the guest's own error; `banger vm exec NAME -- git -C PATH status` looks closer",
  UNEXPORTED_WORK: "export it first with `banger vm workspace export NAME`, or pass --force to delete anyway",
  SNAPSHOT_NOT_FOUND: "run `banger snapshot ls` to see the snapshots that exist",
  SNAPSHOT_MISMATCH:
    "omit --vmm, --cpus, --memory and --image with --from (a clone takes the snapshot's), or take a new snapshot",
  SNAPSHOT_SECRETS:
    "its memory and disk may hold the synced credentials; pass --include-secrets to snapshot it anyway",
  BRANCH_DIVERGED: "merge or rename the host branch, or pass --force to move it to the VM's commits",
};

export interface BangerErrorOptions {
  hint?: string | undefined;
  cause?: unknown;
  data?: Record<string, unknown> | undefined;
}

/**
 * A failure a user can reach and act on. Anything that is not a BangerError
 * reaches the user as INTERNAL.
 */
export class BangerError extends Error {
  readonly code: ErrorCode;
  readonly hint: string | undefined;
  readonly data: Record<string, unknown> | undefined;

  constructor(code: ErrorCode, message: string, options: BangerErrorOptions = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = "BangerError";
    this.code = code;
    this.hint = options.hint ?? defaultHint[code];
    this.data = options.data;
  }
}

export function isBangerError(value: unknown): value is BangerError {
  return value instanceof BangerError;
}

/** True for the CANCELLED error that an aborted operation rejects with. */
export function isCancelled(error: unknown): error is BangerError {
  return error instanceof BangerError && error.code === ErrorCode.CANCELLED;
}

/** The payload an error travels in, inside a JSON-RPC error's `data`. */
export interface WireErrorData {
  code: ErrorCode;
  hint?: string;
  details?: Record<string, unknown>;
}
