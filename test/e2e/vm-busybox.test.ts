/**
 * A guest with no sshd, no libc and nothing but busybox still boots and runs
 * `vm.exec`: the test makes a busybox-only root filesystem (Debian's
 * busybox-static, banger's guest scripts, /etc/passwd) with mkfs.ext4 -d,
 * creates a VM of the default image without starting it, puts a qcow2
 * overlay of that filesystem in place of its root disk, and starts it. The
 * kernel and initramfs (with the injected agent) are the default image's.
 * QEMU driver.
 */
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { chmodSync, copyFileSync, existsSync, mkdirSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { repoRoot } from "../helpers/cli.ts";
import { createE2eEnv, type E2eEnv, e2eSkipReason } from "../helpers/e2e.ts";
import { connectDaemon, execCollect } from "../helpers/rpc-exec.ts";
import { makeTempDir } from "../helpers/tmp.ts";

const BUSYBOX = "/bin/busybox";
const skip =
  e2eSkipReason() ?? (existsSync(BUSYBOX) ? undefined : "needs Debian's busybox-static (/bin/busybox)");

/** A busybox-only tree: every applet a symlink, banger's guest scripts, no sshd, no libc. */
function busyboxRootfs(dir: string): string {
  const tree = join(dir, "tree");
  for (const sub of [
    "bin",
    "sbin",
    "usr/bin",
    "usr/sbin",
    "usr/local/sbin",
    "etc",
    "dev",
    "proc",
    "sys",
    "tmp",
    "run",
    "root",
  ]) {
    mkdirSync(join(tree, sub), { recursive: true });
  }
  copyFileSync(BUSYBOX, join(tree, "bin/busybox"));
  chmodSync(join(tree, "bin/busybox"), 0o755);
  const applets = execFileSync(BUSYBOX, ["--list-full"], { encoding: "utf8" }).split("\n").filter(Boolean);
  for (const applet of applets) {
    const path = join(tree, applet);
    if (!existsSync(path)) symlinkSync("/bin/busybox", path);
  }
  const guest = join(repoRoot, "guest");
  for (const [file, target] of [
    ["banger-init", "sbin/banger-init"],
    ["banger-setup", "usr/local/sbin/banger-setup"],
    ["powerbtn-wait", "usr/local/sbin/powerbtn-wait"],
    ["poweroff", "usr/local/sbin/poweroff"],
  ] as const) {
    copyFileSync(join(guest, file), join(tree, target));
    chmodSync(join(tree, target), 0o755);
  }
  writeFileSync(
    join(tree, "etc/passwd"),
    "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n",
  );
  writeFileSync(join(tree, "etc/group"), "root:x:0:\nnogroup:x:65534:\n");
  const image = join(dir, "busybox.ext4");
  execFileSync("mkfs.ext4", ["-q", "-F", "-L", "rootfs", "-d", tree, image, "64M"]);
  rmSync(tree, { recursive: true, force: true });
  return image;
}

describe("a busybox-only guest runs vm.exec through the agent (QEMU)", { skip }, () => {
  let env: E2eEnv;
  const dir = makeTempDir("bgb-");
  before(() => {
    env = createE2eEnv({ name: "busybox", config: '[vmm]\ndefault = "qemu"\n' });
  });
  after(async () => {
    await env?.dispose();
    dir.cleanup();
  });

  it("boots with no sshd and runs commands, as root and as another user", async () => {
    const rootfs = busyboxRootfs(dir.path);
    const created = await env.banger(["vm", "create", "tiny", "--no-start", "--json"]);
    assert.equal(created.code, 0, created.stderr);
    const vm = JSON.parse(created.stdout) as { dir: string };
    const overlay = join(vm.dir, "root.qcow2");
    assert.ok(existsSync(overlay), "the QEMU driver's root disk is a qcow2 overlay");
    rmSync(overlay);
    execFileSync("qemu-img", ["create", "-q", "-f", "qcow2", "-b", rootfs, "-F", "raw", overlay]);

    const started = await env.banger(["vm", "start", "tiny"]);
    assert.equal(started.code, 0, started.stderr);
    const client = await connectDaemon(env.home);
    try {
      const sshd = await execCollect(client, {
        name: "tiny",
        argv: [
          "sh",
          "-c",
          "test -e /usr/sbin/sshd || echo no-sshd; ls /lib /usr/lib 2>&1 | grep -c libc; true",
        ],
      });
      assert.deepEqual([sshd.exitCode, sshd.stdout], [0, "no-sshd\n0\n"], sshd.stderr);
      const user = await execCollect(client, {
        name: "tiny",
        argv: ["sh", "-c", "id -u; exit 7"],
        user: "nobody",
      });
      assert.deepEqual([user.exitCode, user.stdout], [7, "65534\n"], user.stderr);
    } finally {
      client.close();
    }
    const stopped = await env.banger(["vm", "stop", "tiny"]);
    assert.equal(stopped.code, 0, stopped.stderr);
  });
});
