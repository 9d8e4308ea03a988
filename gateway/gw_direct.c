/*
 * gw_direct: the direct reply listener (see gw_direct.h).
 *
 * Threads: the loop thread only.
 */
#include "gw_direct.h"

#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/crypto.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "gw_dack.h"
#include "wsg_dframe.h"
#include "wsg_log.h"
#include "wsg_time.h"

/* A peer must have sent its hello by then; checked by a 1 s sweep. */
#define HELLO_TIMEOUT_MS 5000
#define SWEEP_S          1.0
#define READ_CHUNK       (256u << 10)
#define LOG_PER_S        5
#define ACK_SNDBUF       4096 /* a peer's send buffer (the kernel doubles it) */
/* A barrier not passed by then will not be (the processor gave up long before: its
 * --direct-ack-timeout); the peer is closed. */
#define BARRIER_HOLD_MAX_MS 30000

/* Why a peer was closed, for wsgate_gateway_direct_refused_total{reason}. */
#define REFUSALS(X)                                                                                \
  X(FULL, "full", "--direct-max-peers connections already open")                                   \
  X(SECRET, "secret", "wrong secret in the hello")                                                 \
  X(HELLO, "hello", "the first frame is not a hello of a known version")                           \
  X(HELLO_TIMEOUT, "hello_timeout", "no hello within 5 s")                                         \
  X(FRAME, "frame", "a frame of length 0, above the bound, or out of sequence")                    \
  X(BARRIER, "barrier", "a barrier for a partition this gateway does not read, or not passed")     \
  X(NOMEM, "nomem", "out of memory")

typedef enum {
#define REF_ENUM(name, label, why) REF_##name,
  REFUSALS(REF_ENUM)
#undef REF_ENUM
      REF_COUNT
} refusal;

static const char *const ref_why[] = {
#define REF_WHY(name, label, why) why,
    REFUSALS(REF_WHY)
#undef REF_WHY
};

typedef struct peer {
  struct peer *prev, *next;
  gw_direct *d;
  ev_io rw, ww; /* read; write only while an ack waits for room */
  int fd;
  bool hello;
  uint32_t version; /* the hello's: 2 and above may send barriers */
  bool held;        /* behind a barrier: not read until the partition is dispatched that far */
  int32_t bpart;
  int64_t boff;
  uint64_t since_ms; /* accepted; while held: since when */
  uint64_t done;     /* highest sequence dispatched */
  uint8_t *buf;      /* bytes read, not yet a whole frame */
  size_t len, cap;
  gw_dack ack; /* the ack owed: done, once written whole */
  char addr[64];
} peer;

struct gw_direct {
  struct ev_loop *loop;
  ev_io lw;
  ev_timer sweep_w;
  int lfd, port;
  uint8_t *secret;
  size_t secret_len;
  char *gw_id;
  size_t max_peers, npeers;
  peer *peers;
  gw_direct_dispatch_fn dispatch;
  int64_t (*dispatched)(void *arg, int32_t *slot);
  void *arg;
  wsg_log_ratelimit rl;
  ev_check held_w; /* active while nheld > 0 */
  size_t nheld;

  wsg_gauge *m_peers;
  wsg_counter *m_frames, *m_dropped, *m_acks, *m_accepted;
  wsg_counter *m_barrier_waits, *m_barrier_abandoned;
  wsg_counter *m_refused[REF_COUNT];
};

#define REFUSED_HELP                                                                               \
  "Direct reply connections closed by the gateway, by reason (full, secret, hello, "               \
  "hello_timeout, frame, barrier, nomem)."
