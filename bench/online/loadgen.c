/* loadgen: an HTTP/1.1 load generator for the overload benchmark (bench/online/overload.py builds it).

   All N keep-alive connections are opened first (up to 10 s), then the clock starts.
   Closed loop: each connection sends its next request as soon as the last is answered.
   Open loop (--rate R): requests are due on a fixed schedule (R per second) whatever the answers; each
   goes out on an idle connection, on a new one when none is idle (up to N: one the server closed), or
   is counted as not sent.
   Latency is measured from the time a request was due (open) or sent (closed), so a server that falls
   behind cannot hide it (no coordinated omission). Answers are split: 2xx (goodput), 503 (refused),
   other. One thread, epoll; prints one JSON object.

   loadgen HOST PORT PATH BODIES_FILE [--connections N] [--duration S] [--warmup S] [--rate R]
           [--timeout-ms T]
   BODIES_FILE: one JSON request body per line, sent in turn. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define BUF 16384
#define BUCKET_US 10
#define BUCKETS 1000000 /* 10 us buckets up to 10 s */

enum { CLOSED = 0, CONNECTING, IDLE, BUSY };
enum { OK = 0, REFUSED, OTHER, KINDS };

typedef struct {
  int fd, state, counted;
  int64_t due;    /* ns: when the request in flight was due (open) or sent (closed) */
  int64_t queued; /* a request waiting for this connection to connect: its due time, or -1 */
  const char *out;
  size_t out_len, out_off;
  char buf[BUF];
  size_t len, need; /* bytes read; the response's total length once its headers are in (0: unknown) */
  int status, close_after;
} Conn;

static struct sockaddr_in addr;
static char **reqs;
static size_t *req_lens, nreqs, next_req;
static Conn *conns;
static int nconns, open_conns, epfd;
static int *idle, nidle;  /* connections with nothing in flight (may hold stale entries) */
static int *spare, nspare; /* slots with no connection */
static uint32_t *hist[KINDS];
static int64_t counts[KINDS], errors, timeouts, not_sent, sent_in_window;
static int64_t t_start = INT64_MAX, t_end = INT64_MAX;
static int started; /* the connections are open: the clock runs */

static int64_t now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static void record(int kind, int64_t ns) {
  int64_t b = ns / 1000 / BUCKET_US;
  if (b >= BUCKETS) b = BUCKETS - 1;
  if (b < 0) b = 0;
  hist[kind][b]++;
  counts[kind]++;
}

static double quantile_ms(int kind, double q) {
  if (!counts[kind]) return -1;
  int64_t want = (int64_t)(q * (double)(counts[kind] - 1)) + 1, seen = 0;
  for (int64_t b = 0; b < BUCKETS; b++) {
    seen += hist[kind][b];
    if (seen >= want) return (double)(b * BUCKET_US + BUCKET_US / 2) / 1000.0;
  }
  return -1;
}

static void watch(Conn *c, uint32_t events, int op) {
  struct epoll_event ev = {.events = events, .data.ptr = c};
  epoll_ctl(epfd, op, c->fd, &ev);
}

static void drop(Conn *c) { /* close; the connection is opened again when needed */
  if (c->fd >= 0) close(c->fd);
  c->fd = -1;
  c->state = CLOSED;
  c->queued = -1;
  open_conns--;
  spare[nspare++] = (int)(c - conns);
}

static int flush_out(Conn *c) {
  while (c->out_off < c->out_len) {
    ssize_t n = write(c->fd, c->out + c->out_off, c->out_len - c->out_off);
    if (n < 0) {
      if (errno == EAGAIN) {
        watch(c, EPOLLIN | EPOLLOUT, EPOLL_CTL_MOD);
        return 0;
      }
      return -1;
    }
    c->out_off += (size_t)n;
  }
  return 0;
}

