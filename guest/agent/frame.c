/*
 * Frames and channels: the queue of frames for the host, the channel
 * table, the parser of the host's frames with its dispatch, and the
 * credit-limited I/O between a channel's descriptors and its streams.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/wait.h>
#include <termios.h>
#include <unistd.h>

#include "agent.h"

struct chan chans[MAX_CHANNELS];
unsigned char *outq;
size_t outq_len;
static size_t outq_cap;
/* Until a HELLO arrives, input is scanned for one and everything else discarded. */
static int hunting = 1;

/* Queues one frame for the host; frames to a vanished host are dropped. */
void send_frame(int type, int stream, uint32_t id, const void *payload, size_t len) {
  if (!connected) return;
  size_t need = outq_len + BG_HEADER + len;
  if (need > outq_cap) {
    size_t cap = outq_cap ? outq_cap : 65536;
    while (cap < need) cap *= 2;
    unsigned char *grown = realloc(outq, cap);
    if (!grown) { logmsg("%s", "out of memory"); exit(1); }
    outq = grown;
    outq_cap = cap;
  }
  unsigned char *h = outq + outq_len;
  h[0] = BG_MAGIC >> 8; h[1] = BG_MAGIC & 0xff; h[2] = type; h[3] = stream;
  put32(h + 4, id);
  put32(h + 8, (uint32_t)len);
  if (len) memcpy(h + BG_HEADER, payload, len);
  outq_len = need;
}

void send_u32(int type, int stream, uint32_t id, uint32_t v) {
  unsigned char b[4];
  put32(b, v);
  send_frame(type, stream, id, b, 4);
}

void send_exit(uint32_t id, int32_t code, uint32_t sig) {
  unsigned char b[8];
  put32(b, (uint32_t)code);
  put32(b + 4, sig);
  send_frame(BG_EXIT, 0, id, b, 8);
}

void send_error_text(uint32_t id, int err, const char *msg) {
  unsigned char b[4 + 1024];
  size_t n = strnlen(msg, 1024);
  put32(b, (uint32_t)err);
  memcpy(b + 4, msg, n);
  send_frame(BG_ERROR, 0, id, b, 4 + n);
}

void send_error(uint32_t id, int err, const char *what) {
  char msg[1024];
  snprintf(msg, sizeof msg, "%s: %s", what, strerror(err));
  send_error_text(id, err, msg);
}

struct chan *find_chan(uint32_t id) {
  for (int i = 0; i < MAX_CHANNELS; i++)
    if (chans[i].used && chans[i].id == id) return &chans[i];
  return NULL;
}

struct chan *new_chan(uint32_t id, enum kind kind) {
  for (int i = 0; i < MAX_CHANNELS; i++) {
    if (chans[i].used) continue;
    struct chan *c = &chans[i];
    memset(c, 0, sizeof *c);
    c->used = 1;
    c->id = id;
    c->kind = kind;
    c->in_fd = c->out_fd[0] = c->out_fd[1] = c->out_fd[2] = -1;
    c->lane_listen = c->lane_conn = -1;
    c->credit[1] = c->credit[2] = BG_WINDOW;
    return c;
  }
  return NULL;
}

/* Forgets a channel; a process still running loses its whole group. */
void drop_chan(struct chan *c) {
  if (c->kind == K_EXEC && c->pid > 0 && !c->exited) kill(-c->pid, SIGKILL);
  close_fd(&c->in_fd);
  close_fd(&c->out_fd[1]);
  close_fd(&c->out_fd[2]);
  close_fd(&c->lane_listen);
  close_fd(&c->lane_conn);
  free(c->inbuf);
  c->inbuf = NULL;
  c->used = 0;
}

void reset_session(void) {
  for (int i = 0; i < MAX_CHANNELS; i++)
    if (chans[i].used) drop_chan(&chans[i]);
  hunting = 1;
}

/* ---- frames from the host ---- */

static void protocol_error(const char *why) {
  logmsg("protocol error (%s); session reset", why);
  reset_session();
}

static void on_stdin(struct chan *c, int type, const unsigned char *p, size_t len) {
  if (type == BG_EOF) {
    c->in_eof = 1;
    return;
  }
  if (c->in_fd < 0 || c->in_eof) {
    /* Nobody reads it any more; hand the credit back so the host is never stuck. */
    if (len) send_u32(BG_CREDIT, BG_STDIN, c->id, (uint32_t)len);
    return;
  }
  if (c->inlen + len > BG_WINDOW) { protocol_error("stdin beyond the credit window"); return; }
  unsigned char *grown = realloc(c->inbuf, c->inlen + len);
  if (!grown) { logmsg("%s", "out of memory"); exit(1); }
  c->inbuf = grown;
  memcpy(c->inbuf + c->inlen, p, len);
  c->inlen += len;
}