#define REF_ROW(name, label, why)                                                                  \
  WSG_COUNTER_ROW(gw_direct, m_refused[REF_##name], "wsgate_gateway_direct_refused_total",         \
                  REFUSED_HELP, "reason=\"" label "\""),
static const wsg_metric_def metric_rows[] = {
    WSG_GAUGE_ROW(gw_direct, m_peers, "wsgate_gateway_direct_peers",
                  "Processors connected to the direct reply listener (hello done or not).", NULL),
    WSG_COUNTER_ROW(gw_direct, m_accepted, "wsgate_gateway_direct_accepted_total",
                    "Connections the direct reply listener accepted whose hello was right.", NULL),
    WSG_COUNTER_ROW(gw_direct, m_frames, "wsgate_gateway_direct_frames_total",
                    "Outbound envelopes received on the direct reply path and dispatched like "
                    "a Kafka record.",
                    NULL),
    WSG_COUNTER_ROW(gw_direct, m_dropped, "wsgate_gateway_direct_dropped_total",
                    "Direct frames acknowledged but not dispatched: not a valid envelope for "
                    "gateways, or addressed to another gateway (fencing), like the Kafka path's "
                    "drops.",
                    NULL),
    WSG_COUNTER_ROW(gw_direct, m_acks, "wsgate_gateway_direct_acks_total",
                    "Cumulative acks written to processors (at most one per read, not per frame; "
                    "one more for the newest sequence after an ack that waited for room).",
                    NULL),
    WSG_COUNTER_ROW(gw_direct, m_barrier_waits, "wsgate_gateway_direct_barrier_waits_total",
                    "Barriers that held a processor's direct frames until the outbound consumer "
                    "had dispatched what Kafka acknowledged before them.",
                    NULL),
    WSG_COUNTER_ROW(gw_direct, m_barrier_abandoned, "wsgate_gateway_direct_barrier_abandoned_total",
                    "Held peers whose processor gave up waiting (reset: its frames went through "
                    "Kafka) or that were closed after 30 s.",
                    NULL),
    REFUSALS(REF_ROW)};
#undef REF_ROW

const wsg_metric_table gw_direct_metric_table =
    WSG_METRIC_TABLE("gateway/gw_direct.c", metric_rows);

/* --- peers ------------------------------------------------------------------------------------ */

static void unhold(peer *p) {
  if (!p->held)
    return;
  p->held = false;
  if (--p->d->nheld == 0)
    ev_check_stop(p->d->loop, &p->d->held_w);
}

static void peer_close(peer *p) {
  gw_direct *d = p->d;
  unhold(p);
  ev_io_stop(d->loop, &p->rw);
  ev_io_stop(d->loop, &p->ww);
  close(p->fd);
  if (p->prev)
    p->prev->next = p->next;
  else
    d->peers = p->next;
  if (p->next)
    p->next->prev = p->prev;
  d->npeers--;
  wsg_gauge_set(d->m_peers, (int64_t)d->npeers);
  free(p->buf);
  free(p);
}

static void refuse(peer *p, refusal why, const char *detail) {
  gw_direct *d = p->d;
  wsg_counter_add(d->m_refused[why], 1);
  wsg_log_limited(&d->rl, LOG_PER_S, wsg_now_mono_ms(), WSG_LOG_WARN, "direct",
                  "closing direct peer %s: %s%s%s", p->addr, ref_why[why], detail ? ": " : "",
                  detail ? detail : "");
  peer_close(p);
}

/* Writes the acks owed until none is or the socket is full (then the write watcher finishes the
 * job: a half-written ack is completed and the newest sequence dispatched by then acked after it).
 * False when the peer is gone. */
static bool ack_flush(peer *p) {
  const uint8_t *bytes;
  size_t len;
  while (gw_dack_next(&p->ack, &bytes, &len)) {
    ssize_t n = send(p->fd, bytes, len, MSG_NOSIGNAL);
    if (n > 0) {
      if (gw_dack_wrote(&p->ack, (size_t)n))
        wsg_counter_add(p->d->m_acks, 1);
      continue;
    }
    if (n < 0 && errno == EINTR)
      continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      ev_io_start(p->d->loop, &p->ww);
      return true;
    }
    peer_close(p); /* the processor is gone: it re-produces what it did not see acked */
    return false;
  }
  ev_io_stop(p->d->loop, &p->ww);
  return true;
}

