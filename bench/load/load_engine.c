/*
 * load_engine: one wsgate-load worker process (see load_engine.h).
 *
 * A connection is 128 bytes here while it is idle (state, frame parser, marker scanner); buffers
 * for the upgrade answer, set-up replies, split control frames and unsent bytes are allocated only
 * while they are needed. One 256 KiB read buffer serves every connection. The traffic schedule is
 * open loop: message g is due at t0 + g / rate whether or not earlier replies came back, and its
 * latency counts from that due time, so a stalled server (or a late load generator: see the send
 * lag it reports) shows up in the percentiles instead of silently lowering the offered rate
 * (coordinated omission).
 *
 * Threads: one per worker process.
 */
#include "load_engine.h"

#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "load_hist.h"
#include "load_token.h"
#include "load_ws.h"

#define NONE        UINT32_MAX
#define CTL_TAG     UINT64_MAX /* epoll data of the control socket */
#define RBUF_SIZE   ((size_t)256 * 1024)
#define FD_RESERVE  64
#define CAPTURE_MAX 256u /* bytes of a set-up reply kept to look for the expected answer */
#define EVENTS_MAX  1024
#define OUT_MIN     4096
#define MSG_EXTRA   1024 /* room for the JSON around a payload */
#define MAX_CLOSE   5000 /* close codes counted individually (1000..4999) */
#define MAX_STATUS  600
#define REQ_MAX     (LOAD_TOKEN_MAX + 2048)
#define NS          1000000000ull
/* Longest wait in one epoll call: the loop re-checks its deadlines at least this often. */
#define WAIT_CAP_NS (100 * 1000000ull)

enum { S_FREE, S_CONNECTING, S_HTTP, S_SETUP, S_READY, S_DONE };
enum { F_SENDER = 1, F_POLLOUT = 2, F_DIRTY = 4 };
enum { P_RAMP, P_WAIT_GO, P_RUN, P_DRAIN, P_WAIT_EXIT };

/* Why a connection never became ready: name for the JSON, and what it means. */
#define FAIL_MAP(X)                                                                                \
  X(SOCKET, "socket", "socket() or bind() failed")                                                 \
  X(CONNECT, "connect", "TCP connect failed")                                                      \
  X(REFUSED, "refused", "the upgrade was answered with a status other than 101")                   \
  X(HANDSHAKE, "handshake", "the 101 answer is not a valid WebSocket handshake")                   \
  X(TIMEOUT, "timeout", "not ready within --connect-timeout / --ramp-timeout")                     \
  X(SETUP, "setup", "the set-up command (join, connect, subscribe) was refused")                   \
  X(CLOSED, "closed", "the server closed the connection before it was ready")                      \
  X(PROTOCOL, "protocol", "the server sent an invalid frame")

typedef enum {
#define FAIL_ENUM(name, key, text) FAIL_##name,
  FAIL_MAP(FAIL_ENUM)
#undef FAIL_ENUM
      FAIL_COUNT
} fail_kind;

static const char *const fail_key[] = {
#define FAIL_KEY(name, key, text) key,
    FAIL_MAP(FAIL_KEY)
#undef FAIL_KEY
};

typedef struct {
  uint32_t off, len, cap;
  uint8_t data[];
} outbuf;

typedef struct {
  int fd;
  uint32_t gidx;         /* global connection index (user, source address, target) */
  uint32_t qprev, qnext; /* list of connections not ready yet, oldest first */
  uint8_t state, step, flags;
  uint8_t ctl_len;
  uint16_t aux_len;
  load_ws_parser ps;
  load_marker_scan mk;
  uint64_t t_start;
  uint8_t *aux; /* S_HTTP: the answer so far; S_SETUP: the start of the current message */
  uint8_t *ctl; /* a control frame split across reads */
  outbuf *out;
} conn;

typedef struct {
  const load_plan *p;
  unsigned id;
  int ctl, epfd;
  bool have_pwait2;
  uint32_t first, count; /* this worker's receivers: global indexes [first, first + count) */
  uint32_t n;            /* connections: count, plus the sender in fan-out worker 0 */
  conn *c;
  uint32_t sender; /* index into c, or NONE */
  uint8_t *rbuf;
  uint64_t salt, rng;
  int phase;

  uint32_t next_start, inflight, qhead, qtail;
  uint64_t ramp_start, ramp_end, next_progress;
  double my_rate;

  uint32_t ready, failed, closed_ready, receivers_ready;
  uint64_t fails[FAIL_COUNT];
  char first_err[FAIL_COUNT][200];
  uint32_t refused[MAX_STATUS];
  uint32_t closes[MAX_CLOSE];
  load_hist h_connect, h_lat, h_lag;

  uint64_t t0, t_measure, t_end, t_drain;
  double msg_interval_ns; /* between two messages of the whole schedule */
  uint64_t g_next;        /* global number of this worker's next message */
  unsigned g_step;        /* distance between this worker's message numbers */
  bool sends;             /* this worker sends in the traffic phase */
  uint64_t sent, sent_measured, dropped, received, received_measured, expected;
  uint32_t *ready_list, nready, rr;
  uint32_t *dirty, ndirty;

  char cbuf[128];
  size_t clen;
  bool exit_req;

  conn *cur; /* connection whose bytes the marker scanner is reading */
  uint64_t now;
  char *msg; /* scratch: one application message */
  size_t msg_cap;
  char **token_cache; /* --token-cmd: per user of this worker, filled on first use */
  uint64_t token_cache_first, token_cache_n;
} worker;

static uint64_t mono_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * NS + (uint64_t)ts.tv_nsec;
}

static uint32_t rnd32(worker *w) {
  w->rng ^= w->rng << 13;
  w->rng ^= w->rng >> 7;
  w->rng ^= w->rng << 17;
  return (uint32_t)(w->rng >> 16);
}

uint32_t load_worker_capacity(void) {
  struct rlimit rl;
  if (getrlimit(RLIMIT_NOFILE, &rl) != 0)
    return 0;
  rlim_t lim = rl.rlim_max == RLIM_INFINITY ? 1048576 : rl.rlim_max;
  return lim > FD_RESERVE ? (uint32_t)(lim - FD_RESERVE) : 0;
}

void load_worker_share(const load_plan *plan, unsigned id, uint32_t *first, uint32_t *count) {
  uint64_t lo = (uint64_t)plan->conns * id / plan->procs;
  uint64_t hi = (uint64_t)plan->conns * (id + 1) / plan->procs;
  *first = (uint32_t)lo;
  *count = (uint32_t)(hi - lo);
}

/* ----------------------------------------------------------------------------------------- */
/* control channel                                                                            */

