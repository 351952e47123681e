/*
 * banger-agent: banger's guest agent. A static binary (musl) that banger
 * injects at /.banger/agent and banger-init starts before anything else. It
 * serves one host session at a time over one byte stream (protocol.h):
 * exec of an argv with env, cwd, user and an optional PTY, stdin/stdout/
 * stderr with per-stream credits, signals to the process group, file read and
 * write streams and setting the clock. It trusts only that stream: it opens
 * no other socket, and nothing in the guest can speak through it to the host
 * beyond what the protocol lets a channel's own process write on its stdout.
 *
 * Transports (chosen at start):
 *   --fd N           an inherited connected stream (tests: a socketpair); EOF ends the agent
 *   --port PATH      a virtio-serial port; the host closing its end resets the session
 *   --vsock PORT     listen on AF_VSOCK; each accepted connection is a new session
 *   (no option)      the virtio port named "banger.0" if present, else vsock port 7100
 * Single-threaded: one poll loop, SIGCHLD through a self-pipe.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <poll.h>
#include <pwd.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <termios.h>
#include <time.h>
#include <dirent.h>
#include <unistd.h>

#include "protocol.h"

/* <linux/vm_sockets.h> is not in musl's headers; this is its stable ABI. */
#ifndef AF_VSOCK
#define AF_VSOCK 40
#endif
#define VMADDR_CID_ANY 0xffffffffu
struct sockaddr_vm {
  sa_family_t svm_family;
  unsigned short svm_reserved1;
  unsigned int svm_port;
  unsigned int svm_cid;
  unsigned char svm_zero[sizeof(struct sockaddr) - sizeof(sa_family_t) - sizeof(unsigned short) - 2 * sizeof(unsigned int)];
};

#ifndef BANGER_AGENT_VERSION
#define BANGER_AGENT_VERSION "dev"
#endif
#define DEFAULT_VSOCK_PORT 7100
#define MAX_CHANNELS 256
#define MAX_RECORDS 4096
#define OUTQ_HIGH (512 * 1024)

enum kind { K_EXEC = 1, K_READ, K_WRITE };
enum mode { M_FD, M_SERIAL, M_VSOCK };

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
};

static struct chan chans[MAX_CHANNELS];
static enum mode mode;
static int conn = -1, listen_fd = -1, connected, hunting = 1;
static const char *serial_path;
static int sigchld_pipe[2];
static unsigned char rbuf[2 * (BG_HEADER + BG_MAX_PAYLOAD)];
static size_t rlen;
static unsigned char *outq;
static size_t outq_len, outq_cap;

static void logmsg(const char *fmt, const char *arg) {
  fprintf(stderr, "banger-agent: ");
  fprintf(stderr, fmt, arg);
  fputc('\n', stderr);
}

static void put32(unsigned char *p, uint32_t v) {
  p[0] = v >> 24; p[1] = v >> 16; p[2] = v >> 8; p[3] = v;
}
static uint32_t get32(const unsigned char *p) {
  return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static void set_nonblock(int fd) { fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK); }
static void set_cloexec(int fd) { fcntl(fd, F_SETFD, FD_CLOEXEC); }

