/**
 * The auth record: what it keeps (paths and a salted digest, never the
 * material), the older list form, and the transfer service skipping an
 * unchanged sync after a start while `vm auth sync` always writes.
 */
import assert from "node:assert/strict";
import { execFileSync, spawnSync } from "node:child_process";
import { mkdirSync, mkdtempSync, readdirSync, rmSync, statSync, symlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, it } from "node:test";
import {
  AUTH_SCRIPT,
  type AuthMaterial,
  type AuthRecord,
  authDigest,
  gitConfigValue,
  holdsMaterial,
  parseAuthRecord,
  tarArchive,
} from "../../src/core/workspace/index.ts";
import { createTransferService } from "../../src/daemon/workspace/transfer.ts";

const SECRET = "dG9wLXNlY3JldA=="; // base64 of a token
const material = {
  authorizedKeys: ["ssh-ed25519 AAAAC3Nza user@host"],
  gitIdentity: { name: "Ada", email: "ada@example.org" } as AuthMaterial["gitIdentity"],
  files: [{ guest: "~/.netrc", data: SECRET }],
} satisfies AuthMaterial;

describe("auth record", () => {
  it("reads the object form and the older list of paths; anything else is unreadable", () => {
    assert.deepEqual(parseAuthRecord('["/root/.netrc"]'), { paths: ["/root/.netrc"] });
    assert.deepEqual(parseAuthRecord('{"paths":["/a"],"salt":"s","digest":"d"}'), {
      paths: ["/a"],
      salt: "s",
      digest: "d",
    });
    assert.deepEqual(parseAuthRecord('{"paths":[]}'), { paths: [] });
    for (const bad of ["", "{", "42", '{"paths":[1]}', '{"salt":"s"}', "null"]) {
      assert.equal(parseAuthRecord(bad), undefined, bad);
    }
  });

  it("digests per salt, over every part of the material, never holding it", () => {
    const digest = authDigest("aa", material);
    assert.match(digest, /^[0-9a-f]{64}$/);
    assert.equal(authDigest("aa", material), digest, "deterministic");
    assert.notEqual(authDigest("bb", material), digest, "salted");
    for (const changed of [
      { ...material, authorizedKeys: [] },
      { ...material, gitIdentity: null },
      { ...material, gitIdentity: { name: "Ada", email: "other@example.org" } },
      { ...material, files: [{ guest: "~/.netrc", data: "b3RoZXI=" }] },
      { ...material, files: [{ guest: "~/.other", data: SECRET }] },
    ]) {
      assert.notEqual(authDigest("aa", changed), digest);
    }
    const record: AuthRecord = { paths: ["/root/.netrc"], salt: "aa", digest };
    assert.equal(holdsMaterial(record, material), true);
    assert.equal(
      holdsMaterial({ paths: [] }, material),
      false,
      "a record without a digest holds nothing known",
    );
    assert.equal(holdsMaterial(undefined, material), false);
    assert.ok(!JSON.stringify(record).includes(SECRET));
  });
});

