/*
 * LANE: a file write whose bytes travel over TCP on the guest's network
 * rather than through the frame stream. Under emulation the frame stream's
 * virtio-serial port moves a page per interrupt; a TCP connection moves
 * whole segments, several times faster. The frame stream stays the only
 * thing the agent trusts: it carries the request with a random token, and
 * the listener (one per request, any port) takes the first connection that
 * opens with that token, closing any other. The request ends, as a WRITE
 * does, with EXIT 0 once exactly `size` bytes are in the file, or ERROR; the
 * host closing the channel drops the listener and the connection.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "agent.h"

static uint64_t get64(const unsigned char *p) { return (uint64_t)get32(p) << 32 | get32(p + 4); }

void on_lane(uint32_t id, unsigned char *p, size_t len) {
  char path[4096];
  if (len < 12 + BG_LANE_TOKEN) { send_error(id, EINVAL, "malformed lane request"); return; }
  uint32_t fmode = get32(p) & 07777;
  uint64_t size = get64(p + 4);
  const unsigned char *token = p + 12;
  if (find_chan(id)) { send_error(id, EEXIST, "channel in use"); return; }
  if (take_path(p + 12 + BG_LANE_TOKEN, len - 12 - BG_LANE_TOKEN, path, sizeof path) != 0) {
    send_error(id, EINVAL, "malformed path");
    return;
  }
  int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOCTTY, fmode);
  if (fd < 0) { send_error(id, errno, path); return; }
  int ls = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = 0, .sin_addr = {htonl(INADDR_ANY)}};
  socklen_t alen = sizeof a;
  if (ls < 0 || bind(ls, (struct sockaddr *)&a, sizeof a) || listen(ls, 4) ||
      getsockname(ls, (struct sockaddr *)&a, &alen)) {
    char why[256];
    snprintf(why, sizeof why, "lane listener: %s", strerror(errno));
    if (ls >= 0) close(ls);
    close(fd);
    /* ENETDOWN, whatever the cause: the host then sends the bytes as a WRITE's frames. */
    send_error_text(id, ENETDOWN, why);
    return;
  }
  struct chan *c = new_chan(id, K_LANE);
  if (!c) { close(ls); close(fd); send_error(id, EMFILE, "too many channels"); return; }
  c->in_fd = fd;
  c->lane_listen = ls;
  c->lane_size = size;
  memcpy(c->token, token, BG_LANE_TOKEN);
  send_u32(BG_DATA, BG_STDOUT, id, ntohs(a.sin_port));
}

/* A connection to the listener; it replaces one that has not yet shown the token. */
void lane_accept(struct chan *c) {
  int fd = accept4(c->lane_listen, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
  if (fd < 0) return;
  close_fd(&c->lane_conn);
  c->lane_conn = fd;
  c->token_got = 0;
}

static int token_matches(const struct chan *c) {
  unsigned char diff = 0;
  for (int i = 0; i < BG_LANE_TOKEN; i++) diff |= (unsigned char)(c->token[i] ^ c->token_seen[i]);
  return diff == 0;
}

static void lane_finish(struct chan *c) {
  int e = close(c->in_fd);
  c->in_fd = -1;
  if (e != 0) send_error(c->id, errno, "close");
  else send_exit(c->id, 0, 0);
  drop_chan(c);
}

void lane_read(struct chan *c) {
  static unsigned char buf[BG_MAX_PAYLOAD * 4];
  if (c->lane_listen >= 0) {
    ssize_t n = read(c->lane_conn, c->token_seen + c->token_got, BG_LANE_TOKEN - c->token_got);
    if (n < 0 && (errno == EAGAIN || errno == EINTR)) return;
    if (n <= 0) { close_fd(&c->lane_conn); return; }
    c->token_got += (size_t)n;
    if (c->token_got < BG_LANE_TOKEN) return;
    if (!token_matches(c)) { close_fd(&c->lane_conn); return; }
    close_fd(&c->lane_listen);
    if (c->lane_size == 0) lane_finish(c);
    return;
  }
  uint64_t left = c->lane_size - c->lane_done;
  /* One byte past the size, so a sender with more than it announced is caught. */
  size_t want = left + 1 < sizeof buf ? (size_t)left + 1 : sizeof buf;
  ssize_t n = read(c->lane_conn, buf, want);
  if (n < 0 && (errno == EAGAIN || errno == EINTR)) return;
  if (n < 0) { send_error(c->id, errno, "lane read"); drop_chan(c); return; }
  if (n == 0) { send_error_text(c->id, EPIPE, "lane: the connection ended before the announced size"); drop_chan(c); return; }
  if ((uint64_t)n > left) { send_error_text(c->id, EINVAL, "lane: more bytes than announced"); drop_chan(c); return; }
  for (ssize_t off = 0; off < n;) {
    ssize_t w = write(c->in_fd, buf + off, (size_t)(n - off));
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) { send_error(c->id, w < 0 ? errno : EIO, "write"); drop_chan(c); return; }
    off += w;
  }
  c->lane_done += (uint64_t)n;
  if (c->lane_done == c->lane_size) lane_finish(c);
}
