/**
 * `vm.exec` over the daemon's RPC socket, as the CLI calls it, for e2e tests
 * that need what the CLI does not expose (env, user, signals) or must not
 * depend on its flags.
 */
import { join } from "node:path";
import { RpcClient } from "../../src/cli/rpc/client.ts";
import { BUILD_VERSION, type ParamsOf, PROTOCOL_VERSION } from "../../src/protocol/index.ts";

export async function connectDaemon(home: string): Promise<RpcClient> {
  const client = await RpcClient.connect(join(home, "run", "bangerd.sock"));
  await client.call("daemon.hello", { protocol: PROTOCOL_VERSION, build: BUILD_VERSION });
  return client;
}

/** Runs one exec to its end; stdin (when given) is written and closed first. */
export async function execCollect(client: RpcClient, params: ParamsOf<"vm.exec">, stdin?: string) {
  let stdout = "";
  let stderr = "";
  const call = client.start(
    "vm.exec",
    { ...params, ...(stdin === undefined ? {} : { stdin: true }) },
    {
      onStream: (ch, data) => {
        if (data === null) return;
        if (ch === "stdout") stdout += data.toString("utf8");
        else stderr += data.toString("utf8");
      },
    },
  );
  if (stdin !== undefined) {
    await call.write("stdin", Buffer.from(stdin));
    call.end("stdin");
  }
  const result = await call.result;
  return { ...result, stdout, stderr };
}