/* Owes the peer an ack of p->done (once per read, not per frame), sent now if there is room. */
static bool ack(peer *p) {
  gw_dack_due(&p->ack, p->done);
  if (ev_is_active(&p->ww))
    return true; /* the socket is full: write_cb sends it once there is room */
  return ack_flush(p);
}

static void write_cb(struct ev_loop *loop, ev_io *w, int revents) {
  (void)loop;
  (void)revents;
  ack_flush(w->data);
}

/* Whether p's barrier is passed: 1 yes, 0 not yet, -1 never (the peer was closed). */
static int barrier_passed(peer *p) {
  gw_direct *d = p->d;
  int32_t slot = -1;
  int64_t off = d->dispatched ? d->dispatched(d->arg, &slot) : -1;
  if (slot == p->bpart)
    return off >= p->boff;
  if (slot < 0)
    return 0; /* between slots: the processor's ack timeout decides */
  char why[96];
  snprintf(why, sizeof why, "partition %d, this gateway reads %d", (int)p->bpart, (int)slot);
  refuse(p, REF_BARRIER, why);
  return -1;
}

/* A barrier: passed at once, or p is held (consume stops). False: the peer was closed. */
static bool barrier_frame(peer *p, const uint8_t *body, size_t len) {
  gw_direct *d = p->d;
  if (!wsg_dframe_barrier_parse(body, len, &p->bpart, &p->boff)) {
    refuse(p, REF_FRAME, "a malformed barrier");
    return false;
  }
  int rc = barrier_passed(p);
  if (rc != 0)
    return rc > 0;
  WSG_DEBUG("direct", "direct peer %s: holding until partition %d is dispatched to offset %lld",
            p->addr, (int)p->bpart, (long long)p->boff);
  wsg_counter_add(d->m_barrier_waits, 1);
  p->held = true;
  p->since_ms = wsg_now_mono_ms();
  ev_io_stop(d->loop, &p->rw);
  if (d->nheld++ == 0)
    ev_check_start(d->loop, &d->held_w);
  return true;
}

/* One data frame: u64 sequence, then an outbound record's value. False: the peer was closed. */
static bool data_frame(peer *p, const uint8_t *body, size_t len) {
  gw_direct *d = p->d;
  if (len <= WSG_DFRAME_SEQ) {
    refuse(p, REF_FRAME, "no envelope after the sequence number");
    return false;
  }
  uint64_t seq = wsg_dframe_get64(body);
  if (seq == 0 && p->version >= WSG_DFRAME_BARRIER_VERSION)
    return barrier_frame(p, body, len);
  if (seq != p->done + 1) {
    refuse(p, REF_FRAME, "sequence number out of order");
    return false;
  }
  p->done = seq;
  gw_outbound it = {0};
  wsg_envelope env;
  int env_rc = 0;
  const char *field = NULL;
  gw_outdec_result rc = gw_outbound_decode(body + WSG_DFRAME_SEQ, len - WSG_DFRAME_SEQ, d->gw_id,
                                           strlen(d->gw_id), &it, &env, &env_rc, &field);
  it.partition = -1;
  if (rc != GW_OUTDEC_OK) {
    /* Acknowledged all the same: the Kafka path drops these too, and a retry would not help. */
    wsg_counter_add(d->m_dropped, 1);
    wsg_log_limited(&d->rl, LOG_PER_S, wsg_now_mono_ms(), WSG_LOG_WARN, "direct",
                    "dropping direct frame %llu from %s: %s", (unsigned long long)seq, p->addr,
                    rc == GW_OUTDEC_FENCED  ? "addressed to another gateway"
                    : rc == GW_OUTDEC_NOMEM ? "out of memory"
                    : rc == GW_OUTDEC_KIND  ? "not a kind for gateways"
                                            : "not a valid outbound envelope");
    return true;
  }
  wsg_counter_add(d->m_frames, 1);
  d->dispatch(d->arg, &it);
  gw_outbound_finish(&it);
  return true;
}

