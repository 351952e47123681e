/** The guest kernel command line banger-init and banger-setup read. */
import { BangerError, ErrorCode } from "../../protocol/index.ts";

export interface KernelCmdlineInputs {
  guestIp: string;
  gatewayIp: string;
  prefixLength: number;
  hostname: string;
  /** One authorized_keys line (e.g. the daemon's id_ed25519.pub). */
  sshPublicKey: string;
  /** Host TSC rate in kHz; see tsc_early_khz below. */
  tscKhz: number;
  /** Search domain of the guest's resolv.conf (config `network.domain`); the gateway is its nameserver. */
  searchDomain?: string | undefined;
  /**
   * An image with no kernel of its own (an OCI image) boots the default
   * image's kernel and runs banger-init from /.banger (init=/.banger/init);
   * `baseDevice` is the read-only disk holding that kernel's image, mounted on
   * /.banger/base for its modules and tools (banger.base=).
   */
  kernelless?: { baseDevice: string } | undefined;
  /** Appended as they are, after banger's own arguments. */
  extraArgs?: readonly string[] | undefined;
}

/** x86's COMMAND_LINE_SIZE. */
const MAX_CMDLINE_BYTES = 2048;

const IPV4 = /^(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(\.(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)){3}$/;
const HOSTNAME = /^[a-zA-Z0-9]([a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?$/;
const DOMAIN =
  /^[a-zA-Z0-9]([a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?(\.[a-zA-Z0-9]([a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?)*$/;

/**
 * The full command line. `tsc_early_khz` is always set: under TCG the PIT
 * calibration of the TSC fails when the host is busy and the kernel then
 * hangs in calibrate_delay. `ip=` is applied by banger-setup (the cloud
 * kernel has no IP autoconfiguration); its dns0 field, the gateway, and
 * `search=` become the guest's resolv.conf; `sshkey=` carries the authorized key
 * base64-encoded, because the line holds spaces.
 */
export function planKernelCmdline(inputs: KernelCmdlineInputs): string {
  const { guestIp, gatewayIp, prefixLength, hostname, sshPublicKey, tscKhz } = inputs;
  if (!IPV4.test(guestIp)) invalid(`guest IP '${guestIp}' is not an IPv4 address`);
  if (!IPV4.test(gatewayIp)) invalid(`gateway IP '${gatewayIp}' is not an IPv4 address`);
  if (!Number.isInteger(prefixLength) || prefixLength < 1 || prefixLength > 32) {
    invalid(`prefix length ${prefixLength} is not between 1 and 32`);
  }
  if (!HOSTNAME.test(hostname)) invalid(`hostname '${hostname}' is not a DNS label`);
  const search = inputs.searchDomain;
  if (search !== undefined && !DOMAIN.test(search)) invalid(`search domain '${search}' is not a DNS name`);
  const base = inputs.kernelless?.baseDevice;
  if (base !== undefined && !/^\/dev\/[a-z0-9]+$/.test(base))
    invalid(`base device '${base}' is not /dev/NAME`);
  if (!Number.isInteger(tscKhz) || tscKhz <= 0) invalid(`TSC rate ${tscKhz} kHz is not a positive integer`);
  const key = sshPublicKey.trim();
  if (key === "" || key.includes("\n")) invalid("the SSH public key must be one authorized_keys line");
  for (const arg of inputs.extraArgs ?? []) {
    if (arg === "" || /\s/.test(arg)) invalid(`extra kernel argument '${arg}' is empty or holds whitespace`);
  }
  const args = [
    "console=ttyS0",
    "quiet",
    "panic=-1",
    `tsc_early_khz=${tscKhz}`,
    "root=/dev/vda",
    "rw",
    "net.ifnames=0",
    `ip=${guestIp}::${gatewayIp}:${prefixLength}:${hostname}:eth0:off:${gatewayIp}`,
    ...(search === undefined ? [] : [`search=${search}`]),
    ...(inputs.kernelless === undefined
      ? ["init=/sbin/banger-init"]
      : ["init=/.banger/init", `banger.base=${inputs.kernelless.baseDevice}`]),
    `sshkey=${Buffer.from(key, "utf8").toString("base64")}`,
    ...(inputs.extraArgs ?? []),
  ];
  const cmdline = args.join(" ");
  if (Buffer.byteLength(cmdline) >= MAX_CMDLINE_BYTES) {
    invalid(
      `the kernel command line is ${Buffer.byteLength(cmdline)} bytes; the limit is ${MAX_CMDLINE_BYTES - 1}`,
    );
  }
  return cmdline;
}

function invalid(message: string): never {
  throw new BangerError(ErrorCode.INVALID_PARAMS, `kernel command line: ${message}`);
}
