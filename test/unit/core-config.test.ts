import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { defaultConfig, parseConfig } from "../../src/core/config/index.ts";
import { type BangerError, ErrorCode } from "../../src/protocol/index.ts";

describe("config", () => {
  it("has a documented default for every key", () => {
    const config = defaultConfig();
    assert.equal(config.vm.default_image, "debian-bookworm");
    assert.equal(config.vm.cpus, 1);
    assert.equal(config.vmm.default, "auto");
    assert.equal(config.vmm.accel, "auto");
    assert.equal(config.network.subnet, "10.77.0.0/24");
    assert.equal(config.daemon.socket_group, "");
  });

  it("takes vm.default_image's default from the environment, and the file's value over it", () => {
    const defaults = { vmDefaultImage: "debian-bookworm-minimal" };
    assert.equal(defaultConfig(defaults).vm.default_image, "debian-bookworm-minimal");
    assert.equal(
      parseConfig("[vm]\ncpus = 2\n", "/c.toml", defaults).vm.default_image,
      "debian-bookworm-minimal",
    );
    assert.equal(parseConfig("[daemon]\n", "/c.toml", defaults).vm.default_image, "debian-bookworm-minimal");
    assert.equal(
      parseConfig("[vm]\ndefault_image = 'alpine'\n", "/c.toml", defaults).vm.default_image,
      "alpine",
    );
    assert.throws(() => parseConfig("vm = 3\n", "/c.toml", defaults), { code: ErrorCode.CONFIG_INVALID });
  });

  it("merges a partial file over the defaults", () => {
    const config = parseConfig("[vm]\ncpus = 2\n[network]\nbridge = 'br-test'\n", "/etc/banger/config.toml");
    assert.equal(config.vm.cpus, 2);
    assert.equal(config.vm.memory_mib, 512);
    assert.equal(config.network.bridge, "br-test");
  });

  for (const [text, key, pattern] of [
    ["[vm]\ncpus = 0\n", "vm.cpus", /vm\.cpus/],
    ["[vm]\nflavour = 'x'\n", "vm.flavour", /vm\.flavour: unknown key/],
    ["[nope]\n", "nope", /nope: unknown key/],
    ["[network]\nsubnet = '10.0.0.0/8'\n", "network.subnet", /network\.subnet/],
    ["[network]\nbridge = 'a-name-that-is-too-long'\n", "network.bridge", /15 characters/],
    ["[vmm]\ndefault = 'xen'\n", "vmm.default", /vmm\.default/],
  ] as const) {
    it(`rejects ${key} with a message naming the key and the file`, () => {
      assert.throws(
        () => parseConfig(text, "/tmp/c.toml"),
        (error: BangerError) => {
          assert.equal(error.code, ErrorCode.CONFIG_INVALID);
          assert.match(error.message, /^\/tmp\/c\.toml: /);
          assert.match(error.message, pattern);
          return true;
        },
      );
    });
  }

  it("rejects TOML syntax errors naming the file", () => {
    assert.throws(() => parseConfig("[vm\n", "/tmp/c.toml"), /\/tmp\/c\.toml: not valid TOML/);
  });
});

describe("config: image", () => {
  it("image.insecure_registries takes host[:port] entries", () => {
    const text = '[image]\ninsecure_registries = ["reg.lan:5000"]\n';
    assert.deepEqual(parseConfig(text, "c.toml").image.insecure_registries, ["reg.lan:5000"]);
    assert.throws(
      () => parseConfig('[image]\ninsecure_registries = ["http://x"]\n', "c.toml"),
      /image.insecure_registries/,
    );
  });
});