static bool hello_frame(peer *p, const uint8_t *body, size_t len) {
  gw_direct *d = p->d;
  const uint8_t *secret = NULL;
  size_t slen = 0;
  if (wsg_dframe_hello_parse(body, len, &secret, &slen, &p->version) != WSG_DHELLO_OK) {
    refuse(p, REF_HELLO, NULL);
    return false;
  }
  if (slen != d->secret_len || CRYPTO_memcmp(secret, d->secret, slen) != 0) {
    refuse(p, REF_SECRET, NULL);
    return false;
  }
  p->hello = true;
  wsg_counter_add(d->m_accepted, 1);
  WSG_INFO("direct", "processor connected from %s", p->addr);
  return true;
}

/* Parses and handles every whole frame in p->buf, up to a barrier that holds it. False: the peer
 * was closed. */
static bool consume(peer *p) {
  size_t off = 0;
  uint64_t before = p->done;
  while (!p->held) {
    const uint8_t *body;
    size_t blen, used;
    size_t max = p->hello ? WSG_DFRAME_MAX : WSG_DFRAME_HELLO_MAX;
    wsg_dframe_rc rc = wsg_dframe_next(p->buf + off, p->len - off, max, &body, &blen, &used);
    if (rc == WSG_DFRAME_MORE)
      break;
    if (rc != WSG_DFRAME_OK) {
      refuse(p, p->hello ? REF_FRAME : REF_HELLO,
             rc == WSG_DFRAME_EMPTY ? "length 0" : "length above the bound");
      return false;
    }
    if (!(p->hello ? data_frame(p, body, blen) : hello_frame(p, body, blen)))
      return false;
    off += used;
  }
  if (off) {
    memmove(p->buf, p->buf + off, p->len - off);
    p->len -= off;
  }
  return p->done == before || ack(p);
}

/* A reset first: the processor gave up on this connection and sent its unacked frames through
 * Kafka; what is still unread here must not be dispatched again (or after newer ones). True
 * when p was closed. */
static bool was_reset(peer *p) {
  int soerr = 0;
  socklen_t sl = sizeof soerr;
  if (getsockopt(p->fd, SOL_SOCKET, SO_ERROR, &soerr, &sl) == 0 && soerr != 0) {
    WSG_INFO("direct", "direct peer %s: %s; closed", p->addr, strerror(soerr));
    if (p->held)
      wsg_counter_add(p->d->m_barrier_abandoned, 1);
    peer_close(p);
    return true;
  }
  return false;
}

/* A held peer: closed if its processor gave up or it waited too long, resumed (what it had read
 * behind the barrier handled now) once the barrier is passed. */
static void check_held(peer *p, uint64_t now) {
  if (was_reset(p))
    return;
  if (now - p->since_ms >= BARRIER_HOLD_MAX_MS) {
    wsg_counter_add(p->d->m_barrier_abandoned, 1);
    refuse(p, REF_BARRIER, "not passed within 30 s");
    return;
  }
  if (barrier_passed(p) <= 0)
    return;
  unhold(p);
  ev_io_start(p->d->loop, &p->rw);
  consume(p); /* what it read behind the barrier; the socket is read again from now */
}

static void check_all_held(gw_direct *d) {
  uint64_t now = wsg_now_mono_ms();
  for (peer *p = d->peers, *next; p; p = next) {
    next = p->next;
    if (p->held)
      check_held(p, now);
  }
}

/* After every loop iteration while a peer is held: the Kafka records dispatched in it may have
 * passed its barrier. */
static void held_cb(struct ev_loop *loop, ev_check *w, int revents) {
  (void)loop;
  (void)revents;
  check_all_held(w->data);
}