static int ctl_write_all(worker *w, const char *buf, size_t len) {
  size_t off = 0;
  while (off < len) {
    ssize_t r = send(w->ctl, buf + off, len - off, MSG_NOSIGNAL);
    if (r < 0 && errno == EINTR)
      continue;
    if (r <= 0)
      return -1; /* the parent is gone: EOF on the socket ends this worker next */
    off += (size_t)r;
  }
  return 0;
}

static void ctl_send(worker *w, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void ctl_send(worker *w, const char *fmt, ...) {
  char line[128];
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(line, sizeof line, fmt, ap);
  va_end(ap);
  if (n > 0 && (size_t)n < sizeof line)
    ctl_write_all(w, line, (size_t)n);
}

static void begin_run(worker *w, uint64_t t0);

/* Reads the parent's commands; returns -1 when the parent is gone. */
static int ctl_read(worker *w) {
  for (;;) {
    ssize_t r = recv(w->ctl, w->cbuf + w->clen, sizeof w->cbuf - 1 - w->clen, MSG_DONTWAIT);
    if (r < 0 && errno == EINTR)
      continue;
    if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
      return 0;
    if (r <= 0)
      return -1;
    w->clen += (size_t)r;
    w->cbuf[w->clen] = '\0';
    char *nl;
    while ((nl = memchr(w->cbuf, '\n', w->clen)) != NULL) {
      *nl = '\0';
      unsigned long long t0;
      if (w->cbuf[0] == 'G' && sscanf(w->cbuf, "G %llu", &t0) == 1 && w->phase == P_WAIT_GO)
        begin_run(w, (uint64_t)t0);
      else if (w->cbuf[0] == 'X')
        w->exit_req = true;
      size_t used = (size_t)(nl + 1 - w->cbuf);
      memmove(w->cbuf, nl + 1, w->clen - used);
      w->clen -= used;
    }
    if (w->clen >= sizeof w->cbuf - 1)
      return -1; /* not our parent speaking */
  }
}

/* ----------------------------------------------------------------------------------------- */
/* connection bookkeeping                                                                     */

static void q_push(worker *w, uint32_t i) {
  conn *k = &w->c[i];
  k->qnext = NONE;
  k->qprev = w->qtail;
  if (w->qtail != NONE)
    w->c[w->qtail].qnext = i;
  else
    w->qhead = i;
  w->qtail = i;
}

static void q_remove(worker *w, uint32_t i) {
  conn *k = &w->c[i];
  if (k->qprev != NONE)
    w->c[k->qprev].qnext = k->qnext;
  else if (w->qhead == i)
    w->qhead = k->qnext;
  if (k->qnext != NONE)
    w->c[k->qnext].qprev = k->qprev;
  else if (w->qtail == i)
    w->qtail = k->qprev;
  k->qprev = k->qnext = NONE;
}

static void release(worker *w, conn *k) {
  if (k->fd >= 0)
    close(k->fd); /* also removes it from the epoll set */
  k->fd = -1;
  free(k->aux);
  free(k->ctl);
  free(k->out);
  k->aux = k->ctl = NULL;
  k->out = NULL;
  k->aux_len = 0;
  k->state = S_DONE;
  (void)w;
}

static void lost(worker *w, uint32_t i, unsigned code);
static void fail(worker *w, uint32_t i, fail_kind kind, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static void fail(worker *w, uint32_t i, fail_kind kind, const char *fmt, ...) {
  conn *k = &w->c[i];
  if (k->state == S_DONE)
    return;
  if (!w->first_err[kind][0]) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(w->first_err[kind], sizeof w->first_err[kind], fmt, ap);
    va_end(ap);
  }
  w->fails[kind]++;
  if (k->state == S_READY) {
    /* Counted as ready already: it is a lost connection now, not a failed attempt. */
    lost(w, i, 1002);
    return;
  }
  if (k->state != S_FREE) {
    q_remove(w, i);
    w->inflight--;
  }
  w->failed++;
  release(w, k);
}

/* A ready connection the server closed (or reset) during the run. */
static void lost(worker *w, uint32_t i, unsigned code) {
  conn *k = &w->c[i];
  if (k->state == S_DONE)
    return;
  if (k->state != S_READY) {
    fail(w, i, FAIL_CLOSED, "closed by the server before it was ready (close code %u)", code);
    return;
  }
  w->closed_ready++;
  w->closes[code < MAX_CLOSE ? code : 0]++;
  release(w, k);
}

static void set_pollout(worker *w, uint32_t i, bool on) {
  conn *k = &w->c[i];
  if (on == ((k->flags & F_POLLOUT) != 0) || k->fd < 0)
    return;
  struct epoll_event ev = {.events = EPOLLIN | (on ? EPOLLOUT : 0u), .data.u64 = i};
  if (epoll_ctl(w->epfd, EPOLL_CTL_MOD, k->fd, &ev) == 0)
    k->flags = (uint8_t)(on ? k->flags | F_POLLOUT : k->flags & ~F_POLLOUT);
}

/* Sends what the connection has queued; arms EPOLLOUT for the rest. */
static void out_flush(worker *w, uint32_t i) {
  conn *k = &w->c[i];
  outbuf *o = k->out;
  if (!o || k->fd < 0)
    return;
  while (o->off < o->len) {
    ssize_t r = send(k->fd, o->data + o->off, o->len - o->off, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (r < 0 && errno == EINTR)
      continue;
    if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      set_pollout(w, i, true);
      return;
    }
    if (r < 0) {
      lost(w, i, 1006);
      return;
    }
    o->off += (uint32_t)r;
  }
  o->off = o->len = 0;
  set_pollout(w, i, false);
  /* Keep a sending connection's buffer (it is reused at every tick); give back the others'. */
  if (!(w->p->mode == LOAD_ECHO || (k->flags & F_SENDER)) || o->cap > 64 * 1024) {
    free(o);
    k->out = NULL;
  }
}

/* Queues one masked frame. -1 when the connection already holds --out-max unsent bytes. */
static int out_frame(worker *w, uint32_t i, unsigned opcode, const void *payload, size_t len) {
  conn *k = &w->c[i];
  size_t need = load_ws_frame_size(len);
  outbuf *o = k->out;
  size_t used = o ? o->len - o->off : 0;
  if (used + need > w->p->out_max)
    return -1;
  if (!o || o->len + need > o->cap) {
    if (o && o->off > 0) {
      memmove(o->data, o->data + o->off, o->len - o->off);
      o->len -= o->off;
      o->off = 0;
    }
    if (!o || o->len + need > o->cap) {
      size_t cap = o ? o->cap : OUT_MIN;
      while (cap < used + need)
        cap *= 2;
      outbuf *n = realloc(o, sizeof *n + cap);
      if (!n)
        return -1;
      if (!o)
        n->off = n->len = 0;
      n->cap = (uint32_t)cap;
      k->out = o = n;
    }
  }
  o->len +=
      (uint32_t)load_ws_frame(o->data + o->len, o->cap - o->len, opcode, payload, len, rnd32(w));
  return 0;
}

/* ----------------------------------------------------------------------------------------- */
/* users, tokens, the upgrade request                                                         */

static uint64_t user_number(const worker *w, const conn *k) {
  const load_plan *p = w->p;
  if (k->flags & F_SENDER)
    return p->user_offset + p->users; /* one past the receivers: its own user */
  return p->user_offset + k->gidx % p->users;
}

static void user_id(const worker *w, const conn *k, char *out, size_t cap) {
  snprintf(out, cap, "%s%llu", w->p->user_prefix, (unsigned long long)user_number(w, k));
}

/* The connection's bearer token into out; 0 when there is none, -1 on failure. */
static int token_for(worker *w, conn *k, char *out, size_t cap, char *err, size_t errlen) {
  const load_plan *p = w->p;
  char user[128];
  user_id(w, k, user, sizeof user);
  if (p->token) {
    size_t l = strlen(p->token);
    if (l >= cap)
      return -1;
    memcpy(out, p->token, l + 1);
    return (int)l;
  }
  if (p->jwt_secret) {
    int n = load_token_jwt(p->jwt_secret, p->jwt_secret_len, user, (int64_t)time(NULL),
                           (int64_t)p->jwt_ttl_s, out, cap);
    if (n < 0)
      snprintf(err, errlen, "cannot sign a token for %s", user);
    return n;
  }
  if (p->token_cmd) {
    uint64_t u = user_number(w, k) - w->token_cache_first;
    if (u < w->token_cache_n && w->token_cache[u]) {
      size_t l = strlen(w->token_cache[u]);
      memcpy(out, w->token_cache[u], l + 1);
      return (int)l;
    }
    int n = load_token_cmd(p->token_cmd, user, out, cap, err, errlen);
    if (n > 0 && u < w->token_cache_n)
      w->token_cache[u] = strdup(out);
    return n;
  }
  return 0;
}

static const load_target *target_of(const worker *w, const conn *k) {
  if (k->flags & F_SENDER)
    return &w->p->sender_target;
  return &w->p->targets[k->gidx % w->p->ntargets];
}

static void conn_key(const worker *w, const conn *k, char key[LOAD_WS_KEY_LEN + 1]) {
  load_ws_key(w->salt ^ ((uint64_t)k->gidx << 1 | ((k->flags & F_SENDER) ? 1 : 0)), key);
}

static int send_request(worker *w, uint32_t i) {
  conn *k = &w->c[i];
  const load_plan *p = w->p;
  const load_target *t = target_of(w, k);
  char path[sizeof t->path + 160], extra[LOAD_TOKEN_MAX + 512];
  char user[128];
  user_id(w, k, user, sizeof user);
  if (p->dev_user)
    snprintf(path, sizeof path, "%s%suser=%s", t->path, strchr(t->path, '?') ? "&" : "?", user);
  else
    snprintf(path, sizeof path, "%s", t->path);
  size_t el = 0;
  extra[0] = '\0';
  if (p->subprotocol)
    el += (size_t)snprintf(extra + el, sizeof extra - el, "Sec-WebSocket-Protocol: %s\r\n",
                           p->subprotocol);
  if (p->proto != LOAD_PROTO_CENTRIFUGO) { /* Centrifugo takes the token in its connect command */
    char token[LOAD_TOKEN_MAX], err[256] = "";
    int tl = token_for(w, k, token, sizeof token, err, sizeof err);
    if (tl < 0) {
      fail(w, i, FAIL_SOCKET, "no token: %s", err);
      return -1;
    }
    if (tl > 0)
      snprintf(extra + el, sizeof extra - el, "Authorization: Bearer %s\r\n", token);
  }
  char key[LOAD_WS_KEY_LEN + 1];
  conn_key(w, k, key);
  char req[REQ_MAX];
  int rl = load_ws_request(req, sizeof req, t->host, path, key, extra);
  if (rl < 0) {
    fail(w, i, FAIL_SOCKET, "the upgrade request is longer than %d bytes", REQ_MAX);
    return -1;
  }
  ssize_t r = send(k->fd, req, (size_t)rl, MSG_NOSIGNAL | MSG_DONTWAIT);
  if (r != rl) {
    /* A fresh loopback socket takes a few KiB at once; anything else is a broken connection. */
    fail(w, i, FAIL_CONNECT, "sending the upgrade request to %s: %s", t->host,
         r < 0 ? strerror(errno) : "short write");
    return -1;
  }
  k->state = S_HTTP;
  struct epoll_event ev = {.events = EPOLLIN, .data.u64 = i};
  epoll_ctl(w->epfd, EPOLL_CTL_MOD, k->fd, &ev);
  k->flags &= (uint8_t)~F_POLLOUT;
  return 0;
}

static void start_conn(worker *w, uint32_t i) {
  conn *k = &w->c[i];
  const load_plan *p = w->p;
  const load_target *t = target_of(w, k);
  k->t_start = mono_ns();
  k->state = S_CONNECTING;
  w->inflight++;
  q_push(w, i);
  k->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (k->fd < 0) {
    fail(w, i, FAIL_SOCKET, "socket(): %s", strerror(errno));
    return;
  }
  int one = 1;
  setsockopt(k->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  if (p->sources > 0) {
    /* The port is chosen at connect() for the whole 4-tuple, so every source address gives
     * another ~28k ports per target, and workers may share addresses. */
    setsockopt(k->fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof one);
    struct sockaddr_in src = {.sin_family = AF_INET};
    src.sin_addr.s_addr = htonl(0x7F000002u + k->gidx % p->sources);
    if (bind(k->fd, (struct sockaddr *)&src, sizeof src) != 0) {
      fail(w, i, FAIL_SOCKET, "bind(127.0.0.%u): %s", 2 + k->gidx % p->sources, strerror(errno));
      return;
    }
  }
  struct epoll_event ev = {.events = EPOLLOUT, .data.u64 = i};
  if (epoll_ctl(w->epfd, EPOLL_CTL_ADD, k->fd, &ev) != 0) {
    fail(w, i, FAIL_SOCKET, "epoll_ctl: %s", strerror(errno));
    return;
  }
  k->flags |= F_POLLOUT;
  if (connect(k->fd, (const struct sockaddr *)&t->addr, sizeof t->addr) != 0 &&
      errno != EINPROGRESS) {
    fail(w, i, FAIL_CONNECT, "connect(%s): %s%s", t->host, strerror(errno),
         errno == EADDRNOTAVAIL ? " (ephemeral ports exhausted: raise --sources)" : "");
  }
}

/* ----------------------------------------------------------------------------------------- */
/* set-up commands after the upgrade                                                          */

/*
 * Set-up command `step` of connection k, and the text its answer contains: wsgate's chat joins
 * the room (fan-out); a channel receiver subscribes (fan-out and idle); Centrifugo connects (with
 * the token), then subscribes (echo: a channel of its own; fan-out receivers: the room). NULL when
 * there is no such step.
 */
static const char *setup_expect(const worker *w, const conn *k, unsigned step) {
  const load_plan *p = w->p;
  if (p->proto == LOAD_PROTO_CHAT && p->mode == LOAD_FANOUT && step == 0)
    return "\"joined\"";
  if (p->proto == LOAD_PROTO_CHANNEL && (p->mode == LOAD_FANOUT || p->mode == LOAD_IDLE) &&
      step == 0 && !(k->flags & F_SENDER))
    return "\"subscribed\"";
  if (p->proto == LOAD_PROTO_CENTRIFUGO && step == 0)
    return "\"id\":1,\"connect\"";
  if (p->proto == LOAD_PROTO_CENTRIFUGO && step == 1 && p->mode != LOAD_IDLE &&
      !(k->flags & F_SENDER))
    return "\"id\":2,\"subscribe\"";
  return NULL;
}

int load_channel_of(const load_plan *p, uint32_t gidx, char *out, size_t cap) {
  int n = p->rooms > 0 ? snprintf(out, cap, "%s-%u", p->room, gidx % p->rooms)
                       : snprintf(out, cap, "%s", p->room);
  return n >= 0 && (size_t)n < cap ? n : -1;
}

/* Writes set-up command `step` of connection k into w->msg; returns its length, 0 if none. */
static size_t setup_msg(worker *w, conn *k, unsigned step) {
  const load_plan *p = w->p;
  const char *expect = setup_expect(w, k, step);
  int n = 0;
  if (!expect)
    return 0;
  if (p->proto == LOAD_PROTO_CHAT) {
    n = snprintf(w->msg, w->msg_cap, "{\"op\":\"join\",\"room\":\"%s\"}", p->room);
  } else if (p->proto == LOAD_PROTO_CHANNEL) {
    char ch[256];
    if (load_channel_of(p, k->gidx, ch, sizeof ch) < 0)
      return 0;
    n = snprintf(w->msg, w->msg_cap, "{\"wsgate\":\"subscribe\",\"channel\":\"%s\"}", ch);
  } else if (step == 0) {
    char token[LOAD_TOKEN_MAX], err[256];
    int tl = token_for(w, k, token, sizeof token, err, sizeof err);
    if (tl < 0)
      return 0;
    n = tl > 0 ? snprintf(w->msg, w->msg_cap, "{\"id\":1,\"connect\":{\"token\":\"%s\"}}", token)
               : snprintf(w->msg, w->msg_cap, "{\"id\":1,\"connect\":{}}");
  } else {
    if (p->mode == LOAD_ECHO)
      n = snprintf(w->msg, w->msg_cap, "{\"id\":2,\"subscribe\":{\"channel\":\"%s-%u\"}}", p->room,
                   k->gidx);
    else
      n = snprintf(w->msg, w->msg_cap, "{\"id\":2,\"subscribe\":{\"channel\":\"%s\"}}", p->room);
  }
  return n > 0 && (size_t)n < w->msg_cap ? (size_t)n : 0;
}

static void became_ready(worker *w, uint32_t i) {
  conn *k = &w->c[i];
  k->state = S_READY;
  free(k->aux);
  k->aux = NULL;
  k->aux_len = 0;
  q_remove(w, i);
  w->inflight--;
  w->ready++;
  load_hist_record(&w->h_connect, mono_ns() - k->t_start);
  if (!(k->flags & F_SENDER)) {
    w->ready_list[w->nready++] = i;
    w->receivers_ready++;
  }
}

/* Sends the next set-up command, or marks the connection ready when there is none. */
static void setup_next(worker *w, uint32_t i) {
  conn *k = &w->c[i];
  if (!setup_expect(w, k, k->step)) {
    became_ready(w, i);
    return;
  }
  size_t n = setup_msg(w, k, k->step);
  if (n == 0) {
    fail(w, i, FAIL_SETUP, "cannot write set-up command %u (no token?)", k->step);
    return;
  }
  k->state = S_SETUP;
  k->aux_len = 0;
  if (out_frame(w, i, LOAD_WS_OP_TEXT, w->msg, n) != 0) {
    fail(w, i, FAIL_SOCKET, "out of memory");
    return;
  }
  out_flush(w, i);
}

/* A whole message arrived while in set-up: is it the expected answer? */
static void setup_reply(worker *w, uint32_t i) {
  conn *k = &w->c[i];
  const char *expect = setup_expect(w, k, k->step);
  if (!expect || !k->aux)
    return;
  const char *txt = (const char *)k->aux;
  size_t len = k->aux_len;
  if (memmem(txt, len, expect, strlen(expect))) {
    k->step++;
    k->aux_len = 0;
    setup_next(w, i);
  } else if (memmem(txt, len, "\"error\"", 7)) {
    fail(w, i, FAIL_SETUP, "set-up command %u answered: %.*s", k->step, (int)len, txt);
  }
  k->aux_len = 0; /* something else (a push, a ping): keep waiting */
}

/* ----------------------------------------------------------------------------------------- */
/* receiving                                                                                  */

static void on_marker(void *arg, uint64_t sched) {
  worker *w = arg;
  if (w->cur->flags & F_SENDER)
    return; /* fan-out: the sender's own copy is not a delivery */
  w->received++;
  if (sched >= w->t_measure && sched < w->t_end) {
    w->received_measured++;
    load_hist_record(&w->h_lat, w->now > sched ? w->now - sched : 0);
  }
}

static void on_control(worker *w, uint32_t i, unsigned op, const uint8_t *pl, size_t len) {
  if (op == LOAD_WS_OP_PING) {
    if (out_frame(w, i, LOAD_WS_OP_PONG, pl, len) == 0)
      out_flush(w, i);
  } else if (op == LOAD_WS_OP_CLOSE) {
    unsigned code = len >= 2 ? (unsigned)pl[0] << 8 | pl[1] : 1005;
    uint8_t echo[2] = {(uint8_t)(code >> 8), (uint8_t)code};
    if (out_frame(w, i, LOAD_WS_OP_CLOSE, echo, len >= 2 ? 2 : 0) == 0)
      out_flush(w, i);
    conn *k = &w->c[i];
    if (k->state != S_READY && k->state != S_DONE)
      fail(w, i, FAIL_CLOSED, "closed by the server with code %u: %.*s", code,
           len > 2 ? (int)(len - 2) : 0, len > 2 ? (const char *)pl + 2 : "");
    else
      lost(w, i, code);
  }
}

static void on_chunk(worker *w, uint32_t i, const load_ws_chunk *ch) {
  conn *k = &w->c[i];
  if (ch->opcode >= 0x8) {
    if (ch->first && ch->last) {
      on_control(w, i, ch->opcode, ch->data, ch->len);
      return;
    }
    if (!k->ctl && !(k->ctl = malloc(125))) {
      lost(w, i, 1011);
      return;
    }
    if (ch->first)
      k->ctl_len = 0;
    memcpy(k->ctl + k->ctl_len, ch->data, ch->len); /* <= 125 in total: the parser checks */
    k->ctl_len = (uint8_t)(k->ctl_len + ch->len);
    if (ch->last) {
      on_control(w, i, ch->opcode, k->ctl, k->ctl_len);
      if (k->state != S_DONE) {
        free(k->ctl);
        k->ctl = NULL;
      }
    }
    return;
  }
  bool msg_start = ch->first && ch->opcode != LOAD_WS_OP_CONT;
  bool msg_end = ch->last && ch->fin;
  if (msg_start)
    memset(&k->mk, 0, sizeof k->mk);
  /* Centrifugo's JSON protocol pings with an empty object and expects one back. */
  if (w->p->proto == LOAD_PROTO_CENTRIFUGO && msg_start && msg_end && ch->len == 2 &&
      memcmp(ch->data, "{}", 2) == 0) {
    if (out_frame(w, i, LOAD_WS_OP_TEXT, "{}", 2) == 0)
      out_flush(w, i);
    return;
  }
  if (k->state == S_SETUP) {
    if (msg_start)
      k->aux_len = 0;
    if (!k->aux && !(k->aux = malloc(CAPTURE_MAX))) {
      fail(w, i, FAIL_SOCKET, "out of memory");
      return;
    }
    size_t room = CAPTURE_MAX - k->aux_len;
    size_t take = ch->len < room ? ch->len : room;
    memcpy(k->aux + k->aux_len, ch->data, take);
    k->aux_len = (uint16_t)(k->aux_len + take);
    if (msg_end)
      setup_reply(w, i);
    return;
  }
  w->cur = k;
  load_marker_feed(&k->mk, ch->data, ch->len, on_marker, w);
}

static void feed_frames(worker *w, uint32_t i, const uint8_t *data, size_t len) {
  conn *k = &w->c[i];
  while (len > 0 && k->state != S_DONE) {
    load_ws_chunk ch;
    bool got;
    const char *perr = NULL;
    long r = load_ws_parse(&k->ps, data, len, &ch, &got, &perr);
    if (r < 0) {
      if (k->state == S_READY) {
        w->fails[FAIL_PROTOCOL]++;
        if (!w->first_err[FAIL_PROTOCOL][0])
          snprintf(w->first_err[FAIL_PROTOCOL], sizeof w->first_err[0], "%s", perr);
        lost(w, i, 1002);
      } else {
        fail(w, i, FAIL_PROTOCOL, "%s", perr);
      }
      return;
    }
    data += r;
    len -= (size_t)r;
    if (got)
      on_chunk(w, i, &ch);
  }
}

/* The upgrade answer, possibly in pieces; returns the bytes of `data` that are frames. */
static void on_http(worker *w, uint32_t i, const uint8_t *data, size_t len) {
  conn *k = &w->c[i];
  char key[LOAD_WS_KEY_LEN + 1], acc[LOAD_WS_ACCEPT_LEN + 1], err[256];
  conn_key(w, k, key);
  if (load_ws_accept(key, acc) != 0) {
    fail(w, i, FAIL_HANDSHAKE, "SHA-1 unavailable");
    return;
  }
  /* Answers nearly always arrive whole and are read in place; only a split one is copied. */
  const uint8_t *buf = data;
  size_t blen = len;
  if (k->aux) {
    size_t room = LOAD_WS_RESPONSE_MAX - k->aux_len;
    size_t take = len < room ? len : room;
    memcpy(k->aux + k->aux_len, data, take);
    k->aux_len = (uint16_t)(k->aux_len + take);
    buf = k->aux;
    blen = k->aux_len;
  }
  int status = 0;
  int h = load_ws_response((const char *)buf, blen, acc, &status, err, sizeof err);
  if (h == 0) {
    if (!k->aux) {
      if (!(k->aux = malloc(LOAD_WS_RESPONSE_MAX))) {
        fail(w, i, FAIL_SOCKET, "out of memory");
        return;
      }
      memcpy(k->aux, data, len); /* len < LOAD_WS_RESPONSE_MAX, or h would be -1 */
      k->aux_len = (uint16_t)len;
    }
    return;
  }
  if (h < 0) {
    if (status > 0) {
      w->refused[status < MAX_STATUS ? status : 0]++;
      const char *body = memmem(buf, blen, "\r\n\r\n", 4);
      size_t bl = body ? blen - (size_t)(body + 4 - (const char *)buf) : 0;
      fail(w, i, FAIL_REFUSED, "%s %.*s", err, (int)(bl > 120 ? 120 : bl), body ? body + 4 : "");
    } else {
      fail(w, i, FAIL_HANDSHAKE, "%s", err);
    }
    return;
  }
  /* Frames the server sent right after its 101 (nchan replays buffered messages, say): they
   * are read from where they are, so the answer buffer is detached first and freed after. */
  uint8_t *answer = k->aux;
  k->aux = NULL;
  k->aux_len = 0;
  k->step = 0;
  setup_next(w, i);
  if (blen > (size_t)h && k->state != S_DONE)
    feed_frames(w, i, buf + h, blen - (size_t)h);
  free(answer);
}

static void on_readable(worker *w, uint32_t i) {
  conn *k = &w->c[i];
  ssize_t r = recv(k->fd, w->rbuf, RBUF_SIZE, MSG_DONTWAIT);
  if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
    return;
  w->now = mono_ns();
  if (r <= 0) {
    if (k->state == S_READY)
      lost(w, i, 1006);
    else
      fail(w, i, FAIL_CLOSED, "connection %s by the server before it was ready",
           r == 0 ? "closed" : strerror(errno));
    return;
  }
  if (k->state == S_HTTP)
    on_http(w, i, w->rbuf, (size_t)r);
  else
    feed_frames(w, i, w->rbuf, (size_t)r);
}

static void on_writable(worker *w, uint32_t i) {
  conn *k = &w->c[i];
  if (k->state == S_CONNECTING) {
    int err = 0;
    socklen_t el = sizeof err;
    if (getsockopt(k->fd, SOL_SOCKET, SO_ERROR, &err, &el) != 0)
      err = errno;
    if (err) {
      fail(w, i, FAIL_CONNECT, "connect(%s): %s", target_of(w, k)->host, strerror(err));
      return;
    }
    send_request(w, i);
    return;
  }
  out_flush(w, i);
}

/* ----------------------------------------------------------------------------------------- */
/* traffic                                                                                    */

static uint64_t sched_time(const worker *w, uint64_t g) {
  return w->t0 + (uint64_t)((double)g * w->msg_interval_ns);
}

/* How many message numbers g have their due time in [lo, hi). */
static uint64_t sched_count(const worker *w, uint64_t lo, uint64_t hi) {
  uint64_t a = (uint64_t)((double)(lo - w->t0) / w->msg_interval_ns);
  while (a > 0 && sched_time(w, a - 1) >= lo)
    a--;
  while (sched_time(w, a) < lo)
    a++;
  uint64_t b = (uint64_t)((double)(hi - w->t0) / w->msg_interval_ns);
  while (b > 0 && sched_time(w, b - 1) >= hi)
    b--;
  while (sched_time(w, b) < hi)
    b++;
  return b - a;
}

static void begin_run(worker *w, uint64_t t0) {
  const load_plan *p = w->p;
  w->t0 = t0;
  w->t_measure = t0 + p->warmup_ns;
  w->t_end = t0 + (p->mode == LOAD_IDLE ? p->hold_ns : p->duration_ns);
  w->t_drain = w->t_end + (p->mode == LOAD_IDLE ? 0 : p->drain_ns);
  w->phase = P_RUN;
  if (p->mode == LOAD_IDLE || p->rate <= 0)
    return;
  w->msg_interval_ns = 1e9 / p->rate;
  if (p->mode == LOAD_ECHO) {
    w->sends = w->nready > 0;
    w->g_next = w->id;
    w->g_step = p->procs;
  } else if (p->mode == LOAD_API) {
    w->sends = false; /* load_api's process sends; how many arrive, only it knows */
  } else {
    w->sends = w->sender != NONE && w->c[w->sender].state == S_READY;
    w->g_next = 0;
    w->g_step = 1;
    /* Every worker knows the sender's schedule: its receivers expect each message once. */
    w->expected = sched_count(w, w->t_measure, w->t_end) * w->receivers_ready;
  }
}

/* Writes the application message carrying due time `sched` into w->msg; returns its length. */
static size_t build_message(worker *w, const conn *k, uint64_t sched, uint64_t g) {
  const load_plan *p = w->p;
  char data[LOAD_MARKER_MAX + 65536];
  size_t ml = load_marker_write(data, sizeof data, sched);
  size_t dl = p->size > ml ? p->size : ml;
  if (dl > sizeof data - 1)
    dl = sizeof data - 1;
  memset(data + ml, 'x', dl - ml);
  data[dl] = '\0';
  int n;
  switch (p->proto) {
  case LOAD_PROTO_CHAT:
    n = snprintf(w->msg, w->msg_cap, "{\"op\":\"say\",\"room\":\"%s\",\"text\":\"%s\"}", p->room,
                 data);
    break;
  case LOAD_PROTO_CHANNEL:
    n = snprintf(w->msg, w->msg_cap, "%s\n%s", p->room, data);
    break;
  case LOAD_PROTO_CENTRIFUGO:
    if (p->mode == LOAD_ECHO)
      n = snprintf(w->msg, w->msg_cap,
                   "{\"id\":%llu,\"publish\":{\"channel\":\"%s-%u\",\"data\":{\"m\":\"%s\"}}}",
                   (unsigned long long)(3 + g % 1000000000u), p->room, k->gidx, data);
    else
      n = snprintf(w->msg, w->msg_cap,
                   "{\"id\":%llu,\"publish\":{\"channel\":\"%s\",\"data\":{\"m\":\"%s\"}}}",
                   (unsigned long long)(3 + g % 1000000000u), p->room, data);
    break;
  default:
    n = (int)dl;
    memcpy(w->msg, data, dl);
    break;
  }
  return n > 0 && (size_t)n < w->msg_cap ? (size_t)n : 0;
}

static uint32_t next_sending_conn(worker *w) {
  if (w->p->mode == LOAD_FANOUT)
    return w->c[w->sender].state == S_READY ? w->sender : NONE;
  for (uint32_t tries = 0; tries < w->nready; tries++) {
    uint32_t i = w->ready_list[w->rr++ % w->nready];
    if (w->c[i].state == S_READY)
      return i;
  }
  return NONE;
}

/* Queues every message due by `now`, then sends each touched connection's bytes at once. */
static void send_due(worker *w, uint64_t now) {
  if (!w->sends)
    return;
  for (;;) {
    uint64_t due = sched_time(w, w->g_next);
    if (due > now || due >= w->t_end)
      break;
    bool measured = due >= w->t_measure;
    uint32_t i = next_sending_conn(w);
    size_t len = i == NONE ? 0 : build_message(w, &w->c[i], due, w->g_next);
    if (len > 0 && out_frame(w, i, LOAD_WS_OP_TEXT, w->msg, len) == 0) {
      w->sent++;
      w->sent_measured += measured;
      if (measured)
        load_hist_record(&w->h_lag, now - due);
      if (!(w->c[i].flags & F_DIRTY)) {
        w->c[i].flags |= F_DIRTY;
        w->dirty[w->ndirty++] = i;
      }
    } else {
      w->dropped++;
    }
    w->g_next += w->g_step;
  }
  for (uint32_t d = 0; d < w->ndirty; d++) {
    uint32_t i = w->dirty[d];
    w->c[i].flags &= (uint8_t)~F_DIRTY;
    out_flush(w, i);
  }
  w->ndirty = 0;
}

/* ----------------------------------------------------------------------------------------- */
/* result                                                                                     */

static int report(worker *w) {
  json_t *fails = json_object(), *errs = json_object(), *refused = json_object(),
         *closes = json_object();
  for (int f = 0; f < FAIL_COUNT; f++) {
    json_object_set_new(fails, fail_key[f], json_integer((json_int_t)w->fails[f]));
    if (w->first_err[f][0])
      json_object_set_new(errs, fail_key[f], json_string(w->first_err[f]));
  }
  char key[16];
  for (int s = 0; s < MAX_STATUS; s++)
    if (w->refused[s]) {
      snprintf(key, sizeof key, "%d", s);
      json_object_set_new(refused, key, json_integer(w->refused[s]));
    }
  for (int c = 0; c < MAX_CLOSE; c++)
    if (w->closes[c]) {
      snprintf(key, sizeof key, "%d", c);
      json_object_set_new(closes, key, json_integer(w->closes[c]));
    }
  json_t *o = json_pack(
      "{sI sI sI sI sI so so so sI so sI sI sI sI sI sI sI so so so}", "worker", (json_int_t)w->id,
      "conns", (json_int_t)w->n, "ready", (json_int_t)w->ready, "failed", (json_int_t)w->failed,
      "receivers_ready", (json_int_t)w->receivers_ready, "fails", fails, "first_errors", errs,
      "refused", refused, "closed_after_ready", (json_int_t)w->closed_ready, "close_codes", closes,
      "ramp_ns", (json_int_t)(w->ramp_end - w->ramp_start), "sent", (json_int_t)w->sent,
      "sent_measured", (json_int_t)w->sent_measured, "dropped", (json_int_t)w->dropped, "received",
      (json_int_t)w->received, "received_measured", (json_int_t)w->received_measured,
      "expected_measured", (json_int_t)(w->p->mode == LOAD_FANOUT ? w->expected : w->sent_measured),
      "h_connect", load_hist_json(&w->h_connect), "h_latency", load_hist_json(&w->h_lat), "h_lag",
      load_hist_json(&w->h_lag));
  struct rusage ru;
  if (o && getrusage(RUSAGE_SELF, &ru) == 0) /* the whole process: ramp, run and drain */
    json_object_set_new(o, "cpu_s",
                        json_real((double)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) +
                                  (double)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6));
  char *s = o ? json_dumps(o, JSON_COMPACT) : NULL;
  json_decref(o);
  if (!s) {
    fprintf(stderr, "wsgate-load worker %u: cannot encode the result\n", w->id);
    return -1;
  }
  char head[32];
  int hl = snprintf(head, sizeof head, "J %zu\n", strlen(s));
  int rc = ctl_write_all(w, head, (size_t)hl) == 0 && ctl_write_all(w, s, strlen(s)) == 0 ? 0 : -1;
  free(s);
  return rc;
}

/* ----------------------------------------------------------------------------------------- */
/* the loop                                                                                   */

static int wait_events(worker *w, struct epoll_event *evs, uint64_t timeout_ns) {
  if (timeout_ns > WAIT_CAP_NS)
    timeout_ns = WAIT_CAP_NS;
  if (w->have_pwait2) {
    struct timespec ts = {.tv_sec = (time_t)(timeout_ns / NS), .tv_nsec = (long)(timeout_ns % NS)};
    int n = epoll_pwait2(w->epfd, evs, EVENTS_MAX, &ts, NULL);
    if (n >= 0 || errno != ENOSYS)
      return n;
    w->have_pwait2 = false; /* kernel before 5.11: millisecond timeouts */
  }
  return epoll_wait(w->epfd, evs, EVENTS_MAX, (int)((timeout_ns + 999999) / 1000000));
}

static void ramp_step(worker *w, uint64_t now) {
  const load_plan *p = w->p;
  uint64_t allowed = w->n;
  if (w->my_rate > 0) {
    double a = (double)(now - w->ramp_start) * w->my_rate / 1e9 + 1.0;
    allowed = a < (double)w->n ? (uint64_t)a : w->n;
  }
  while (w->next_start < allowed && w->inflight < p->max_pending)
    start_conn(w, w->next_start++);
  if (now >= w->next_progress) {
    ctl_send(w, "P %u %u\n", w->ready, w->failed);
    w->next_progress = now + NS;
  }
  if (now - w->ramp_start > p->ramp_timeout_ns) {
    while (w->qhead != NONE)
      fail(w, w->qhead, FAIL_TIMEOUT, "not ready when --ramp-timeout ran out");
    while (w->next_start < w->n)
      fail(w, w->next_start++, FAIL_TIMEOUT, "not started when --ramp-timeout ran out");
  }
  if (w->next_start == w->n && w->inflight == 0) {
    w->ramp_end = now;
    w->phase = P_WAIT_GO;
    ctl_send(w, "R %u %u\n", w->ready, w->failed);
  }
}

static uint64_t next_wake(const worker *w, uint64_t now) {
  uint64_t wake = now + WAIT_CAP_NS;
  if (w->qhead != NONE) {
    uint64_t t = w->c[w->qhead].t_start + w->p->connect_timeout_ns;
    if (t < wake)
      wake = t;
  }
  if (w->phase == P_RAMP && w->next_start < w->n && w->inflight < w->p->max_pending) {
    uint64_t t =
        w->my_rate > 0 ? w->ramp_start + (uint64_t)((double)w->next_start * 1e9 / w->my_rate) : now;
    if (t < wake)
      wake = t;
  }
  if (w->phase == P_RUN) {
    if (w->sends) {
      uint64_t t = sched_time(w, w->g_next);
      if (t < wake)
        wake = t;
    }
    if (w->t_end < wake)
      wake = w->t_end;
  }
  if (w->phase == P_DRAIN && w->t_drain < wake)
    wake = w->t_drain;
  return wake;
}

static bool drained(const worker *w) {
  if (w->p->mode == LOAD_IDLE)
    return true;
  if (w->p->mode == LOAD_API)
    return false; /* the expected count is the sender's: wait the whole --drain */
  uint64_t expected = w->p->mode == LOAD_FANOUT ? w->expected : w->sent_measured;
  return w->received_measured >= expected;
}

static int worker_loop(worker *w) {
  struct epoll_event *evs = malloc(sizeof *evs * EVENTS_MAX);
  if (!evs)
    return -1;
  int rc = 0;
  uint64_t give_up = w->ramp_start + w->p->ramp_timeout_ns + 120 * NS;
  for (;;) {
    uint64_t now = mono_ns();
    if (w->phase == P_RAMP)
      ramp_step(w, now);
    now = mono_ns(); /* connections just started carry later start times */
    while (w->qhead != NONE && now > w->c[w->qhead].t_start + w->p->connect_timeout_ns) {
      conn *k = &w->c[w->qhead];
      fail(w, w->qhead, FAIL_TIMEOUT, "%s after %.1f s",
           k->state == S_CONNECTING ? "TCP connect not done"
           : k->state == S_HTTP     ? "no upgrade answer"
                                    : "no answer to the set-up command",
           (double)(now - k->t_start) / 1e9);
    }
    if (w->phase == P_RUN) {
      send_due(w, now);
      if (now >= w->t_end)
        w->phase = P_DRAIN;
    }
    if (w->phase == P_DRAIN && (now >= w->t_drain || drained(w))) {
      if (report(w) != 0) {
        rc = -1;
        break;
      }
      w->phase = P_WAIT_EXIT;
    }
    if (w->exit_req) {
      rc = w->phase == P_WAIT_EXIT ? 0 : -1; /* the parent gave up on the run */
      break;
    }
    if (w->phase == P_WAIT_GO && now > give_up) {
      fprintf(stderr, "wsgate-load worker %u: no start signal from the parent\n", w->id);
      rc = -1;
      break;
    }
    uint64_t wake = next_wake(w, now);
    int n = wait_events(w, evs, wake > now ? wake - now : 0);
    if (n < 0 && errno != EINTR) {
      fprintf(stderr, "wsgate-load worker %u: epoll: %s\n", w->id, strerror(errno));
      rc = -1;
      break;
    }
    for (int e = 0; e < n; e++) {
      if (evs[e].data.u64 == CTL_TAG) {
        if (ctl_read(w) != 0) {
          rc = w->phase == P_WAIT_EXIT ? 0 : -1; /* parent gone */
          goto out;
        }
        continue;
      }
      uint32_t i = (uint32_t)evs[e].data.u64;
      conn *k = &w->c[i];
      if (k->state == S_DONE || k->fd < 0)
        continue;
      uint32_t ev = evs[e].events;
      if (ev & (EPOLLIN | EPOLLERR | EPOLLHUP)) {
        if (k->state == S_CONNECTING)
          on_writable(w, i); /* SO_ERROR tells what happened */
        else
          on_readable(w, i);
      }
      if ((ev & EPOLLOUT) && k->state != S_DONE && k->fd >= 0)
        on_writable(w, i);
    }
  }
out:
  free(evs);
  return rc;
}

static void worker_free(worker *w) {
  if (w->c)
    for (uint32_t i = 0; i < w->n; i++)
      release(w, &w->c[i]);
  free(w->c);
  free(w->rbuf);
  free(w->msg);
  free(w->ready_list);
  free(w->dirty);
  if (w->token_cache)
    for (uint64_t u = 0; u < w->token_cache_n; u++)
      free(w->token_cache[u]);
  free(w->token_cache);
  if (w->epfd >= 0)
    close(w->epfd);
}

static int raise_nofile(uint32_t need) {
  struct rlimit rl;
  if (getrlimit(RLIMIT_NOFILE, &rl) != 0)
    return -1;
  rl.rlim_cur = rl.rlim_max;
  if (setrlimit(RLIMIT_NOFILE, &rl) != 0)
    return -1;
  return rl.rlim_cur == RLIM_INFINITY || rl.rlim_cur >= (rlim_t)need + FD_RESERVE ? 0 : -1;
}

int load_worker_run(const load_plan *plan, unsigned id, int ctl) {
  /* The parent's death (Ctrl-C, a crash) ends the workers too. */
  prctl(PR_SET_PDEATHSIG, SIGTERM);
  signal(SIGPIPE, SIG_IGN);
  worker *w = calloc(1, sizeof *w);
  if (!w) {
    close(ctl);
    return 1;
  }
  load_hist_init(&w->h_connect);
  load_hist_init(&w->h_lat);
  load_hist_init(&w->h_lag);
  w->p = plan;
  w->id = id;
  w->ctl = ctl;
  w->epfd = -1;
  w->have_pwait2 = true;
  w->qhead = w->qtail = w->sender = NONE;
  w->phase = P_RAMP;
  load_worker_share(plan, id, &w->first, &w->count);
  bool has_sender = plan->mode == LOAD_FANOUT && id == 0;
  w->n = w->count + (has_sender ? 1u : 0u);
  int rc = 1;
  uint64_t seed = mono_ns() ^ ((uint64_t)getpid() << 32);
  w->salt = seed * UINT64_C(0x9E3779B97F4A7C15);
  w->rng = w->salt | 1;
  if (raise_nofile(w->n) != 0) {
    fprintf(stderr,
            "wsgate-load worker %u: %u connections need %u file descriptors, more than this "
            "process may open (ulimit -Hn); use more --procs\n",
            id, w->n, w->n + FD_RESERVE);
    goto done;
  }
  w->msg_cap = plan->size + LOAD_MARKER_MAX + MSG_EXTRA + 256;
  w->c = calloc(w->n ? w->n : 1, sizeof *w->c);
  w->rbuf = malloc(RBUF_SIZE);
  w->msg = malloc(w->msg_cap);
  w->ready_list = malloc(sizeof(uint32_t) * (w->n ? w->n : 1));
  w->dirty = malloc(sizeof(uint32_t) * (w->n ? w->n : 1));
  if (!w->c || !w->rbuf || !w->msg || !w->ready_list || !w->dirty) {
    fprintf(stderr, "wsgate-load worker %u: out of memory for %u connections\n", id, w->n);
    goto done;
  }
  if (plan->token_cmd) {
    /* Users of this worker's connections: a contiguous range unless they wrap around. */
    w->token_cache_first = plan->user_offset;
    w->token_cache_n = (uint64_t)plan->users + 1;
    if (!(w->token_cache = calloc(w->token_cache_n, sizeof(char *)))) {
      fprintf(stderr, "wsgate-load worker %u: out of memory\n", id);
      goto done;
    }
  }
  for (uint32_t i = 0; i < w->n; i++) {
    w->c[i].fd = -1;
    w->c[i].qprev = w->c[i].qnext = NONE;
    w->c[i].gidx = w->first + i;
  }
  if (has_sender) {
    w->sender = w->n - 1;
    w->c[w->sender].flags = F_SENDER;
    w->c[w->sender].gidx = plan->conns; /* one past the receivers */
  }
  w->epfd = epoll_create1(EPOLL_CLOEXEC);
  struct epoll_event cev = {.events = EPOLLIN, .data.u64 = CTL_TAG};
  if (w->epfd < 0 || epoll_ctl(w->epfd, EPOLL_CTL_ADD, ctl, &cev) != 0) {
    fprintf(stderr, "wsgate-load worker %u: epoll: %s\n", id, strerror(errno));
    goto done;
  }
  w->my_rate = plan->connect_rate > 0 ? plan->connect_rate / plan->procs : 0;
  w->ramp_start = mono_ns();
  w->next_progress = w->ramp_start + NS;
  rc = worker_loop(w) == 0 ? 0 : 1;
done:
  worker_free(w);
  free(w);
  close(ctl);
  return rc;
}
