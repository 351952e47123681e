/**
 * The snapshot commands against a fake daemon client: `vm snapshot` and
 * `vm fork` sending what the daemon expects (and refusing a bad --count
 * before asking it), `--from` reaching vm.create, `snapshot ls` as a table
 * and JSON, and `snapshot rm` passing on the daemon's refusal with its hint.
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { BangerError, ErrorCode, exitStatusFor, type SnapshotInfo } from "../../src/protocol/index.ts";
import { FakeDaemonClient, fakeCli, fakeVmInfo } from "../fakes/cli.ts";

const warm: SnapshotInfo = {
  id: "0123456789abcdef",
  name: "warm",
  sourceVm: "dev",
  vmm: "qemu",
  image: "debian-bookworm",
  cpus: 1,
  memoryMib: 512,
  diskGib: 4,
  memoryBytes: 160 * 1024 * 1024,
  diskBytes: 300 * 1024 * 1024,
  includesSecrets: false,
  createdAt: new Date().toISOString(),
  dir: "/var/lib/banger/snapshots/0123456789abcdef",
  usedBy: ["c1"],
};

describe("vm snapshot and vm fork", () => {
  it("vm snapshot sends the VM, the name and --include-secrets, and prints the snapshot's name or JSON", async () => {
    const client = new FakeDaemonClient({ "vm.snapshot": () => warm });
    const plain = fakeCli({ client });
    assert.equal(await plain.run(["vm", "snapshot", "dev", "warm", "--include-secrets"]), 0);
    assert.equal(plain.stdout(), "warm\n");
    assert.deepEqual(client.callsOf("vm.snapshot")[0]!.params, {
      name: "dev",
      snapshot: "warm",
      includeSecrets: true,
    });
    const asJson = fakeCli({ client });
    assert.equal(await asJson.run(["vm", "snapshot", "dev", "--json"]), 0);
    assert.deepEqual(JSON.parse(asJson.stdout()), warm);
    assert.deepEqual(client.callsOf("vm.snapshot")[1]!.params, { name: "dev" });
  });

  it("vm fork prints each clone, and refuses a --count that is not a positive whole number before asking", async () => {
    const clones = [fakeVmInfo({ name: "agent-1" }), fakeVmInfo({ name: "agent-2" })];
    const client = new FakeDaemonClient({
      "vm.fork": () => ({ snapshot: warm, vms: clones }),
      "vm.auth.sync": (params) => ({ name: params.name, keys: 0, files: [], gitIdentity: false }),
    });
    const cli = fakeCli({ client });
    assert.equal(await cli.run(["vm", "fork", "dev", "agent", "--count", "2"]), 0, cli.stderr());
    assert.equal(cli.stdout(), "agent-1\nagent-2\n");
    assert.deepEqual(client.callsOf("vm.fork")[0]!.params, { name: "dev", newName: "agent", count: 2 });
    for (const bad of ["0", "two", "1.5"]) {
      const refused = fakeCli({ client });
      assert.equal(
        await refused.run(["vm", "fork", "dev", "agent", "--count", bad]),
        exitStatusFor[ErrorCode.INVALID_PARAMS],
      );
      assert.match(refused.stderr(), new RegExp(`--count must be a .*'${bad.replace(".", "\\.")}'`));
    }
    assert.equal(client.callsOf("vm.fork").length, 1);
  });

  it("Ctrl-C during vm fork cancels the daemon's call and exits 130 saying so", async () => {
    const client = new FakeDaemonClient({
      "vm.fork": async (_params, call) => {
        await call.whenCancelled;
        throw new BangerError(ErrorCode.CANCELLED, "cancelled");
      },
    });
    const cli = fakeCli({ client });
    const running = cli.run(["vm", "fork", "dev", "agent", "--count", "2"]);
    while (client.callsOf("vm.fork").length === 0) await new Promise((resolve) => setImmediate(resolve));
    cli.signal("SIGINT");
    assert.equal(await running, exitStatusFor[ErrorCode.CANCELLED]);
    assert.equal(client.callsOf("vm.fork")[0]!.cancelled, true, "the daemon was told to cancel");
    assert.match(cli.stderr(), /SIGINT: cancelling…/);
    assert.match(cli.stderr(), /fork of VM 'dev' cancelled/);
  });

  it("vm create --from passes the snapshot to the daemon's create", async () => {
    const client = new FakeDaemonClient({
      "vm.create.begin": () => {
        throw new BangerError(ErrorCode.SNAPSHOT_NOT_FOUND, "snapshot 'warm' does not exist", {
          hint: "list snapshots: `banger snapshot ls`",
        });
      },
    });
    const cli = fakeCli({ client });
    assert.equal(
      await cli.run(["vm", "create", "web2", "--from", "warm"]),
      exitStatusFor[ErrorCode.SNAPSHOT_NOT_FOUND],
    );
    assert.equal((client.callsOf("vm.create.begin")[0]!.params as { from?: string }).from, "warm");
    assert.match(cli.stderr(), /snapshot 'warm' does not exist\nhint: list snapshots/);
  });
});

describe("snapshot ls, show and rm", () => {
  it("lists snapshots as a table and as the daemon's JSON", async () => {
    const client = new FakeDaemonClient({ "snapshot.list": () => ({ snapshots: [warm] }) });
    const table = fakeCli({ client });
    assert.equal(await table.run(["snapshot", "ls"]), 0);
    const [header, row] = table.stdout().trimEnd().split("\n");
    assert.match(header!, /^NAME\s+FROM\s+IMAGE\s+VMM\s+MEMORY\s+STATE\s+DISK\s+CLONES\s+CREATED$/i);
    assert.match(
      row!,
      /^warm\s+dev\s+debian-bookworm\s+qemu\s+512M\s+160(\.0)? ?MiB\s+300(\.0)? ?MiB\s+1\s+/,
    );
    const asJson = fakeCli({ client });
    assert.equal(await asJson.run(["snapshot", "ls", "--json"]), 0);
    assert.deepEqual(JSON.parse(asJson.stdout()), [warm]);
  });

  it("rm passes on the daemon's refusal for a snapshot in use, with its hint and status", async () => {
    const client = new FakeDaemonClient({
      "snapshot.delete": () => {
        throw new BangerError(ErrorCode.SNAPSHOT_MISMATCH, "snapshot 'warm' backs the disks of 'c1'", {
          hint: "delete those VMs first: `banger vm delete c1`",
        });
      },
    });
    const cli = fakeCli({ client });
    assert.equal(await cli.run(["snapshot", "rm", "warm"]), exitStatusFor[ErrorCode.SNAPSHOT_MISMATCH]);
    assert.match(
      cli.stderr(),
      /^banger: snapshot 'warm' backs the disks of 'c1'\nhint: delete those VMs first/,
    );
    assert.equal(cli.stdout(), "");
  });
});
