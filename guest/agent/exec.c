/*
 * Exec: the EXEC request's records, the child's setup (session, user,
 * environment, directory, stdio on pipes or a PTY), detached processes,
 * and collecting exit statuses into channels.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <termios.h>
#include <unistd.h>

#include "agent.h"

#define MAX_RECORDS 4096

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

void on_exec(uint32_t id, unsigned char *p, size_t len) {
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

void reap_children(void) {
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
