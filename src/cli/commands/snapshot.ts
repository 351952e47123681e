/**
 * Memory snapshots: `banger vm snapshot`, `banger vm fork` and
 * `banger snapshot ls|show|rm`. (`vm create --from` and `vm run --from` are
 * options of those commands in vm.ts.)
 */
import type { Command } from "commander";
import { BangerError, ErrorCode, type SnapshotInfo } from "../../protocol/index.ts";
import { type CliContext, printJson } from "../context.ts";
import { createProgressRenderer } from "../render/progress.ts";
import { formatAge, formatBytes, formatTable } from "../render/table.ts";
import { syncAuthAfterStart } from "./auth.ts";

/** `vm snapshot` and `vm fork`, under the `vm` noun. */
export function registerVmSnapshotCommands(vm: Command, ctx: CliContext): void {
  vm.command("snapshot <name> [snapshot]")
    .description("save a running VM's memory and disk as a snapshot; the VM goes on running")
    .option(
      "--include-secrets",
      "snapshot a VM that `vm auth sync` wrote credentials into (they are in the snapshot)",
    )
    .option("--json", "print the snapshot as JSON")
    .addHelpText(
      "after",
      "\nA snapshot holds the guest's whole memory and disk: anything the VM held (tokens, keys) is in it.\n\nExamples:\n  banger vm snapshot web\n  banger vm snapshot web warm && banger vm run --rm --from warm -- make test",
    )
    .action(
      async (
        name: string,
        snapshot: string | undefined,
        options: { includeSecrets?: boolean; json?: boolean },
      ) => {
        const client = await ctx.client();
        const progress = createProgressRenderer(ctx.stderr, false);
        try {
          const info = await client.call(
            "vm.snapshot",
            {
              name,
              ...(snapshot === undefined ? {} : { snapshot }),
              ...(options.includeSecrets ? { includeSecrets: true } : {}),
            },
            { onProgress: (event) => progress.onProgress(event) },
          );
          progress.finish();
          if (options.json) printJson(ctx, info);
          else ctx.stdout.write(`${info.name}\n`);
        } finally {
          progress.finish();
        }
      },
    );

  vm.command("fork <name> <new>")
    .description("snapshot a running VM and start clones of it, each with its own address, name and keys")
    .option("--count <n>", "how many clones (named NEW-1 … NEW-N when more than one)", "1")
    .option("--include-secrets", "fork a VM that `vm auth sync` wrote credentials into")
    .option("--json", "print the snapshot and the clones as JSON")
    .addHelpText("after", "\nExamples:\n  banger vm fork dev agent\n  banger vm fork dev agent --count 8")
    .action(
      async (
        name: string,
        newName: string,
        options: { count: string; includeSecrets?: boolean; json?: boolean },
      ) => {
        const count = Number(options.count);
        if (!Number.isInteger(count) || count < 1) {
          throw new BangerError(
            ErrorCode.INVALID_PARAMS,
            `--count must be a whole number of at least 1, not '${options.count}'`,
          );
        }
        const client = await ctx.client();
        const progress = createProgressRenderer(ctx.stderr, false);
        try {
          const forked = await client.call(
            "vm.fork",
            { name, newName, count, ...(options.includeSecrets ? { includeSecrets: true } : {}) },
            { onProgress: (event) => progress.onProgress(event) },
          );
          progress.finish();
          for (const clone of forked.vms) await syncAuthAfterStart(ctx, client, clone.name);
          if (options.json) printJson(ctx, forked);
          else for (const clone of forked.vms) ctx.stdout.write(`${clone.name}\n`);
        } finally {
          progress.finish();
        }
      },
    );
}

/** `banger snapshot ls|show|rm`. */
export function registerSnapshotCommands(program: Command, ctx: CliContext): void {
  const snapshot = program.command("snapshot").description("list, show and delete memory snapshots");

  snapshot
    .command("list")
    .alias("ls")
    .description("list snapshots")
    .option("--json", "print JSON")
    .addHelpText("after", "\nExamples:\n  banger snapshot ls\n  banger snapshot ls --json | jq -r '.[].name'")
    .action(async (options: { json?: boolean }) => {
      const { snapshots } = await (await ctx.client()).call("snapshot.list", {});
      if (options.json) {
        printJson(ctx, snapshots);
        return;
      }
      const rows = snapshots.map((s) => [
        s.name,
        s.sourceVm,
        s.image,
        s.vmm,
        `${s.memoryMib}M`,
        formatBytes(s.memoryBytes),
        formatBytes(s.diskBytes),
        String(s.usedBy.length),
        formatAge(s.createdAt),
      ]);
      ctx.stdout.write(
        `${formatTable(["name", "from", "image", "vmm", "memory", "state", "disk", "clones", "created"], rows)}\n`,
      );
    });

  snapshot
    .command("show <name>")
    .alias("inspect")
    .description("show one snapshot")
    .option("--json", "print JSON")
    .addHelpText("after", "\nExamples:\n  banger snapshot show warm\n  banger snapshot show warm --json")
    .action(async (name: string, options: { json?: boolean }) => {
      const info = await (await ctx.client()).call("snapshot.show", { name });
      if (options.json) printJson(ctx, info);
      else ctx.stdout.write(`${describeSnapshot(info)}\n`);
    });

  snapshot
    .command("rm <names...>")
    .alias("delete")
    .description("delete snapshots (refused while a VM's disk depends on one)")
    .addHelpText("after", "\nExamples:\n  banger snapshot rm warm\n  banger snapshot rm a b")
    .action(async (names: string[]) => {
      const client = await ctx.client();
      for (const name of names) {
        await client.call("snapshot.delete", { name });
        ctx.stdout.write(`${name}\n`);
      }
    });
}

function describeSnapshot(s: SnapshotInfo): string {
  return formatTable(
    ["field", "value"],
    [
      ["name", s.name],
      ["id", s.id],
      ["from", s.sourceVm],
      ["image", s.image],
      ["vmm", s.vmm],
      ["cpus", String(s.cpus)],
      ["memory", `${s.memoryMib} MiB`],
      ["disk", `${s.diskGib} GiB`],
      ["state bytes", formatBytes(s.memoryBytes)],
      ["disk bytes", formatBytes(s.diskBytes)],
      ["secrets", s.includesSecrets ? "yes (auth files were synced into the source)" : "no"],
      ["clones", s.usedBy.join(", ") || "-"],
      ["dir", s.dir],
      ["created", `${s.createdAt} (${formatAge(s.createdAt)})`],
    ],
  );
}
