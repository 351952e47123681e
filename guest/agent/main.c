/*
 * banger-agent: banger's guest agent. A static binary (musl) that banger
 * injects at /.banger/agent and banger-init starts before anything else. It
 * serves one host session at a time over one byte stream (protocol.h):
 * exec of an argv with env, cwd, user and an optional PTY, stdin/stdout/
 * stderr with per-stream credits, signals to the process group, file read and
 * write streams and setting the clock. It trusts only that stream: the one
 * other socket it opens is a LANE's listener (lane.c), which takes file
 * bytes only from a connection that shows the token the stream sent, and
 * nothing in the guest can speak through it to the host beyond what the
 * protocol lets a channel's own process write on its stdout.
 *
 * Transports (chosen at start):
 *   --fd N           an inherited connected stream (tests: a socketpair); EOF ends the agent
 *   --port PATH      a virtio-serial port; the host closing its end resets the session
 *   --vsock PORT     listen on AF_VSOCK; each accepted connection is a new session
 *   (no option)      the virtio port named "banger.0" if present, else vsock port 7100
 * Single-threaded: one poll loop, SIGCHLD through a self-pipe.
 *
 * This file is the transport and the poll loop; agent.h names the rest.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "agent.h"

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

#define DEFAULT_VSOCK_PORT 7100

enum mode { M_FD, M_SERIAL, M_VSOCK };

int connected;
static enum mode mode;
static int conn = -1, listen_fd = -1;
static const char *serial_path;
static int sigchld_pipe[2];
static unsigned char rbuf[2 * (BG_HEADER + BG_MAX_PAYLOAD)];
static size_t rlen;

void logmsg(const char *fmt, const char *arg) {
  fprintf(stderr, "banger-agent: ");
  fprintf(stderr, fmt, arg);
  fputc('\n', stderr);
}

void set_nonblock(int fd) { fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK); }
void set_cloexec(int fd) { fcntl(fd, F_SETFD, FD_CLOEXEC); }

void close_fd(int *fd) {
  if (*fd >= 0) close(*fd);
  *fd = -1;
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
    size_t used = parse_input(rbuf, rlen);
    memmove(rbuf, rbuf + used, rlen - used);
    rlen -= used;
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
  reap_children();
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
  if (argc == 2 && strcmp(argv[1], "reseed") == 0) return reseed_from_stdin();
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
      if (c->kind == K_LANE) {
        if (c->lane_listen >= 0) {
          owner[n] = c; which[n] = 3;
          pfd[n++] = (struct pollfd){.fd = c->lane_listen, .events = POLLIN};
        }
        if (c->lane_conn >= 0) {
          owner[n] = c; which[n] = 4;
          pfd[n++] = (struct pollfd){.fd = c->lane_conn, .events = POLLIN};
        }
        continue;
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
      if (which[i] == 3) {
        if (c->lane_listen == pfd[i].fd) lane_accept(c);
      } else if (which[i] == 4) {
        if (c->lane_conn == pfd[i].fd) lane_read(c);
      } else if (which[i] == 0) {
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