static void on_frame(int type, int stream, uint32_t id, unsigned char *p, size_t len) {
  struct chan *c;
  switch (type) {
  case BG_HELLO: {
    reset_session();
    hunting = 0;
    unsigned char b[4 + 64];
    put32(b, BG_PROTOCOL);
    int n = snprintf((char *)b + 4, 64, "%s", BANGER_AGENT_VERSION);
    send_frame(BG_HELLO, 0, 0, b, 4 + (size_t)(n < 64 ? n : 63));
    return;
  }
  case BG_EXEC: on_exec(id, p, len); return;
  case BG_READ:
  case BG_WRITE: on_file(type, id, p, len); return;
  case BG_CLOCK: on_clock(id, p, len); return;
  case BG_LANE: on_lane(id, p, len); return;
  case BG_STAT:
  case BG_LIST:
  case BG_MKDIR:
  case BG_LINK:
  case BG_SETATTR: on_tree(type, id, p, len); return;
  default: break;
  }
  if (!(c = find_chan(id))) return; /* a channel that already ended: late frames are normal */
  switch (type) {
  case BG_DATA:
  case BG_EOF:
    if (stream == BG_STDIN) on_stdin(c, type, p, len);
    return;
  case BG_CREDIT:
    if (len == 4 && (stream == BG_STDOUT || stream == BG_STDERR)) {
      uint64_t sum = (uint64_t)c->credit[stream] + get32(p);
      c->credit[stream] = sum > 0x7fffffff ? 0x7fffffff : (uint32_t)sum;
    }
    return;
  case BG_SIGNAL:
    if (len == 4 && c->kind == K_EXEC && !c->exited && get32(p) >= 1 && get32(p) <= 64)
      kill(-c->pid, (int)get32(p));
    return;
  case BG_RESIZE:
    if (len == 4 && c->tty && c->out_fd[1] >= 0) {
      struct winsize ws = {.ws_col = (unsigned short)(get32(p) >> 16), .ws_row = (unsigned short)(get32(p) & 0xffff)};
      ioctl(c->out_fd[1], TIOCSWINSZ, &ws);
    }
    return;
  case BG_CLOSE: drop_chan(c); return;
  default: return;
  }
}

/* While hunting, only a HELLO header resynchronises. */
size_t parse_input(unsigned char *buf, size_t len) {
  size_t at = 0;
  while (len - at >= BG_HEADER) {
    unsigned char *h = buf + at;
    uint32_t magic = (uint32_t)h[0] << 8 | h[1];
    int type = h[2], stream = h[3];
    uint32_t plen = get32(h + 8);
    if (hunting && !(magic == BG_MAGIC && type == BG_HELLO && plen == 4)) { at++; continue; }
    if (magic != BG_MAGIC || type < 1 || type > BG_TYPE_MAX || stream > 2 || plen > BG_MAX_PAYLOAD) {
      protocol_error("bad frame header");
      at++;
      continue;
    }
    if (len - at < BG_HEADER + plen) break;
    on_frame(type, stream, get32(h + 4), h + BG_HEADER, plen);
    at += BG_HEADER + plen;
  }
  return at;
}

/* ---- channel I/O ---- */

void pump_output(struct chan *c, int s) {
  static unsigned char buf[BG_MAX_PAYLOAD];
  size_t want = c->credit[s] < sizeof buf ? c->credit[s] : sizeof buf;
  ssize_t n = read(c->out_fd[s], buf, want);
  if (n > 0) {
    send_frame(BG_DATA, s, c->id, buf, (size_t)n);
    c->credit[s] -= (uint32_t)n;
  } else if (n == 0 || (errno != EAGAIN && errno != EINTR)) {
    /* EIO is how a PTY master says every slave is closed. */
    if (n < 0 && errno != EIO && c->kind == K_READ) {
      send_error(c->id, errno, "read");
      drop_chan(c);
      return;
    }
    close_fd(&c->out_fd[s]);
    if (c->tty) close_fd(&c->in_fd);
    send_frame(BG_EOF, s, c->id, NULL, 0);
  }
}

void pump_input(struct chan *c) {
  if (c->inlen > 0) {
    ssize_t n = write(c->in_fd, c->inbuf, c->inlen);
    if (n < 0 && (errno == EAGAIN || errno == EINTR)) return;
    if (n < 0) {
      if (c->kind == K_WRITE) { send_error(c->id, errno, "write"); drop_chan(c); return; }
      /* The process closed its stdin: drop what is queued, keep the host's credit whole. */
      send_u32(BG_CREDIT, BG_STDIN, c->id, (uint32_t)c->inlen);
      c->inlen = 0;
      close_fd(&c->in_fd);
      return;
    }
    memmove(c->inbuf, c->inbuf + n, c->inlen - (size_t)n);
    c->inlen -= (size_t)n;
    send_u32(BG_CREDIT, BG_STDIN, c->id, (uint32_t)n);
  }
  if (c->inlen == 0 && c->in_eof && !c->tty) {
    if (c->kind == K_WRITE) {
      int e = close(c->in_fd);
      c->in_fd = -1;
      if (e != 0) send_error(c->id, errno, "close");
      else send_exit(c->id, 0, 0);
      drop_chan(c);
      return;
    }
    close_fd(&c->in_fd);
  }
}

void finish_if_done(struct chan *c) {
  if (!c->used) return;
  if (c->kind == K_READ && c->out_fd[1] < 0) {
    send_exit(c->id, 0, 0);
    drop_chan(c);
  } else if (c->kind == K_EXEC && c->exited && c->out_fd[1] < 0 && c->out_fd[2] < 0) {
    if (WIFSIGNALED(c->status)) send_exit(c->id, -1, (uint32_t)WTERMSIG(c->status));
    else send_exit(c->id, WEXITSTATUS(c->status), 0);
    drop_chan(c);
  }
}
