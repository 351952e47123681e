/*
 * Not part of the agent's protocol: a one-shot command of the same binary,
 * run through an exec when a clone takes its identity (see
 * src/core/snapshot/identity.ts).
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include "agent.h"

/*
 * `agent reseed`: a clone's RNG. Mixes up to 512 bytes of stdin into the
 * kernel's pool, credited (RNDADDENTROPY), then forces the CRNG to reseed
 * from it at once (RNDRESEEDCRNG): without the reseed, clones of one
 * snapshot would read the same random bytes until the kernel's next
 * periodic reseed. Needs CAP_SYS_ADMIN; exits 0 only when both succeed.
 */
#define RESEED_MAX 512
int reseed_from_stdin(void) {
  static struct { int entropy_count; int buf_size; unsigned char buf[RESEED_MAX]; } pool;
  size_t have = 0;
  for (;;) {
    ssize_t r = read(0, pool.buf + have, RESEED_MAX - have);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) break;
    have += (size_t)r;
    if (have == RESEED_MAX) break;
  }
  if (have < 32) { fprintf(stderr, "reseed: %zu bytes on stdin; need at least 32\n", have); return 2; }
  int fd = open("/dev/urandom", O_WRONLY | O_CLOEXEC);
  if (fd < 0) { perror("reseed: /dev/urandom"); return 1; }
  pool.buf_size = (int)have;
  pool.entropy_count = (int)have * 8;
  /* RNDADDENTROPY = _IOW('R', 0x03, int[2]); RNDRESEEDCRNG = _IO('R', 0x07). */
  if (ioctl(fd, 0x40085203, &pool) != 0) { perror("reseed: RNDADDENTROPY"); close(fd); return 1; }
  if (ioctl(fd, 0x5207) != 0) { perror("reseed: RNDRESEEDCRNG"); close(fd); return 1; }
  close(fd);
  return 0;
}