/* Queues one frame for the host; frames to a vanished host are dropped. */
static void send_frame(int type, int stream, uint32_t id, const void *payload, size_t len) {
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

static void send_u32(int type, int stream, uint32_t id, uint32_t v) {
  unsigned char b[4];
  put32(b, v);
  send_frame(type, stream, id, b, 4);
}

static void send_exit(uint32_t id, int32_t code, uint32_t sig) {
  unsigned char b[8];
  put32(b, (uint32_t)code);
  put32(b + 4, sig);
  send_frame(BG_EXIT, 0, id, b, 8);
}

static void send_error_text(uint32_t id, int err, const char *msg) {
  unsigned char b[4 + 1024];
  size_t n = strnlen(msg, 1024);
  put32(b, (uint32_t)err);
  memcpy(b + 4, msg, n);
  send_frame(BG_ERROR, 0, id, b, 4 + n);
}

static void send_error(uint32_t id, int err, const char *what) {
  char msg[1024];
  snprintf(msg, sizeof msg, "%s: %s", what, strerror(err));
  send_error_text(id, err, msg);
}

static struct chan *find_chan(uint32_t id) {
  for (int i = 0; i < MAX_CHANNELS; i++)
    if (chans[i].used && chans[i].id == id) return &chans[i];
  return NULL;
}

static struct chan *new_chan(uint32_t id, enum kind kind) {
  for (int i = 0; i < MAX_CHANNELS; i++) {
    if (chans[i].used) continue;
    struct chan *c = &chans[i];
    memset(c, 0, sizeof *c);
    c->used = 1;
    c->id = id;
    c->kind = kind;
    c->in_fd = c->out_fd[0] = c->out_fd[1] = c->out_fd[2] = -1;
    c->credit[1] = c->credit[2] = BG_WINDOW;
    return c;
  }
  return NULL;
}

static void close_fd(int *fd) {
  if (*fd >= 0) close(*fd);
  *fd = -1;
}

/* Forgets a channel; a process still running loses its whole group. */
static void drop_chan(struct chan *c) {
  if (c->kind == K_EXEC && c->pid > 0 && !c->exited) kill(-c->pid, SIGKILL);
  close_fd(&c->in_fd);
  close_fd(&c->out_fd[1]);
  close_fd(&c->out_fd[2]);
  free(c->inbuf);
  c->inbuf = NULL;
  c->used = 0;
}

static void reset_session(void) {
  for (int i = 0; i < MAX_CHANNELS; i++)
    if (chans[i].used) drop_chan(&chans[i]);
  hunting = 1;
}

/* ---- exec ---- */

struct exec_req {
  char *argv[MAX_RECORDS + 1];
  char *env[MAX_RECORDS + 8];
  int argc, envc;
  const char *cwd, *user;
  int tty, stdin_pipe, detach;
  unsigned short cols, rows;
  /* `user` resolved by resolve_user, in the agent before the fork. */
  uid_t uid;
  gid_t gid;
  int own_groups; /* no group given: the user's own primary and supplementary groups */
  char user_name[256], user_home[2048];
};

/* Records are "a=ARG", "e=K=V", "w=DIR", "u=USER", "t=COLS,ROWS", "i=1" (stdin is a pipe),
 * "d=1" (detached: stdio on /dev/null, answered EXIT 0 at once, outlives the session), each NUL-terminated. */
static int parse_exec(unsigned char *p, size_t len, struct exec_req *r) {
  memset(r, 0, sizeof *r);
  if (len == 0 || p[len - 1] != 0) return -1;
  size_t at = 0;
  while (at < len) {
    char *rec = (char *)p + at;
    size_t n = strlen(rec);
    at += n + 1;
    if (n < 2 || rec[1] != '=') return -1;
    char *v = rec + 2;
    switch (rec[0]) {
    case 'a':
      if (r->argc >= MAX_RECORDS) return -1;
      r->argv[r->argc++] = v;
      break;
    case 'e':
      if (r->envc >= MAX_RECORDS || !strchr(v, '=') || v[0] == '=') return -1;
      r->env[r->envc++] = v;
      break;
    case 'w': r->cwd = v; break;
    case 'u': r->user = v; break;
    case 'i': r->stdin_pipe = 1; break;
    case 'd': r->detach = 1; break;
    case 't': {
      unsigned cols, rows;
      if (sscanf(v, "%u,%u", &cols, &rows) != 2 || cols > 65535 || rows > 65535) return -1;
      r->tty = 1;
      r->cols = (unsigned short)cols;
      r->rows = (unsigned short)rows;
      break;
    }
    default: return -1;
    }
  }
  return r->argc ? 0 : -1;
}

static int has_key(char **env, int envc, const char *kv) {
  size_t k = strcspn(kv, "=");
  for (int i = 0; i < envc; i++)
    if (strncmp(env[i], kv, k) == 0 && env[i][k] == '=') return 1;
  return 0;
}

static void child_fail(const char *what, const char *arg, int code) {
  dprintf(2, "banger-agent: %s %s: %s\n", what, arg, strerror(errno));
  _exit(code);
}

/* Closes every descriptor above stderr, whatever the agent inherited (close_range, else a loop). */
static void close_extra_fds(void) {
#ifdef SYS_close_range
  if (syscall(SYS_close_range, 3u, ~0u, 0u) == 0) return;
#endif
  for (int fd = 3; fd < 4096; fd++) close(fd);
}

/* Digits only, at most a uid_t: the number in *out. */
static int parse_id(const char *s, unsigned long *out) {
  char *end;
  if (!*s || strspn(s, "0123456789") != strlen(s) || strlen(s) > 10) return 0;
  *out = strtoul(s, &end, 10);
  return *out <= 0xfffffffeUL;
}

/*
 * docker's "user[:group]": each part a name from the guest's /etc/passwd or
 * /etc/group, or a number. A uid with no passwd entry runs with gid 0 and
 * HOME=/; with a group, the process has that group only. -1 with `why`
 * filled when a name is unknown.
 */
static int resolve_user(struct exec_req *r, char *why, size_t cap) {
  char spec[256];
  if (snprintf(spec, sizeof spec, "%s", r->user) >= (int)sizeof spec) {
    snprintf(why, cap, "user '%.64s...' is too long", r->user);
    return -1;
  }
  char *group = strchr(spec, ':');
  if (group) *group++ = 0;
  unsigned long n;
  int numeric = parse_id(spec, &n);
  struct passwd *pw = numeric ? getpwuid((uid_t)n) : getpwnam(spec);
  if (!pw && !numeric) {
    snprintf(why, cap, "unknown user '%s': the guest's /etc/passwd has no such user", spec);
    return -1;
  }
  r->uid = pw ? pw->pw_uid : (uid_t)n;
  r->gid = pw ? pw->pw_gid : 0;
  snprintf(r->user_name, sizeof r->user_name, "%s", pw ? pw->pw_name : spec);
  snprintf(r->user_home, sizeof r->user_home, "%s", pw && pw->pw_dir && *pw->pw_dir ? pw->pw_dir : "/");
  r->own_groups = pw && !group;
  if (group) {
    struct group *gr = parse_id(group, &n) ? NULL : getgrnam(group);
    if (!gr && !parse_id(group, &n)) {
      snprintf(why, cap, "unknown group '%s': the guest's /etc/group has no such group", group);
      return -1;
    }
    r->gid = gr ? gr->gr_gid : (gid_t)n;
  }
  return 0;
}

/* In the child: session, user, environment, directory, then exec. Never returns. */
static void child_exec(struct exec_req *r) {
  close_extra_fds();
  sigset_t none;
  sigemptyset(&none);
  sigprocmask(SIG_SETMASK, &none, NULL);
  for (int s = 1; s < 65; s++) signal(s, SIG_DFL);

  const char *home = "/", *name = "root";
  if (r->user) {
    name = r->user_name;
    home = r->user_home;
    if (r->own_groups ? initgroups(name, r->gid) != 0 : setgroups(1, &r->gid) != 0)
      child_fail("setgroups", name, 126);
    if (setgid(r->gid) != 0) child_fail("setgid", name, 126);
    if (setuid(r->uid) != 0) child_fail("setuid", name, 126);
  } else {
    struct passwd *pw = getpwuid(getuid());
    if (pw) name = pw->pw_name;
    if (pw && pw->pw_dir && *pw->pw_dir) home = pw->pw_dir;
  }

  static char *envp[MAX_RECORDS + 16];
  static char b_home[4096], b_user[512], b_logname[512];
  int n = 0;
  for (int i = 0; i < r->envc; i++) envp[n++] = r->env[i];
  snprintf(b_home, sizeof b_home, "HOME=%s", home);
  snprintf(b_user, sizeof b_user, "USER=%s", name);
  snprintf(b_logname, sizeof b_logname, "LOGNAME=%s", name);
  char *defaults[] = {"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", b_home, b_user,
                      b_logname, r->tty ? "TERM=xterm" : NULL};
  for (unsigned i = 0; i < sizeof defaults / sizeof *defaults; i++)
    if (defaults[i] && !has_key(envp, n, defaults[i])) envp[n++] = defaults[i];
  envp[n] = NULL;
  environ = envp;

  const char *dir = r->cwd ? r->cwd : home;
  if (chdir(dir) != 0) {
    if (r->cwd) child_fail("chdir", dir, 126);
    if (chdir("/") != 0) child_fail("chdir", "/", 126);
  }
  r->argv[r->argc] = NULL;
  execvp(r->argv[0], r->argv);
  child_fail("exec", r->argv[0], errno == ENOENT || errno == ENOTDIR ? 127 : 126);
}

/* A detached process: its own session, stdio on /dev/null, not tracked by any channel. */
static int start_detached(struct exec_req *r) {
  pid_t pid = fork();
  if (pid < 0) return -1;
  if (pid == 0) {
    setsid();
    int null = open("/dev/null", O_RDWR);
    if (null >= 0) { dup2(null, 0); dup2(null, 1); dup2(null, 2); }
    child_exec(r);
  }
  return 0;
}

static int start_exec(struct chan *c, struct exec_req *r) {
  int in[2] = {-1, -1}, out[2] = {-1, -1}, err[2] = {-1, -1}, master = -1, slave = -1;
  if (r->tty) {
    master = posix_openpt(O_RDWR | O_NOCTTY | O_CLOEXEC);
    if (master < 0 || grantpt(master) || unlockpt(master)) goto fail;
    char *sname = ptsname(master);
    if (!sname || (slave = open(sname, O_RDWR | O_NOCTTY | O_CLOEXEC)) < 0) goto fail;
    struct winsize ws = {.ws_row = r->rows, .ws_col = r->cols};
    ioctl(master, TIOCSWINSZ, &ws);
  } else {
    if (pipe2(out, O_CLOEXEC) || pipe2(err, O_CLOEXEC)) goto fail;
    if (r->stdin_pipe ? pipe2(in, O_CLOEXEC) : (in[0] = open("/dev/null", O_RDONLY | O_CLOEXEC)) < 0) {
      /* No /dev/null: a pipe whose write end is closed reads as empty. */
      if (r->stdin_pipe || pipe2(in, O_CLOEXEC)) goto fail;
      close_fd(&in[1]);
    }
  }
  pid_t pid = fork();
  if (pid < 0) goto fail;
  if (pid == 0) {
    setsid();
    if (r->tty) {
      ioctl(slave, TIOCSCTTY, 0);
      dup2(slave, 0); dup2(slave, 1); dup2(slave, 2);
    } else {
      dup2(in[0], 0); dup2(out[1], 1); dup2(err[1], 2);
    }
    child_exec(r);
  }
  c->pid = pid;
  c->tty = r->tty;
  if (r->tty) {
    close(slave);
    set_nonblock(master);
    c->out_fd[1] = master;
    c->in_fd = dup(master);
    set_cloexec(c->in_fd);
  } else {
    close(in[0]); close(out[1]); close(err[1]);
    c->out_fd[1] = out[0];
    c->out_fd[2] = err[0];
    c->in_fd = in[1];
    set_nonblock(out[0]); set_nonblock(err[0]);
    if (in[1] >= 0) set_nonblock(in[1]);
  }
  return 0;
fail:;
  int e = errno;
  int fds[] = {in[0], in[1], out[0], out[1], err[0], err[1], master, slave};
  for (unsigned i = 0; i < sizeof fds / sizeof *fds; i++)
    if (fds[i] >= 0) close(fds[i]);
  errno = e;
  return -1;
}

/* ---- frames from the host ---- */

static void protocol_error(const char *why) {
  logmsg("protocol error (%s); session reset", why);
  reset_session();
}

static void on_exec(uint32_t id, unsigned char *p, size_t len) {
  static struct exec_req req;
  if (find_chan(id)) { send_error(id, EEXIST, "channel in use"); return; }
  if (parse_exec(p, len, &req) != 0) { send_error(id, EINVAL, "malformed exec request"); return; }
  char why[768];
  if (req.user && resolve_user(&req, why, sizeof why) != 0) { send_error_text(id, ESRCH, why); return; }
  if (req.detach) {
    if (start_detached(&req) != 0) send_error(id, errno, "cannot start the process");
    else send_exit(id, 0, 0);
    return;
  }
  struct chan *c = new_chan(id, K_EXEC);
  if (!c) { send_error(id, EMFILE, "too many channels"); return; }
  if (start_exec(c, &req) != 0) {
    int e = errno;
    drop_chan(c);
    send_error(id, e, "cannot start the process");
  }
}

/* Copies `len` bytes of a NUL-free path into `out`; -1 if it is empty, too long or holds a NUL. */
static int take_path(const unsigned char *p, size_t len, char *out, size_t cap) {
  if (len == 0 || len >= cap || memchr(p, 0, len)) return -1;
  memcpy(out, p, len);
  out[len] = 0;
  return 0;
}

static void on_file(int type, uint32_t id, unsigned char *p, size_t len) {
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

static void on_clock(uint32_t id, const unsigned char *p, size_t len) {
  if (len != 12) { send_error(id, EINVAL, "malformed clock request"); return; }
  struct timespec ts;
  ts.tv_sec = (time_t)(((uint64_t)get32(p) << 32) | get32(p + 4));
  ts.tv_nsec = get32(p + 8);
  if (ts.tv_nsec >= 1000000000L) { send_error(id, EINVAL, "nanoseconds out of range"); return; }
  if (clock_settime(CLOCK_REALTIME, &ts) != 0) send_error(id, errno, "clock_settime");
  else send_exit(id, 0, 0);
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

/* Parses whole frames from rbuf; while hunting, only a HELLO header resynchronises. */
static void parse_input(void) {
  size_t at = 0;
  while (rlen - at >= BG_HEADER) {
    unsigned char *h = rbuf + at;
    uint32_t magic = (uint32_t)h[0] << 8 | h[1];
    int type = h[2], stream = h[3];
    uint32_t len = get32(h + 8);
    if (hunting && !(magic == BG_MAGIC && type == BG_HELLO && len == 4)) { at++; continue; }
    if (magic != BG_MAGIC || type < 1 || type > BG_TYPE_MAX || stream > 2 || len > BG_MAX_PAYLOAD) {
      protocol_error("bad frame header");
      at++;
      continue;
    }
    if (rlen - at < BG_HEADER + len) break;
    on_frame(type, stream, get32(h + 4), h + BG_HEADER, len);
    at += BG_HEADER + len;
  }
  memmove(rbuf, rbuf + at, rlen - at);
  rlen -= at;
}

/* ---- transport ---- */

static void host_gone(void) {
  reset_session();
  rlen = 0;
  outq_len = 0;
  connected = 0;
  if (mode == M_FD) exit(0);
  if (mode == M_VSOCK) close_fd(&conn);
}

static void flush_out(void) {
  while (outq_len > 0) {
    ssize_t n = write(conn, outq, outq_len);
    if (n < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN) return;
      host_gone();
      return;
    }
    memmove(outq, outq + n, outq_len - (size_t)n);
    outq_len -= (size_t)n;
  }
}

static void read_host(void) {
  ssize_t n = read(conn, rbuf + rlen, sizeof rbuf - rlen);
  if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR)) { host_gone(); return; }
  if (n > 0) {
    rlen += (size_t)n;
    parse_input();
  }
}

