/*
 * banger-agent's internal interface: the channel table and the frame
 * writer every part shares (frame.c), exec (exec.c), file and clock
 * requests (files.c), and the transport with its poll loop (main.c).
 * Single-threaded: one poll loop owns all of it.
 */
#ifndef BANGER_AGENT_H
#define BANGER_AGENT_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "protocol.h"

#ifndef BANGER_AGENT_VERSION
#define BANGER_AGENT_VERSION "dev"
/* reseed.c: `agent reseed` credits stdin to the kernel's pool and forces a CRNG reseed. */
int reseed_from_stdin(void);

#endif
#define MAX_CHANNELS 256
#define OUTQ_HIGH (512 * 1024)

enum kind { K_EXEC = 1, K_READ, K_WRITE, K_LANE };

struct chan {
  int used;
  uint32_t id;
  enum kind kind;
  pid_t pid;
  int exited, status, tty;
  int in_fd;     /* child's stdin, the PTY master (dup) or the file being written */
  int out_fd[3]; /* [1] stdout / PTY master / file being read, [2] stderr */
  uint32_t credit[3];
  unsigned char *inbuf;
  size_t inlen;
  int in_eof;
  /* K_LANE: the listener until the host's connection shows the token, that connection, progress */
  int lane_listen, lane_conn;
  unsigned char token[BG_LANE_TOKEN], token_seen[BG_LANE_TOKEN];
  size_t token_got;
  uint64_t lane_size, lane_done;
};

extern struct chan chans[MAX_CHANNELS];
/* The host is there to send to (frames queued while it is not are dropped). */
extern int connected;
/* Bytes queued for the host; main.c flushes them. */
extern unsigned char *outq;
extern size_t outq_len;

static inline void put32(unsigned char *p, uint32_t v) {
  p[0] = v >> 24; p[1] = v >> 16; p[2] = v >> 8; p[3] = v;
}
static inline uint32_t get32(const unsigned char *p) {
  return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

void logmsg(const char *fmt, const char *arg);
void set_nonblock(int fd);
void set_cloexec(int fd);
void close_fd(int *fd);

/* frame.c: frames out, the channel table, frames in, channel I/O */
void send_frame(int type, int stream, uint32_t id, const void *payload, size_t len);
void send_u32(int type, int stream, uint32_t id, uint32_t v);
void send_exit(uint32_t id, int32_t code, uint32_t sig);
void send_error(uint32_t id, int err, const char *what);
/* An ERROR whose message is `msg` as it is (no strerror appended). */
void send_error_text(uint32_t id, int err, const char *msg);
struct chan *find_chan(uint32_t id);
struct chan *new_chan(uint32_t id, enum kind kind);
void drop_chan(struct chan *c);
void reset_session(void);
/* Parses whole frames from `buf`; returns the bytes consumed (a partial frame stays). */
size_t parse_input(unsigned char *buf, size_t len);
void pump_output(struct chan *c, int s);
void pump_input(struct chan *c);
void finish_if_done(struct chan *c);

/* exec.c */
void on_exec(uint32_t id, unsigned char *p, size_t len);
/* Collects exited children into their channels. */
void reap_children(void);

/* files.c */
/* Copies `len` bytes of a NUL-free path into `out`; -1 if it is empty, too long or holds a NUL. */
int take_path(const unsigned char *p, size_t len, char *out, size_t cap);
void on_file(int type, uint32_t id, unsigned char *p, size_t len);
void on_clock(uint32_t id, const unsigned char *p, size_t len);
/* STAT, LIST, MKDIR, LINK, SETATTR: answered at once, no channel kept. */
void on_tree(int type, uint32_t id, unsigned char *p, size_t len);
/* lane.c */
void on_lane(uint32_t id, unsigned char *p, size_t len);
void lane_accept(struct chan *c);
void lane_read(struct chan *c);

/* reseed.c: `agent reseed` credits stdin to the kernel's pool and forces a CRNG reseed. */
int reseed_from_stdin(void);

#endif
