/*
 * File requests: READ and WRITE streams of one file, and setting the
 * clock.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "agent.h"

/* Copies `len` bytes of a NUL-free path into `out`; -1 if it is empty, too long or holds a NUL. */
static int take_path(const unsigned char *p, size_t len, char *out, size_t cap) {
  if (len == 0 || len >= cap || memchr(p, 0, len)) return -1;
  memcpy(out, p, len);
  out[len] = 0;
  return 0;
}

void on_file(int type, uint32_t id, unsigned char *p, size_t len) {
  char path[4096];
  uint32_t fmode = 0644;
  if (type == BG_WRITE) {
    if (len < 4) { send_error(id, EINVAL, "malformed write request"); return; }
    fmode = get32(p) & 07777;
    p += 4;
    len -= 4;
  }
  if (find_chan(id)) { send_error(id, EEXIST, "channel in use"); return; }
  if (take_path(p, len, path, sizeof path) != 0) { send_error(id, EINVAL, "malformed path"); return; }
  int fd = type == BG_READ ? open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY)
                           : open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOCTTY, fmode);
  if (fd < 0) { send_error(id, errno, path); return; }
  struct chan *c = new_chan(id, type == BG_READ ? K_READ : K_WRITE);
  if (!c) { close(fd); send_error(id, EMFILE, "too many channels"); return; }
  if (type == BG_READ) c->out_fd[1] = fd;
  else c->in_fd = fd;
}

void on_clock(uint32_t id, const unsigned char *p, size_t len) {
  if (len != 12) { send_error(id, EINVAL, "malformed clock request"); return; }
  struct timespec ts;
  ts.tv_sec = (time_t)(((uint64_t)get32(p) << 32) | get32(p + 4));
  ts.tv_nsec = get32(p + 8);
  if (ts.tv_nsec >= 1000000000L) { send_error(id, EINVAL, "nanoseconds out of range"); return; }
  if (clock_settime(CLOCK_REALTIME, &ts) != 0) send_error(id, errno, "clock_settime");
  else send_exit(id, 0, 0);
}

