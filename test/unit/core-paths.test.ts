import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { imagePaths, resolveLayout, vmPaths } from "../../src/core/paths/index.ts";

describe("paths", () => {
  it("uses the FHS paths for root", () => {
    const layout = resolveLayout({ env: {}, uid: 0, homeDir: "/root" });
    assert.equal(layout.configFile, "/etc/banger/config.toml");
    assert.equal(layout.dbFile, "/var/lib/banger/banger.db");
    assert.equal(layout.socketFile, "/run/banger/bangerd.sock");
  });

  it("follows XDG for a user", () => {
    const layout = resolveLayout({
      env: { XDG_CONFIG_HOME: "/h/cfg", XDG_RUNTIME_DIR: "/run/user/1000" },
      uid: 1000,
      homeDir: "/h",
    });
    assert.equal(layout.configDir, "/h/cfg/banger");
    assert.equal(layout.stateDir, "/h/.local/state/banger");
    assert.equal(layout.socketFile, "/run/user/1000/banger/bangerd.sock");
  });

  it("falls back to the state dir for runtime files without XDG_RUNTIME_DIR", () => {
    const layout = resolveLayout({ env: {}, uid: 1000, homeDir: "/h" });
    assert.equal(layout.runtimeDir, "/h/.local/state/banger/run");
  });

  it("puts everything under BANGER_HOME", () => {
    const layout = resolveLayout({ env: { BANGER_HOME: "/x" }, uid: 0, homeDir: "/root" });
    for (const path of [
      layout.configFile,
      layout.dbFile,
      layout.socketFile,
      layout.imagesDir,
      layout.vmsDir,
    ]) {
      assert.ok(path.startsWith("/x/"), path);
    }
  });

  it("derives per-VM and per-image files deterministically", () => {
    const layout = resolveLayout({ env: { BANGER_HOME: "/x" }, uid: 0, homeDir: "/root" });
    const vm = vmPaths(layout, "abc123");
    assert.equal(vm.handles, "/x/state/vms/abc123/handles.json");
    assert.equal(vm.sshControl, "/x/run/ssh/abc123.ctl");
    assert.equal(imagePaths("/i").rootfs, "/i/rootfs.ext4");
  });
});
