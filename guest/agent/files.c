/*
 * File requests: READ and WRITE streams of one file, the tree requests
 * (STAT, LIST, MKDIR, LINK, SETATTR) that let the host copy whole trees
 * without any program in the guest, and setting the clock.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "agent.h"

int take_path(const unsigned char *p, size_t len, char *out, size_t cap) {
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


/* ---- tree requests ---- */

static void put64(unsigned char *p, uint64_t v) {
  put32(p, (uint32_t)(v >> 32));
  put32(p + 4, (uint32_t)v);
}

static void put16(unsigned char *p, unsigned v) {
  p[0] = (unsigned char)(v >> 8);
  p[1] = (unsigned char)v;
}

/* Appends one entry record for `st` (named `name`, pointing at `link`) to `out`; returns its size. */
static size_t entry_record(unsigned char *out, const struct stat *st, const char *name, size_t name_len,
                           const char *link, size_t link_len) {
  put32(out, (uint32_t)st->st_mode);
  put32(out + 4, (uint32_t)st->st_uid);
  put32(out + 8, (uint32_t)st->st_gid);
  put64(out + 12, (uint64_t)st->st_size);
  put64(out + 20, (uint64_t)(int64_t)st->st_mtim.tv_sec);
  put32(out + 28, (uint32_t)st->st_mtim.tv_nsec);
  put16(out + 32, (unsigned)name_len);
  put16(out + 34, (unsigned)link_len);
  memcpy(out + BG_ENTRY, name, name_len);
  memcpy(out + BG_ENTRY + name_len, link, link_len);
  return BG_ENTRY + name_len + link_len;
}

/* A symlink's target into `link` (cap PATH_MAX); its length, 0 for anything else. */
static size_t link_target(int dirfd, const char *path, const struct stat *st, char *link) {
  if (!S_ISLNK(st->st_mode)) return 0;
  ssize_t n = readlinkat(dirfd, path, link, PATH_MAX);
  return n > 0 ? (size_t)n : 0;
}

static void on_stat(uint32_t id, const unsigned char *p, size_t len) {
  static unsigned char rec[BG_ENTRY + PATH_MAX];
  char path[4096], link[PATH_MAX];
  if (len < 4 || take_path(p + 4, len - 4, path, sizeof path) != 0) { send_error(id, EINVAL, "malformed stat request"); return; }
  struct stat st;
  int follow = get32(p) & BG_FOLLOW;
  if ((follow ? stat(path, &st) : lstat(path, &st)) != 0) { send_error(id, errno, path); return; }
  size_t link_len = follow ? 0 : link_target(AT_FDCWD, path, &st, link);
  send_frame(BG_DATA, BG_STDOUT, id, rec, entry_record(rec, &st, "", 0, link, link_len));
  send_exit(id, 0, 0);
}

/* Every child of a directory (not . or ..), lstat'ed, packed into DATA frames of whole records. */
static void on_list(uint32_t id, const unsigned char *p, size_t len) {
  static unsigned char frame[BG_MAX_PAYLOAD];
  char path[4096], link[PATH_MAX];
  if (take_path(p, len, path, sizeof path) != 0) { send_error(id, EINVAL, "malformed list request"); return; }
  DIR *dir = opendir(path);
  if (!dir) { send_error(id, errno, path); return; }
  size_t used = 0;
  struct dirent *e;
  errno = 0;
  while ((e = readdir(dir))) {
    if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0) continue;
    struct stat st;
    if (fstatat(dirfd(dir), e->d_name, &st, AT_SYMLINK_NOFOLLOW) != 0) continue; /* gone meanwhile */
    size_t name_len = strlen(e->d_name);
    size_t link_len = link_target(dirfd(dir), e->d_name, &st, link);
    if (used + BG_ENTRY + name_len + link_len > sizeof frame) {
      send_frame(BG_DATA, BG_STDOUT, id, frame, used);
      used = 0;
    }
    used += entry_record(frame + used, &st, e->d_name, name_len, link, link_len);
    errno = 0;
  }
  int err = errno;
  closedir(dir);
  if (used) send_frame(BG_DATA, BG_STDOUT, id, frame, used);
  if (err) send_error(id, err, path);
  else send_exit(id, 0, 0);
}

struct attrs {
  uint32_t flags, mode, uid, gid;
  struct timespec mtime;
};

static int take_attrs(const unsigned char *p, size_t len, struct attrs *a) {
  if (len < BG_ATTRS) return -1;
  a->flags = get32(p);
  a->mode = get32(p + 4) & 07777;
  a->uid = get32(p + 8);
  a->gid = get32(p + 12);
  a->mtime.tv_sec = (time_t)(((uint64_t)get32(p + 16) << 32) | get32(p + 20));
  a->mtime.tv_nsec = get32(p + 24);
  return a->mtime.tv_nsec < 1000000000L ? 0 : -1;
}

/* Owner first (chown clears set-id bits), then mode (never through a symlink), then mtime. */
static int apply_attrs(const char *path, const struct attrs *a) {
  struct stat st;
  if (lstat(path, &st) != 0) return -1;
  if (a->flags & BG_SET_OWNER && lchown(path, a->uid, a->gid) != 0) return -1;
  if (a->flags & BG_SET_MODE && !S_ISLNK(st.st_mode) && chmod(path, a->mode) != 0) return -1;
  if (a->flags & BG_SET_MTIME) {
    struct timespec times[2] = {{.tv_nsec = UTIME_OMIT}, a->mtime};
    if (utimensat(AT_FDCWD, path, times, AT_SYMLINK_NOFOLLOW) != 0) return -1;
  }
  return 0;
}

static void on_tree_change(int type, uint32_t id, const unsigned char *p, size_t len) {
  struct attrs a;
  char path[4096], target[4096];
  if (take_attrs(p, len, &a) != 0) { send_error(id, EINVAL, "malformed attributes"); return; }
  p += BG_ATTRS;
  len -= BG_ATTRS;
  size_t path_len = len;
  if (type == BG_LINK) {
    const unsigned char *nul = memchr(p, 0, len);
    if (!nul || take_path(nul + 1, len - (size_t)(nul - p) - 1, target, sizeof target) != 0) {
      send_error(id, EINVAL, "malformed link request");
      return;
    }
    path_len = (size_t)(nul - p);
  }
  if (take_path(p, path_len, path, sizeof path) != 0) { send_error(id, EINVAL, "malformed path"); return; }
  struct stat st;
  switch (type) {
  case BG_MKDIR:
    if (mkdir(path, 0700) != 0 && !(errno == EEXIST && stat(path, &st) == 0 && S_ISDIR(st.st_mode))) {
      send_error(id, errno, path);
      return;
    }
    break;
  case BG_LINK:
    /* Like tar: what is in the way (not a directory) is replaced. */
    if (lstat(path, &st) == 0 && !S_ISDIR(st.st_mode)) unlink(path);
    if ((a.flags & BG_HARD ? link(target, path) : symlink(target, path)) != 0) {
      send_error(id, errno, path);
      return;
    }
    if (a.flags & BG_HARD) a.flags = 0;
    break;
  default: break;
  }
  if (apply_attrs(path, &a) != 0) send_error(id, errno, path);
  else send_exit(id, 0, 0);
}

void on_tree(int type, uint32_t id, unsigned char *p, size_t len) {
  if (find_chan(id)) { send_error(id, EEXIST, "channel in use"); return; }
  if (type == BG_STAT) on_stat(id, p, len);
  else if (type == BG_LIST) on_list(id, p, len);
  else on_tree_change(type, id, p, len);
}
