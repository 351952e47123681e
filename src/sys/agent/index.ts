/**
 * The host side of the guest channel: connecting to a VM's agent (QEMU's
 * virtio-serial Unix-socket chardev, or Firecracker's hybrid vsock socket
 * with its `CONNECT PORT` handshake), the HELLO readiness wait, and the
 * multiplexed session (session.ts). Also where the built agent binary lives
 * and the initramfs fragment that carries it into a guest (initrd.ts).
 */
export { createGuestAgents, type GuestAgentsAdapter } from "./guest-agents.ts";
export { agentBinaryPath } from "./initrd.ts";
export type { AgentExecOptions, AgentFiles, AgentProcess, AgentSession, ExecResult } from "./session.ts";
