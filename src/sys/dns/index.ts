/**
 * DNS sockets: the listeners of banger's DNS server (server.ts) and the
 * forwarder to the upstream resolvers (upstream.ts). What to answer is
 * decided in src/core/network (dns-zone.ts) and the daemon's DNS feature.
 */
export * from "./server.ts";
export * from "./upstream.ts";
