/**
 * The published-ports feature over a fake relay starter and the real
 * settings (in-memory files): listeners open at every start and close at
 * every stop, a start that cannot open one port closes the ports it opened
 * and fails naming the port, a new daemon reopens the ports of running VMs
 * (one VM's failure does not stop the others), and teardown closes all.
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { silentLogger } from "../../src/core/log/index.ts";
import { parseEgressPolicy, parsePublishSpec } from "../../src/core/network/index.ts";
import { createPortsFeature } from "../../src/daemon/network/ports.ts";
import { createNetworkSettings } from "../../src/daemon/network/settings.ts";
import type { VmHookContext } from "../../src/daemon/vm/index.ts";
import { BangerError, ErrorCode } from "../../src/protocol/index.ts";
import type { PortProxyOptions } from "../../src/sys/network/index.ts";

const web: VmHookContext = { vmId: "id-web", vmName: "web", guestIp: "10.77.0.2", tap: "bgr-web" };
const db: VmHookContext = { vmId: "id-db", vmName: "db", guestIp: "10.77.0.3", tap: "bgr-db" };
const signal = new AbortController().signal;

function setup(options: { busy?: string[]; active?: VmHookContext[] } = {}) {
  const files = new Map<string, string>();
  const settings = createNetworkSettings({
    defaultEgress: parseEgressPolicy("allow"),
    vmDir: (vmId) => `/vms/${vmId}`,
    files: {
      read: async (path) => files.get(path),
      write: async (path, text) => void files.set(path, text),
    },
  });
  /** Listeners open now, as "HOST:PORT/PROTO->GUEST:PORT". */
  const open = new Set<string>();
  const startProxy = async (proxy: PortProxyOptions) => {
    const where = `${proxy.listen.host}:${proxy.listen.port}/${proxy.protocol}`;
    if (options.busy?.includes(where)) {
      throw new BangerError(ErrorCode.NETWORK_FAILED, `host port ${where} is in use`);
    }
    const key = `${where}->${proxy.target.host}:${proxy.target.port}`;
    open.add(key);
    return { close: async () => void open.delete(key) };
  };
  const ports = createPortsFeature({
    settings,
    startProxy,
    activeVms: async () => options.active ?? [],
    logger: silentLogger,
  });
  const publish = async (vm: VmHookContext, specs: string[]) =>
    settings.store(vm, { egress: parseEgressPolicy("allow"), publish: specs.map(parsePublishSpec) });
  return { ports, open, publish };
}

describe("the published-ports feature", () => {
  it("opens a VM's ports at every start and closes them at every stop", async () => {
    const { ports, open, publish } = setup();
    await publish(web, ["8080:80", "0.0.0.0:5353:53/udp"]);
    await ports.hook.start({ ...web, signal });
    assert.deepEqual([...open].sort(), [
      "0.0.0.0:5353/udp->10.77.0.2:53",
      "127.0.0.1:8080/tcp->10.77.0.2:80",
    ]);
    await ports.hook.stop(web);
    assert.deepEqual([...open], []);
    await ports.hook.stop(web);
    await ports.hook.start({ ...web, signal });
    assert.equal(open.size, 2, "a second start opens them again");
    await ports.hook.start({ ...web, signal });
    assert.equal(open.size, 2, "a start of a VM whose ports are open replaces them");
  });

  it("fails a start on a busy host port, naming it, and closes what it opened", async () => {
    const { ports, open, publish } = setup({ busy: ["127.0.0.1:9090/tcp"] });
    await publish(web, ["8080:80", "9090:90"]);
    await assert.rejects(ports.hook.start({ ...web, signal }), /host port 127\.0\.0\.1:9090\/tcp is in use/);
    assert.deepEqual([...open], []);
  });

  it("a new daemon reopens the ports of running VMs, past one that fails; teardown closes them all", async () => {
    const { ports, open, publish } = setup({ busy: ["127.0.0.1:7070/tcp"], active: [db, web] });
    await publish(db, ["7070:70"]);
    await publish(web, ["8080:80"]);
    await ports.ensure(signal);
    assert.deepEqual([...open], ["127.0.0.1:8080/tcp->10.77.0.2:80"]);
    await ports.teardown();
    assert.deepEqual([...open], []);
  });
});
