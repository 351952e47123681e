/*
 * banger guest channel, protocol version 3 (the host side is
 * src/core/agent; ARCHITECTURE.md "Guest channel" is the spec). Version 2
 * added the tree requests STAT..SETATTR, version 3 the LANE request; a host
 * does not send an older agent what it lacks.
 *
 * One byte stream carries frames. Every frame is a 12-byte header, all
 * integers big-endian:
 *   u16 magic (0x6267 "bg") | u8 type | u8 stream | u32 channel | u32 length
 * followed by `length` payload bytes (at most BG_MAX_PAYLOAD). A frame with a
 * bad magic, an unknown type or an oversize length is a protocol error: the
 * agent drops every channel (killing their process groups) and discards
 * input until the next HELLO header.
 */
#ifndef BANGER_AGENT_PROTOCOL_H
#define BANGER_AGENT_PROTOCOL_H

#define BG_MAGIC 0x6267u
#define BG_PROTOCOL 3u
#define BG_HEADER 12
#define BG_MAX_PAYLOAD 65536u
/* Bytes a sender may have in flight per channel stream before a CREDIT. */
#define BG_WINDOW 262144u

enum bg_type {
  BG_HELLO = 1,  /* h->a: u32 protocol. a->h: u32 protocol, agent version text. Resets the session. */
  BG_EXEC = 2,   /* h->a: NUL-terminated "tag=value" records, see agent.c parse_exec */
  BG_DATA = 3,   /* both: bytes of `stream` */
  BG_EOF = 4,    /* both: `stream` ends */
  BG_CREDIT = 5, /* both: u32 more bytes the peer may send on `stream` */
  BG_SIGNAL = 6, /* h->a: u32 Linux signal number, to the process group */
  BG_RESIZE = 7, /* h->a: u16 cols, u16 rows */
  BG_EXIT = 8,   /* a->h: i32 exit code (-1 when killed), u32 signal (0 when exited); ends the channel */
  BG_ERROR = 9,  /* a->h: u32 errno, message text; ends the channel */
  BG_CLOSE = 10, /* h->a: SIGKILL the group and forget the channel */
  BG_READ = 11,  /* h->a: path; file bytes come as DATA on stream 1, then EOF and EXIT 0 */
  BG_WRITE = 12, /* h->a: u32 mode, path; DATA on stream 0 then EOF, answered by EXIT 0 */
  BG_CLOCK = 13, /* h->a: i64 seconds, u32 nanoseconds of CLOCK_REALTIME; answered by EXIT 0 */
  /* Tree requests, each answered by EXIT 0 or ERROR (files.c has the encodings). */
  BG_STAT = 14,    /* h->a: u32 flags (BG_FOLLOW), path; one entry record as DATA on stream 1 */
  BG_LIST = 15,    /* h->a: path of a directory; an entry record per child as DATA on stream 1 */
  BG_MKDIR = 16,   /* h->a: attrs, path; an existing directory is kept and given the attrs */
  BG_LINK = 17,    /* h->a: attrs, path, NUL, target; a symlink (a hard link with BG_HARD) */
  BG_SETATTR = 18, /* h->a: attrs, path; owner, then mode, then mtime, never following a symlink */
  /* h->a: u32 mode, u64 size, token, path. A WRITE whose bytes come over TCP (lane.c): the agent
   * answers DATA on stream 1 with its u32 listening port, takes the first connection that opens
   * with the token, writes `size` bytes from it, and answers EXIT 0. */
  BG_LANE = 19,
  BG_TYPE_MAX = 19
};

/* STAT flags */
#define BG_FOLLOW 1u
/* attrs: u32 flags | u32 mode | u32 uid | u32 gid | i64 mtime seconds | u32 nanoseconds */
#define BG_ATTRS 28
#define BG_SET_MODE 1u
#define BG_SET_OWNER 2u
#define BG_SET_MTIME 4u
#define BG_HARD 8u
/* entry record: u32 st_mode | u32 uid | u32 gid | u64 size | i64 mtime seconds | u32 nanoseconds
 * | u16 name length | u16 link length | name | symlink target */
#define BG_ENTRY 36

/* LANE: the token's length */
#define BG_LANE_TOKEN 16
enum bg_stream { BG_STDIN = 0, BG_STDOUT = 1, BG_STDERR = 2 };

#endif