static void send_on(Conn *c, int64_t due) {
  size_t i = next_req++ % nreqs;
  c->out = reqs[i];
  c->out_len = req_lens[i];
  c->out_off = 0;
  c->due = due;
  c->counted = due >= t_start && due < t_end;
  if (c->counted) sent_in_window++;
  c->state = BUSY;
  c->len = c->need = 0;
  if (flush_out(c) < 0) {
    if (c->counted) errors++;
    drop(c);
  }
}

static int open_conn(Conn *c, int64_t queued) {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
  if (fd < 0) return -1;
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  if (connect(fd, (struct sockaddr *)&addr, sizeof addr) < 0 && errno != EINPROGRESS) {
    close(fd);
    return -1;
  }
  c->fd = fd;
  c->state = CONNECTING;
  c->queued = queued;
  open_conns++;
  watch(c, EPOLLOUT, EPOLL_CTL_ADD);
  return 0;
}

static void make_idle(Conn *c) {
  c->state = IDLE;
  idle[nidle++] = (int)(c - conns);
}

static int parse_head(Conn *c) { /* 1 when the headers are in and c->need is known */
  char *end = memmem(c->buf, c->len, "\r\n\r\n", 4);
  if (!end) return 0;
  size_t head = (size_t)(end - c->buf) + 4;
  c->status = c->len > 12 ? atoi(c->buf + 9) : 0;
  size_t length = 0;
  c->close_after = 0;
  for (char *p = c->buf; p < end; p++) {
    if (*p != '\n') continue;
    if (!strncasecmp(p + 1, "content-length:", 15)) length = strtoul(p + 16, NULL, 10);
    if (!strncasecmp(p + 1, "connection: close", 17)) c->close_after = 1;
  }
  c->need = head + length;
  return 1;
}

static void on_readable(Conn *c, int closed_loop) {
  for (;;) {
    ssize_t n = read(c->fd, c->buf + c->len, BUF - c->len);
    if (n == 0 || (n < 0 && errno != EAGAIN)) {
      if (c->state == BUSY && c->counted) errors++;
      drop(c);
      return;
    }
    if (n < 0) return; /* EAGAIN: wait for more */
    c->len += (size_t)n;
    if (!c->need && !parse_head(c)) {
      if (c->len == BUF) {
        if (c->counted) errors++;
        drop(c);
        return;
      }
      continue;
    }
    if (c->len < c->need) continue;
    if (c->state == BUSY && c->counted) {
      int kind = c->status >= 200 && c->status < 300 ? OK : c->status == 503 ? REFUSED : OTHER;
      record(kind, now_ns() - c->due);
    }
    if (c->close_after) {
      drop(c);
      return;
    }
    int64_t t = now_ns();
    if (closed_loop && t < t_end)
      send_on(c, t);
    else
      make_idle(c);
    return;
  }
}

static void on_writable(Conn *c, int closed_loop) {
  if (c->state == CONNECTING) {
    int err = 0;
    socklen_t len = sizeof err;
    getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len);
    if (err) {
      if (c->queued >= 0 && c->queued >= t_start && c->queued < t_end) errors++;
      drop(c);
      return;
    }
    watch(c, EPOLLIN, EPOLL_CTL_MOD);
    int64_t queued = c->queued;
    c->queued = -1;
    if (queued >= 0)
      send_on(c, queued);
    else if (closed_loop && started)
      send_on(c, now_ns());
    else
      make_idle(c);
    return;
  }
  if (flush_out(c) < 0) {
    if (c->counted) errors++;
    drop(c);
    return;
  }
  if (c->out_off == c->out_len) watch(c, EPOLLIN, EPOLL_CTL_MOD);
}

static Conn *take_spare(void) {
  while (nspare) {
    Conn *c = &conns[spare[--nspare]];
    if (c->state == CLOSED) return c;
  }
  return NULL;
}

static Conn *take_idle(void) {
  while (nidle) {
    Conn *c = &conns[idle[--nidle]];
    if (c->state == IDLE) return c;
  }
  return NULL;
}

