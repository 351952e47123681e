/**
 * Memory snapshots, pure side: the manifest a snapshot directory holds and
 * the checks a restore must pass (./manifest.ts), QEMU's save and restore
 * plans (./qemu.ts), and the guest commands that give a clone its own
 * identity (./identity.ts). The store and the restore itself live in
 * src/daemon/snapshot; the VMM calls in the drivers' `snapshots` role.
 */
export * from "./identity.ts";
export * from "./manifest.ts";
export * from "./qemu.ts";