describe("auth sync and its record", () => {
  function service() {
    const records = new Map<string, AuthRecord>();
    const writes: AuthRecord[] = [];
    let execs = 0;
    let salts = 0;
    const transfers = createTransferService({
      vms: {
        exec: async () => {
          execs += 1;
          return { exitCode: 0, signal: null };
        },
        files: async () => {
          throw new Error("not used");
        },
      },
      authRecords: {
        read: async (name) => records.get(name),
        write: async (name, record) => {
          records.set(name, record);
          writes.push(record);
        },
      },
      newSalt: () => `salt-${++salts}`,
    });
    return { transfers, records, writes, execs: () => execs };
  }
  const signal = new AbortController().signal;

  it("records the paths before writing, then the digest; skips an unchanged sync after a start", async () => {
    const { transfers, records, writes, execs } = service();
    const first = await transfers.syncAuth({ name: "box", ...material, ifChanged: true }, signal);
    assert.equal(first.unchanged, false);
    assert.equal(execs(), 1);
    assert.deepEqual(
      writes[0],
      { paths: ["/root/.netrc"] },
      "paths first, so a cut-off sync is still scrubbed",
    );
    const record = records.get("box")!;
    assert.equal(record.salt, "salt-1");
    assert.equal(record.digest, authDigest("salt-1", material));
    assert.ok(!JSON.stringify(writes).includes(SECRET), "the record never holds the material");

    const again = await transfers.syncAuth({ name: "box", ...material, ifChanged: true }, signal);
    assert.equal(again.unchanged, true);
    assert.equal(execs(), 1, "the guest is left alone");
    assert.deepEqual(again.files, ["~/.netrc"]);

    const changed = { ...material, authorizedKeys: ["ssh-ed25519 AAAAnew user@host"] };
    assert.equal(
      (await transfers.syncAuth({ name: "box", ...changed, ifChanged: true }, signal)).unchanged,
      false,
    );
    assert.equal(execs(), 2, "new material is written");

    assert.equal((await transfers.syncAuth({ name: "box", ...changed }, signal)).unchanged, false);
    assert.equal(execs(), 3, "`vm auth sync` always writes");
  });

  it("a VM with an inherited record (a clone) skips the same material, not another user's", async () => {
    const { transfers, records, execs } = service();
    records.set("clone", {
      paths: ["/root/.netrc"],
      salt: "src-salt",
      digest: authDigest("src-salt", material),
    });
    assert.equal(
      (await transfers.syncAuth({ name: "clone", ...material, ifChanged: true }, signal)).unchanged,
      true,
    );
    assert.equal(execs(), 0);
    const otherUser = { ...material, gitIdentity: { name: "Bob", email: "bob@example.org" } };
    assert.equal(
      (await transfers.syncAuth({ name: "clone", ...otherUser, ifChanged: true }, signal)).unchanged,
      false,
    );
    assert.equal(execs(), 1);
  });
});

describe("the auth program", () => {
  const tricky = { name: ' Ada "the" \\ Lovelace # ; é ', email: "ada+x@example.org" };

  function runAuth(home: string, identity: { name: string; email: string }, path = "/usr/bin:/bin") {
    const lines = [
      identity.name,
      identity.email,
      gitConfigValue(identity.name),
      gitConfigValue(identity.email),
    ];
    const tar = tarArchive([
      { name: "identity", data: new TextEncoder().encode(lines.map((l) => `${l}\n`).join("")), mode: 0o600 },
    ]);
    return spawnSync("/bin/sh", ["-c", AUTH_SCRIPT, "banger-auth"], {
      input: Buffer.from(tar),
      encoding: "utf8",
      env: { PATH: path, HOME: home, GIT_CONFIG_NOSYSTEM: "1" },
    });
  }
  const gitGet = (home: string, key: string) =>
    execFileSync("git", ["config", "--global", "--get", key], {
      encoding: "utf8",
      env: { PATH: "/usr/bin:/bin", HOME: home, GIT_CONFIG_NOSYSTEM: "1" },
    }).replace(/\n$/, "");

  it("writes a git identity that git reads back exactly, with or without git config already there", () => {
    const dir = mkdtempSync(join(tmpdir(), "bgauth-"));
    try {
      const fresh = join(dir, "fresh");
      mkdirSync(fresh);
      // No git on PATH: a user without a global config gets it from builtins alone.
      const tools = join(dir, "tools");
      mkdirSync(tools);
      for (const tool of ["mktemp", "tar", "mv", "rm", "mkdir"]) {
        const found = execFileSync("sh", ["-c", 'command -v "$1"', "sh", tool], { encoding: "utf8" }).trim();
        symlinkSync(found, join(tools, tool));
      }
      const first = runAuth(fresh, tricky, tools);
      assert.equal(first.status, 0, first.stderr);
      assert.equal(gitGet(fresh, "user.name"), tricky.name, "written with builtins, read by git");
      assert.equal(gitGet(fresh, "user.email"), tricky.email);
      assert.equal(statSync(join(fresh, ".gitconfig")).mode & 0o777, 0o600);

      // A global config that exists is edited by git itself, keeping what else it holds.
      const existing = join(dir, "existing");
      mkdirSync(existing);
      writeFileSync(join(existing, ".gitconfig"), "[core]\n\teditor = vi\n");
      const second = runAuth(existing, { name: "Bob", email: "bob@example.org" });
      assert.equal(second.status, 0, second.stderr);
      assert.equal(gitGet(existing, "user.name"), "Bob");
      assert.equal(gitGet(existing, "core.editor"), "vi");
      assert.deepEqual(readdirSync(existing).sort(), [".gitconfig"], "the staging directory is gone");
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