int main(int argc, char **argv) {
  if (argc < 5) {
    fprintf(stderr, "usage: loadgen HOST PORT PATH BODIES [--connections N] [--duration S] "
                    "[--warmup S] [--rate R] [--timeout-ms T]\n");
    return 2;
  }
  const char *host = argv[1], *path = argv[3];
  int port = atoi(argv[2]);
  double duration = 5, warmup = 1, rate = 0, timeout_ms = 2000;
  nconns = 64;
  for (int i = 5; i + 1 < argc; i += 2) {
    if (!strcmp(argv[i], "--connections")) nconns = atoi(argv[i + 1]);
    else if (!strcmp(argv[i], "--duration")) duration = atof(argv[i + 1]);
    else if (!strcmp(argv[i], "--warmup")) warmup = atof(argv[i + 1]);
    else if (!strcmp(argv[i], "--rate")) rate = atof(argv[i + 1]);
    else if (!strcmp(argv[i], "--timeout-ms")) timeout_ms = atof(argv[i + 1]);
  }
  int closed_loop = rate <= 0;
  FILE *f = fopen(argv[4], "r");
  if (!f) {
    perror(argv[4]);
    return 2;
  }
  size_t cap = 16;
  reqs = malloc(cap * sizeof *reqs);
  req_lens = malloc(cap * sizeof *req_lens);
  char *line = NULL;
  size_t line_cap = 0;
  ssize_t got;
  while ((got = getline(&line, &line_cap, f)) > 0) {
    while (got && (line[got - 1] == '\n' || line[got - 1] == '\r')) line[--got] = 0;
    if (!got) continue;
    if (nreqs == cap) {
      cap *= 2;
      reqs = realloc(reqs, cap * sizeof *reqs);
      req_lens = realloc(req_lens, cap * sizeof *req_lens);
    }
    size_t size = (size_t)got + strlen(path) + strlen(host) + 160;
    reqs[nreqs] = malloc(size);
    req_lens[nreqs] = (size_t)snprintf(reqs[nreqs], size,
                                       "POST %s HTTP/1.1\r\nHost: %s:%d\r\nContent-Type: application/json\r\n"
                                       "Content-Length: %zd\r\n\r\n%s",
                                       path, host, port, got, line);
    nreqs++;
  }
  fclose(f);
  if (!nreqs) {
    fprintf(stderr, "no request bodies in %s\n", argv[4]);
    return 2;
  }
  addr.sin_family = AF_INET;
  addr.sin_port = htons((uint16_t)port);
  inet_pton(AF_INET, host, &addr.sin_addr);
  for (int k = 0; k < KINDS; k++) hist[k] = calloc(BUCKETS, sizeof(uint32_t));
  conns = calloc((size_t)nconns, sizeof *conns);
  idle = calloc((size_t)nconns * 2, sizeof *idle);
  spare = calloc((size_t)nconns * 2, sizeof *spare);
  for (int i = nconns - 1; i >= 0; i--) conns[i].fd = -1, conns[i].queued = -1, spare[nspare++] = i;
  epfd = epoll_create1(0);

  struct epoll_event events[1024];
  int opened = 0;
  /* in waves of 512, so the server's accept queue never overflows (a dropped handshake costs 1 s) */
  for (int64_t until = now_ns() + 10000000000LL; nspare && now_ns() < until;) {
    for (Conn *c; open_conns < nidle + 512 && (c = take_spare());) open_conn(c, -1), opened++;
    while (nidle < open_conns && now_ns() < until) {
      int n = epoll_wait(epfd, events, 1024, 10);
      for (int i = 0; i < n; i++) {
        Conn *c = events[i].data.ptr;
        if (c->fd >= 0 && c->state == CONNECTING) on_writable(c, closed_loop);
      }
    }
  }
  int connected = nidle;
  started = 1;
  int64_t t0 = now_ns();
  t_start = t0 + (int64_t)(warmup * 1e9);
  t_end = t_start + (int64_t)(duration * 1e9);
  int64_t timeout_ns = (int64_t)(timeout_ms * 1e6), scheduled = 0, last_scan = t0;
  if (closed_loop)
    for (Conn *c; (c = take_idle());) send_on(c, t0);
  for (;;) {
    int64_t t = now_ns();
    if (t >= t_end + timeout_ns) break;
    if (t >= t_end) { /* draining: stop once nothing counted is outstanding */
      int busy = 0;
      for (int i = 0; i < nconns; i++) busy += conns[i].state == BUSY && conns[i].counted;
      if (!busy) break;
    }
    if (!closed_loop && t < t_end) { /* every request due by now goes out */
      int64_t due_count = (int64_t)((double)(t - t0) * rate / 1e9) + 1; /* request k is due at k / rate */
      for (; scheduled < due_count; scheduled++) {
        int64_t due = t0 + (int64_t)((double)scheduled * 1e9 / rate);
        Conn *c = take_idle();
        if (c) {
          send_on(c, due);
          continue;
        }
        c = take_spare();
        if (c && open_conn(c, due) == 0) {
          opened++;
          continue;
        }
        if (due >= t_start && due < t_end) not_sent++, sent_in_window++;
      }
    }
    if (t - last_scan > 10000000LL) { /* every 10 ms: requests past the timeout are given up */
      last_scan = t;
      for (int i = 0; i < nconns; i++) {
        Conn *c = &conns[i];
        if (c->state == BUSY && t - c->due > timeout_ns) {
          if (c->counted) timeouts++;
          drop(c);
        }
      }
    }
    /* sleep until the next request is due (open loop), at most 1 ms (timeouts, the end) */
    int64_t wait_ns = 1000000;
    if (!closed_loop && t < t_end) {
      int64_t next_due = t0 + (int64_t)((double)scheduled * 1e9 / rate) - now_ns();
      if (next_due < wait_ns) wait_ns = next_due > 50000 ? next_due : next_due > 0 ? 50000 : 0;
    }
    struct timespec wait = {.tv_sec = 0, .tv_nsec = wait_ns};
    int n = epoll_pwait2(epfd, events, 1024, &wait, NULL);
    for (int i = 0; i < n; i++) {
      Conn *c = events[i].data.ptr;
      if (c->fd < 0) continue;
      if (events[i].events & EPOLLOUT) on_writable(c, closed_loop);
      if (c->fd >= 0 && c->state == BUSY && (events[i].events & (EPOLLIN | EPOLLHUP | EPOLLERR)))
        on_readable(c, closed_loop);
      else if (c->fd >= 0 && c->state == IDLE && (events[i].events & (EPOLLIN | EPOLLHUP | EPOLLERR))) {
        char sink[256]; /* an idle connection the server closed */
        if (read(c->fd, sink, sizeof sink) <= 0) drop(c);
      }
    }
    if (closed_loop && t < t_end) /* a connection the server closed is opened again */
      for (Conn *c; (c = take_spare());) open_conn(c, -1), opened++;
  }
  for (int i = 0; i < nconns; i++)
    if (conns[i].state == BUSY && conns[i].counted) timeouts++;
  printf("{\"mode\": \"%s\", \"connections\": %d, \"rate\": %.0f, \"duration_s\": %.3f, "
         "\"sent\": %lld, \"ok\": %lld, \"refused\": %lld, \"other\": %lld, \"errors\": %lld, "
         "\"timeouts\": %lld, \"not_sent\": %lld, \"connected_first\": %d, \"connections_opened\": %d, "
         "\"ok_p50_ms\": %.3f, \"ok_p99_ms\": %.3f, \"refused_p50_ms\": %.3f, \"refused_p99_ms\": %.3f, "
         "\"other_p50_ms\": %.3f}\n",
         closed_loop ? "closed" : "open", nconns, rate, duration, (long long)sent_in_window,
         (long long)counts[OK], (long long)counts[REFUSED], (long long)counts[OTHER], (long long)errors,
         (long long)timeouts, (long long)not_sent, connected, opened, quantile_ms(OK, 0.5), quantile_ms(OK, 0.99),
         quantile_ms(REFUSED, 0.5), quantile_ms(REFUSED, 0.99), quantile_ms(OTHER, 0.5));
  return 0;
}
