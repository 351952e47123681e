import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, it } from "node:test";
import {
  catalogEntries,
  chooseAptSourcesFile,
  DEFAULT_IMAGE_NAME,
  defaultCatalogEntry,
  findCatalogEntry,
  imageDigest,
  MINIMAL_IMAGE_NAME,
  planCachedImageCopy,
  planDefaultImageBuild,
  planKernelCmdline,
  recipeHash,
  shortDigest,
} from "../../src/core/image/index.ts";
import { ErrorCode } from "../../src/protocol/index.ts";

const guestDir = join(import.meta.dirname, "..", "..", "guest");

describe("image catalog", () => {
  it("has the default image with the packages banger-init needs", () => {
    const entry = findCatalogEntry(DEFAULT_IMAGE_NAME);
    assert.ok(entry);
    assert.equal(entry, defaultCatalogEntry());
    assert.equal(entry.recipe.suite, "bookworm");
    for (const pkg of [
      "openssh-server",
      "e2fsprogs",
      "busybox-static",
      "linux-image-cloud-amd64",
      "iproute2",
    ]) {
      assert.ok(entry.recipe.packages.includes(pkg), pkg);
    }
    assert.equal(findCatalogEntry("nope"), undefined);
  });

  it("makes the default a developer's image: the minimal one plus the usual tools", () => {
    const developer = defaultCatalogEntry().recipe;
    const minimal = findCatalogEntry(MINIMAL_IMAGE_NAME)!.recipe;
    for (const pkg of minimal.packages) assert.ok(developer.packages.includes(pkg), pkg);
    for (const pkg of ["build-essential", "python3", "make", "jq", "less", "vim-tiny", "procps"]) {
      assert.ok(developer.packages.includes(pkg), pkg);
      assert.ok(!minimal.packages.includes(pkg), `${pkg} stays out of the minimal image`);
    }
    for (const pkg of ["iputils-ping", "dnsutils", "unzip"]) assert.ok(developer.packages.includes(pkg), pkg);
    assert.deepEqual(
      catalogEntries().map((entry) => entry.name),
      [DEFAULT_IMAGE_NAME, MINIMAL_IMAGE_NAME],
    );
  });

  it("keeps the minimal recipe, the build-cache key of the image tests and CI share", () => {
    // Changing it changes that key: every CI run and test machine rebuilds the image once.
    assert.deepEqual(JSON.parse(JSON.stringify(findCatalogEntry(MINIMAL_IMAGE_NAME)!.recipe)), {
      suite: "bookworm",
      variant: "minbase",
      packages: [
        "linux-image-cloud-amd64",
        "openssh-server",
        "ca-certificates",
        "git",
        "curl",
        "tmux",
        "sudo",
        "iproute2",
        "kmod",
        "udev",
        "busybox-static",
        "e2fsprogs",
      ],
      dpkgPathFilters: [
        "path-exclude=/usr/share/man/*",
        "path-exclude=/usr/share/locale/*",
        "path-exclude=/usr/share/doc/*",
        "path-include=/usr/share/doc/*/copyright",
      ],
      rootfsSize: "1G",
    });
  });
});