static void read_cb(struct ev_loop *loop, ev_io *w, int revents) {
  (void)loop;
  (void)revents;
  peer *p = w->data;
  if (was_reset(p))
    return;
  if (p->cap - p->len < READ_CHUNK / 4) {
    size_t need = p->cap ? p->cap * 2 : READ_CHUNK;
    size_t bound = WSG_DFRAME_HDR + WSG_DFRAME_MAX + READ_CHUNK;
    if (need > bound)
      need = bound;
    if (need > p->cap) {
      uint8_t *nb = realloc(p->buf, need);
      if (!nb) {
        refuse(p, REF_NOMEM, NULL);
        return;
      }
      p->buf = nb;
      p->cap = need;
    }
  }
  ssize_t n = recv(p->fd, p->buf + p->len, p->cap - p->len, 0);
  if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
    return;
  if (n <= 0) {
    if (n < 0)
      WSG_INFO("direct", "direct peer %s: %s; closed", p->addr, strerror(errno));
    peer_close(p);
    return;
  }
  p->len += (size_t)n;
  consume(p);
}

static void describe(const struct sockaddr_storage *ss, char *out, size_t outlen) {
  char host[INET6_ADDRSTRLEN + 1] = "?", port[8] = "?";
  getnameinfo((const struct sockaddr *)ss, sizeof *ss, host, sizeof host, port, sizeof port,
              NI_NUMERICHOST | NI_NUMERICSERV);
  snprintf(out, outlen, "%s:%s", host, port);
}

static void accept_cb(struct ev_loop *loop, ev_io *w, int revents) {
  (void)revents;
  gw_direct *d = w->data;
  for (int i = 0; i < 64; i++) {
    struct sockaddr_storage ss;
    socklen_t sl = sizeof ss;
    int fd = accept4(d->lfd, (struct sockaddr *)&ss, &sl, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) {
      if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
        wsg_log_limited(&d->rl, LOG_PER_S, wsg_now_mono_ms(), WSG_LOG_WARN, "direct", "accept: %s",
                        strerror(errno));
      return;
    }
    char addr[64];
    describe(&ss, addr, sizeof addr);
    if (d->npeers >= d->max_peers) {
      wsg_counter_add(d->m_refused[REF_FULL], 1);
      wsg_log_limited(&d->rl, LOG_PER_S, wsg_now_mono_ms(), WSG_LOG_WARN, "direct",
                      "refusing direct peer %s: %s", addr, ref_why[REF_FULL]);
      close(fd);
      continue;
    }
    peer *p = calloc(1, sizeof *p);
    if (!p) {
      wsg_counter_add(d->m_refused[REF_NOMEM], 1);
      close(fd);
      continue;
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    /* Only acks go this way, 12 bytes and cumulative: a deep send buffer (loopback's grows to
     * 4 MB) would hold stale ones for a processor slow to read; the newest waits in p->ack. */
    int sndbuf = ACK_SNDBUF;
    setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &sndbuf, sizeof sndbuf);
    p->d = d;
    p->fd = fd;
    p->since_ms = wsg_now_mono_ms();
    snprintf(p->addr, sizeof p->addr, "%s", addr);
    ev_io_init(&p->rw, read_cb, fd, EV_READ);
    ev_io_init(&p->ww, write_cb, fd, EV_WRITE);
    p->rw.data = p->ww.data = p;
    p->next = d->peers;
    if (d->peers)
      d->peers->prev = p;
    d->peers = p;
    d->npeers++;
    wsg_gauge_set(d->m_peers, (int64_t)d->npeers);
    ev_io_start(loop, &p->rw);
  }
}

static void sweep_cb(struct ev_loop *loop, ev_timer *w, int revents) {
  (void)loop;
  (void)revents;
  gw_direct *d = w->data;
  uint64_t now = wsg_now_mono_ms();
  for (peer *p = d->peers, *next; p; p = next) {
    next = p->next;
    if (!p->hello && now - p->since_ms >= HELLO_TIMEOUT_MS)
      refuse(p, REF_HELLO_TIMEOUT, NULL);
  }
  check_all_held(d);
}