static const char *find_serial_port(void) {
  static char path[300];
  DIR *d = opendir("/sys/class/virtio-ports");
  if (!d) return NULL;
  struct dirent *e;
  const char *found = NULL;
  while ((e = readdir(d))) {
    char f[300], name[64] = {0};
    if (e->d_name[0] == '.') continue;
    snprintf(f, sizeof f, "/sys/class/virtio-ports/%s/name", e->d_name);
    FILE *fp = fopen(f, "r");
    if (!fp) continue;
    if (fgets(name, sizeof name, fp) && strcmp(name, "banger.0\n") == 0) {
      snprintf(path, sizeof path, "/dev/%s", e->d_name);
      found = path;
    }
    fclose(fp);
  }
  closedir(d);
  return found;
}

static int listen_vsock(unsigned port) {
  int fd = socket(AF_VSOCK, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return -1;
  struct sockaddr_vm a = {.svm_family = AF_VSOCK, .svm_cid = VMADDR_CID_ANY, .svm_port = port};
  if (bind(fd, (struct sockaddr *)&a, sizeof a) || listen(fd, 4)) { close(fd); return -1; }
  return fd;
}

/* Serial mode: the host side is "connected" when poll stops reporting POLLHUP. */
static void check_serial(void) {
  struct pollfd p = {.fd = conn, .events = POLLIN};
  if (poll(&p, 1, 0) >= 0 && !(p.revents & POLLHUP)) connected = 1;
}

static void on_sigchld(int s) {
  (void)s;
  int e = errno;
  (void)!write(sigchld_pipe[1], "c", 1);
  errno = e;
}

static void reap(void) {
  char b[64];
  while (read(sigchld_pipe[0], b, sizeof b) > 0) {}
  int st;
  pid_t pid;
  while ((pid = waitpid(-1, &st, WNOHANG)) > 0) {
    for (int i = 0; i < MAX_CHANNELS; i++) {
      if (chans[i].used && chans[i].kind == K_EXEC && chans[i].pid == pid) {
        chans[i].exited = 1;
        chans[i].status = st;
      }
    }
  }
}

/* ---- channel I/O ---- */

static void pump_output(struct chan *c, int s) {
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

static void pump_input(struct chan *c) {
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

static void finish_if_done(struct chan *c) {
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

static void usage(void) {
  fprintf(stderr, "usage: banger-agent [--fd N | --port PATH | --vsock PORT | --version]\n");
  exit(2);
}

static void setup_transport(int argc, char **argv) {
  if (argc == 3 && strcmp(argv[1], "--fd") == 0) {
    mode = M_FD;
    conn = atoi(argv[2]);
    connected = 1;
  } else if (argc == 3 && strcmp(argv[1], "--port") == 0) {
    mode = M_SERIAL;
    serial_path = argv[2];
  } else if (argc == 3 && strcmp(argv[1], "--vsock") == 0) {
    mode = M_VSOCK;
    listen_fd = listen_vsock((unsigned)atoi(argv[2]));
    if (listen_fd < 0) { logmsg("cannot listen on vsock: %s", strerror(errno)); exit(1); }
  } else if (argc == 1) {
    for (int tries = 0; tries < 50 && !(serial_path = find_serial_port()); tries++) usleep(100000);
    if (serial_path) mode = M_SERIAL;
    else {
      mode = M_VSOCK;
      listen_fd = listen_vsock(DEFAULT_VSOCK_PORT);
      if (listen_fd < 0) { logmsg("no banger.0 port and no vsock: %s", strerror(errno)); exit(1); }
    }
  } else {
    usage();
  }
  if (mode == M_SERIAL) {
    conn = open(serial_path, O_RDWR | O_NOCTTY | O_CLOEXEC);
    if (conn < 0) { logmsg("cannot open %s", serial_path); exit(1); }
    check_serial();
  }
  if (conn >= 0) {
    set_nonblock(conn);
    set_cloexec(conn); /* no process the agent runs may write to the host's stream */
  }
}

int main(int argc, char **argv) {
  if (argc == 2 && strcmp(argv[1], "--version") == 0) {
    printf("banger-agent %s protocol %u\n", BANGER_AGENT_VERSION, BG_PROTOCOL);
    return 0;
  }
  signal(SIGPIPE, SIG_IGN);
  if (pipe2(sigchld_pipe, O_CLOEXEC | O_NONBLOCK)) return 1;
  struct sigaction sa = {.sa_handler = on_sigchld, .sa_flags = SA_RESTART | SA_NOCLDSTOP};
  sigaction(SIGCHLD, &sa, NULL);
  setup_transport(argc, argv);

  static struct pollfd pfd[2 + 3 * MAX_CHANNELS];
  static struct chan *owner[2 + 3 * MAX_CHANNELS];
  static int which[2 + 3 * MAX_CHANNELS];
  for (;;) {
    int n = 0, timeout = -1;
    pfd[n++] = (struct pollfd){.fd = sigchld_pipe[0], .events = POLLIN};
    if (mode == M_VSOCK) pfd[n++] = (struct pollfd){.fd = listen_fd, .events = POLLIN};
    int host = -1;
    if (connected) {
      host = n;
      pfd[n++] = (struct pollfd){.fd = conn, .events = (short)(POLLIN | (outq_len ? POLLOUT : 0))};
    } else if (mode == M_SERIAL) {
      timeout = 100;
    }
    for (int i = 0; i < MAX_CHANNELS; i++) {
      struct chan *c = &chans[i];
      if (!c->used) continue;
      for (int s = 1; s <= 2; s++) {
        if (c->out_fd[s] >= 0 && c->credit[s] > 0 && outq_len < OUTQ_HIGH) {
          owner[n] = c; which[n] = s;
          pfd[n++] = (struct pollfd){.fd = c->out_fd[s], .events = POLLIN};
        }
      }
      if (c->in_fd >= 0 && (c->inlen > 0 || (c->in_eof && !c->tty))) {
        owner[n] = c; which[n] = 0;
        pfd[n++] = (struct pollfd){.fd = c->in_fd, .events = POLLOUT};
      }
    }
    if (poll(pfd, (nfds_t)n, timeout) < 0) {
      if (errno == EINTR) continue;
      return 1;
    }
    if (pfd[0].revents) reap();
    if (mode == M_VSOCK && pfd[1].revents & POLLIN) {
      int fd = accept4(listen_fd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
      if (fd >= 0) {
        if (conn >= 0) host_gone();
        conn = fd;
        connected = 1;
        continue;
      }
    }
    if (!connected && mode == M_SERIAL) check_serial();
    if (host >= 0 && connected && pfd[host].revents) {
      if (pfd[host].revents & POLLOUT) flush_out();
      if (connected && pfd[host].revents & (POLLIN | POLLHUP | POLLERR)) read_host();
    }
    int first_chan = host >= 0 ? host + 1 : (mode == M_VSOCK ? 2 : 1);
    for (int i = first_chan; i < n; i++) {
      struct chan *c = owner[i];
      if (!pfd[i].revents || !c->used) continue;
      if (which[i] == 0) {
        if (c->in_fd == pfd[i].fd) pump_input(c);
      } else if (c->out_fd[which[i]] == pfd[i].fd) {
        pump_output(c, which[i]);
      }
    }
    reap();
    for (int i = 0; i < MAX_CHANNELS; i++)
      if (chans[i].used) finish_if_done(&chans[i]);
    if (connected && outq_len) flush_out();
  }
}