describe("planDefaultImageBuild", () => {
  const plan = planDefaultImageBuild({
    stagingDir: "/s/build-1",
    guestFilesDir: "/g",
    aptSourcesFile: "/etc/apt/sources.list.d/debian.sources",
  });

  it("orders the steps and ends by removing the tree", () => {
    assert.deepEqual(
      plan.steps.map((step) => step.id),
      ["rootfs", "customize", "kernel", "initrd", "mkfs", "cleanup"],
    );
    assert.equal(plan.rootfsTree, "/s/build-1/rootfs");
    assert.equal(plan.paths.rootfs, "/s/build-1/rootfs.ext4");
  });

  it("runs mmdebstrap in root mode on minbase with apt's own sources file", () => {
    const argv = plan.steps[0]!.argv;
    assert.equal(argv[0], "mmdebstrap");
    assert.ok(argv.includes("--mode=root"));
    assert.ok(argv.includes("--variant=minbase"));
    assert.ok(argv.some((arg) => arg.startsWith("--include=") && arg.includes("openssh-server")));
    assert.ok(argv.includes("--dpkgopt=path-exclude=/usr/share/man/*"));
    assert.deepEqual(argv.slice(-3), [
      "bookworm",
      "/s/build-1/rootfs",
      "/etc/apt/sources.list.d/debian.sources",
    ]);
  });

  it("plans the guest scripts, mkfs and the safe tree removal", () => {
    const byId = new Map(plan.steps.map((step) => [step.id, step.argv]));
    assert.deepEqual(byId.get("customize"), ["sh", "/g/customize", "/s/build-1/rootfs", "/g"]);
    assert.deepEqual(byId.get("kernel"), ["sh", "/g/export-boot", "/s/build-1/rootfs", "/s/build-1"]);
    assert.deepEqual(byId.get("initrd"), [
      "sh",
      "/g/mkinitramfs",
      "/s/build-1/rootfs",
      "/s/build-1/rootfs/bin/busybox",
      "/s/build-1/initrd.gz",
    ]);
    assert.deepEqual(byId.get("mkfs"), [
      "mkfs.ext4",
      "-q",
      "-F",
      "-L",
      "rootfs",
      "-d",
      "/s/build-1/rootfs",
      "/s/build-1/rootfs.ext4",
      "2G",
    ]);
    assert.deepEqual(byId.get("cleanup"), ["rm", "-rf", "--one-file-system", "--", "/s/build-1/rootfs"]);
  });

  it("copies a cache entry sparsely", () => {
    const copy = planCachedImageCopy({ cacheEntryDir: "/c/abc", stagingDir: "/s/b" });
    assert.deepEqual(copy.steps[0]!.argv, [
      "cp",
      "--sparse=always",
      "--",
      "/c/abc/vmlinuz",
      "/c/abc/initrd.gz",
      "/c/abc/rootfs.ext4",
      "/c/abc/packages.txt",
      "/s/b/",
    ]);
  });

  it("prefers the deb822 sources file", () => {
    assert.equal(chooseAptSourcesFile(true), "/etc/apt/sources.list.d/debian.sources");
    assert.equal(chooseAptSourcesFile(false), "/etc/apt/sources.list");
  });
});

describe("planKernelCmdline", () => {
  const inputs = {
    guestIp: "10.77.0.2",
    gatewayIp: "10.77.0.1",
    prefixLength: 24,
    hostname: "web",
    sshPublicKey: "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIB banger@host\n",
    tscKhz: 2596122,
  };

  it("builds the whole line, always with tsc_early_khz", () => {
    const key = Buffer.from("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIB banger@host").toString("base64");
    assert.equal(
      planKernelCmdline(inputs),
      "console=ttyS0 quiet panic=-1 tsc_early_khz=2596122 root=/dev/vda rw net.ifnames=0 " +
        `ip=10.77.0.2::10.77.0.1:24:web:eth0:off:10.77.0.1 init=/sbin/banger-init sshkey=${key}`,
    );
    assert.match(planKernelCmdline({ ...inputs, extraArgs: ["loglevel=7"] }), / loglevel=7$/);
  });

  it("runs banger-init from /.banger with the base disk named for an image without a kernel", () => {
    const line = planKernelCmdline({ ...inputs, kernelless: { baseDevice: "/dev/vdb" } });
    assert.match(line, / init=\/\.banger\/init banger\.base=\/dev\/vdb sshkey=/);
    assert.doesNotMatch(line, /banger-init/);
  });

  it("refuses values that would break the line", () => {
    const bad = [
      { guestIp: "10.77.0.256" },
      { gatewayIp: "gw" },
      { prefixLength: 33 },
      { hostname: "bad host" },
      { tscKhz: 0 },
      { sshPublicKey: "a\nb" },
      { extraArgs: ["two words"] },
      { extraArgs: ["x".repeat(2048)] },
      { kernelless: { baseDevice: "/dev/vdb rw" } },
    ];
    for (const change of bad) {
      assert.throws(
        () => planKernelCmdline({ ...inputs, ...change }),
        { code: ErrorCode.INVALID_PARAMS },
        JSON.stringify(change),
      );
    }
  });
});

describe("image digests", () => {
  const parts = {
    kernel: Buffer.from("kernel"),
    initrd: Buffer.from("initrd"),
    guestFiles: [
      { name: "b", content: "2" },
      { name: "a", content: "1" },
    ],
    packageList: "zlib 1\nbash 5\n",
  };

  it("ignores file and package order but not content", () => {
    const digest = imageDigest(parts);
    assert.match(digest, /^[0-9a-f]{64}$/);
    assert.equal(shortDigest(digest).length, 16);
    assert.equal(
      imageDigest({ ...parts, guestFiles: [...parts.guestFiles].reverse(), packageList: "bash 5\nzlib 1" }),
      digest,
    );
    assert.notEqual(imageDigest({ ...parts, packageList: "bash 5.1\nzlib 1\n" }), digest);
    assert.notEqual(imageDigest({ ...parts, kernel: Buffer.from("kernel2") }), digest);
  });

  it("keys the build cache by recipe and guest files", () => {
    const recipe = defaultCatalogEntry().recipe;
    const key = recipeHash(recipe, parts.guestFiles);
    assert.equal(recipeHash(recipe, [...parts.guestFiles].reverse()), key);
    assert.notEqual(recipeHash({ ...recipe, packages: [...recipe.packages, "vim"] }, parts.guestFiles), key);
    assert.notEqual(recipeHash(recipe, [{ name: "a", content: "changed" }]), key);
  });
});