/* --- listener --------------------------------------------------------------------------------- */

static int listen_on(const char *spec, int *port_out, char *err, size_t errlen) {
  char host[256];
  const char *port;
  if (!wsg_dframe_split_addr(spec, host, sizeof host, &port)) {
    snprintf(err, errlen, "--direct-listen %s: expected host:port (e.g. 10.0.0.5:7070)", spec);
    return -1;
  }
  struct addrinfo hints = {
      .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM, .ai_flags = AI_PASSIVE | AI_NUMERICSERV};
  struct addrinfo *ai = NULL;
  int grc = getaddrinfo(host, port, &hints, &ai);
  if (grc != 0) {
    snprintf(err, errlen, "--direct-listen %s: %s", spec, gai_strerror(grc));
    return -1;
  }
  int fd = socket(ai->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  int one = 1;
  if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) != 0 ||
      bind(fd, ai->ai_addr, ai->ai_addrlen) != 0 || listen(fd, 128) != 0) {
    snprintf(err, errlen, "--direct-listen %s: %s", spec, strerror(errno));
    if (fd >= 0)
      close(fd);
    freeaddrinfo(ai);
    return -1;
  }
  freeaddrinfo(ai);
  struct sockaddr_storage ss;
  socklen_t sl = sizeof ss;
  getsockname(fd, (struct sockaddr *)&ss, &sl);
  *port_out = ntohs(ss.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&ss)->sin6_port
                                             : ((struct sockaddr_in *)&ss)->sin_port);
  return fd;
}

int gw_direct_create(gw_direct **out, const gw_direct_options *o, char *err, size_t errlen) {
  *out = NULL;
  gw_direct *d = calloc(1, sizeof *d);
  if (!d || !(d->secret = malloc(o->secret_len ? o->secret_len : 1)) ||
      !(d->gw_id = strdup(o->gw_id))) {
    snprintf(err, errlen, "out of memory");
    gw_direct_destroy(d);
    return -1;
  }
  memcpy(d->secret, o->secret, o->secret_len);
  d->secret_len = o->secret_len;
  d->loop = o->loop;
  d->max_peers = o->max_peers;
  d->dispatch = o->dispatch;
  d->dispatched = o->dispatched;
  d->arg = o->arg;
  ev_check_init(&d->held_w, held_cb);
  d->held_w.data = d;
  d->lfd = -1;
  if (o->metrics)
    wsg_metrics_register_table(o->metrics, &gw_direct_metric_table, d);
  if ((d->lfd = listen_on(o->listen, &d->port, err, errlen)) < 0) {
    gw_direct_destroy(d);
    return -1;
  }
  ev_io_init(&d->lw, accept_cb, d->lfd, EV_READ);
  d->lw.data = d;
  ev_io_start(d->loop, &d->lw);
  ev_timer_init(&d->sweep_w, sweep_cb, SWEEP_S, SWEEP_S);
  d->sweep_w.data = d;
  ev_timer_start(d->loop, &d->sweep_w);
  WSG_INFO("direct", "direct reply listener on %s (port %d)", o->listen, d->port);
  *out = d;
  return 0;
}

int gw_direct_port(const gw_direct *d) {
  return d->port;
}

void gw_direct_destroy(gw_direct *d) {
  if (!d)
    return;
  while (d->peers)
    peer_close(d->peers);
  if (d->lfd >= 0) {
    ev_io_stop(d->loop, &d->lw);
    ev_timer_stop(d->loop, &d->sweep_w);
    close(d->lfd);
  }
  if (d->secret)
    explicit_bzero(d->secret, d->secret_len);
  free(d->secret);
  free(d->gw_id);
  free(d);
}
