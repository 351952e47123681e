/** Layer rules: see ARCHITECTURE.md "Layers". */
module.exports = {
  forbidden: [
    {
      name: "no-circular",
      severity: "error",
      from: {},
      to: { circular: true },
    },
    {
      name: "protocol-is-pure",
      comment:
        "src/protocol holds schemas and codes only; it imports nothing else from src and no node: I/O.",
      severity: "error",
      from: { path: "^src/protocol" },
      to: { pathNot: "^src/protocol|^node_modules/zod", dependencyTypesNot: ["type-only"] },
    },
    {
      name: "core-has-no-io",
      comment:
        "src/core is domain and pure planners: it may use protocol and pure libraries, never sys/daemon/cli or node I/O.",
      severity: "error",
      from: { path: "^src/core" },
      to: {
        path: "^src/(sys|daemon|cli)|^(node:)?(fs|fs/promises|child_process|net|dgram|http|https|os|sqlite)$",
      },
    },
    {
      name: "sys-is-an-adapter",
      comment: "src/sys adapts the OS; it never reaches up into services or the CLI.",
      severity: "error",
      from: { path: "^src/sys" },
      to: { path: "^src/(daemon|cli)" },
    },
    {
      name: "cli-talks-protocol",
      comment: "the CLI talks to the daemon only through the protocol; it never imports daemon or sys code.",
      severity: "error",
      from: { path: "^src/cli" },
      to: { path: "^src/(daemon|sys)" },
    },
    {
      name: "daemon-not-cli",
      severity: "error",
      from: { path: "^src/daemon" },
      to: { path: "^src/cli" },
    },
    {
      name: "sys-implementations-only-in-composition-root",
      comment:
        "services receive sys adapters through interfaces; only the composition root (and entry) imports them for real.",
      severity: "error",
      from: { path: "^src/daemon", pathNot: "^src/daemon/(compose/|main\\.ts$)" },
      to: { path: "^src/sys", dependencyTypesNot: ["type-only"] },
    },
  ],
  options: {
    doNotFollow: { path: "node_modules" },
    tsPreCompilationDeps: true,
    tsConfig: { fileName: "tsconfig.json" },
    enhancedResolveOptions: {
      exportsFields: ["exports"],
      conditionNames: ["import", "require", "node", "default"],
    },
  },
};