describe("guest/banger-setup command-line parsing (dry run)", () => {
  const dir = mkdtempSync(join(tmpdir(), "banger-setup-"));
  after(() => rmSync(dir, { recursive: true, force: true }));

  function setup(cmdline: string): { code: number | null; actions: string[]; errors: string } {
    const file = join(dir, "cmdline");
    writeFileSync(file, `${cmdline}\n`);
    const result = spawnSync("sh", [join(guestDir, "banger-setup")], {
      env: { PATH: process.env.PATH, BANGER_CMDLINE_FILE: file, BANGER_SETUP_DRY_RUN: "1" },
      encoding: "utf8",
    });
    return { code: result.status, actions: result.stdout.split("\n").filter(Boolean), errors: result.stderr };
  }

  it("applies the line planKernelCmdline makes", () => {
    const key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIB banger@host";
    const cmdline = planKernelCmdline({
      guestIp: "10.77.0.2",
      gatewayIp: "10.77.0.1",
      prefixLength: 24,
      hostname: "web",
      sshPublicKey: key,
      tscKhz: 1000,
      searchDomain: "vm",
    });
    const result = setup(cmdline);
    assert.equal(result.code, 0, result.errors);
    assert.deepEqual(result.actions, [
      "ip link set lo up",
      "hostname web",
      "hosts_for web",
      "ip addr add 10.77.0.2/24 dev eth0",
      "ip link set eth0 up",
      "ip route add default via 10.77.0.1 dev eth0",
      "resolv_conf 10.77.0.1 vm",
      `authorized_key ${key}`,
    ]);
  });

  it("takes a netmask, no gateway and no hostname", () => {
    const result = setup("quiet ip=192.168.5.9:::255.255.240.0::eth1:off");
    assert.equal(result.code, 0, result.errors);
    assert.deepEqual(result.actions, [
      "ip link set lo up",
      "ip addr add 192.168.5.9/20 dev eth1",
      "ip link set eth1 up",
    ]);
  });

  it("does only lo without ip= or sshkey=, and never globs the line", () => {
    const result = setup("console=ttyS0 * /*");
    assert.equal(result.code, 0, result.errors);
    assert.deepEqual(result.actions, ["ip link set lo up"]);
  });

  it("reports malformed values and applies the rest", () => {
    const cases: Array<[string, RegExp]> = [
      ["ip=10.0.0.300::10.0.0.1:24:web:eth0:off", /bad address/],
      ["ip=10.0.0.3::10.0.0.1:255.0.255.0:web:eth0:off", /bad netmask/],
      ["ip=10.0.0.3::10.0.0.1:40:web:eth0:off", /bad netmask/],
      ["ip=10.0.0.3::nope:24:web:eth0:off", /bad gateway/],
      ["sshkey=!!!notbase64", /sshkey=/],
      [`sshkey=${Buffer.from("line1\nline2").toString("base64")}`, /sshkey=/],
    ];
    for (const [cmdline, message] of cases) {
      const result = setup(cmdline);
      assert.equal(result.code, 1, cmdline);
      assert.match(result.errors, message, cmdline);
      assert.deepEqual(result.actions, ["ip link set lo up"], cmdline);
    }
    const badDns = setup("ip=10.0.0.3::10.0.0.1:24:web:eth0:off:10.0.0.999");
    assert.equal(badDns.code, 1);
    assert.match(badDns.errors, /bad nameserver/);
    assert.ok(!badDns.actions.some((action) => action.startsWith("resolv_conf")));
    const badSearch = setup("ip=10.0.0.3::10.0.0.1:24:web:eth0:off:10.0.0.1 search=a;b");
    assert.equal(badSearch.code, 1);
    assert.match(badSearch.errors, /search=/);
    assert.equal(badSearch.actions.at(-1), "resolv_conf 10.0.0.1", "the nameserver is still written");
    const badHost = setup("ip=10.0.0.3::10.0.0.1:24:-bad:eth0:off");
    assert.equal(badHost.code, 1);
    assert.match(badHost.errors, /bad hostname/);
    assert.ok(badHost.actions.includes("ip addr add 10.0.0.3/24 dev eth0"), "the address is still applied");
  });
});
