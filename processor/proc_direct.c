/*
 * proc_direct: the processor's side of the direct reply path (see proc_direct.h).
 *
 * Per gateway a `gwpeer`: its address (from Redis), its connection and one byte buffer of
 * framed envelopes, [head, wr) written and not yet acknowledged, [wr, len) not yet written; the
 * frames' tickets and places are in a parallel array in sequence order.
 *
 * Threads: the consumer thread only.
 */
#include "proc_direct.h"

#include <errno.h>
#include <inttypes.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "wsg_dframe.h"
#include "wsg_envelope.h"
#include "wsg_log.h"
#include "wsg_redis_keys.h"
#include "wsg_time.h"

#define MAX_PEERS       1024 /* gateways tracked; more go through Kafka */
#define ADDR_MAX        270  /* host:port */
#define LOOKUP_RETRY_MS 1000 /* after Redis failed a lookup */
#define FRAME_HDR       (WSG_DFRAME_HDR + WSG_DFRAME_SEQ)
#define LOG_PER_S       1
#define LOOKUP_BATCH    64
#define KEY_MAX         (WSG_MAX_GATEWAY_LEN + 256)

/* Why a gateway's replies went back to Kafka: wsgate_processor_direct_fallbacks_total{reason}. */
#define REASONS(X)                                                                                 \
  X(CONNECT, "connect")                                                                            \
  X(CONNECT_TIMEOUT, "connect_timeout")                                                            \
  X(CLOSED, "closed")                                                                              \
  X(WRITE, "write")                                                                                \
  X(ACK_TIMEOUT, "ack_timeout")                                                                    \
  X(BARRIER_TIMEOUT, "barrier_timeout")                                                            \
  X(PROTOCOL, "protocol")                                                                          \
  X(FULL, "full")                                                                                  \
  X(TOO_BIG, "too_big")                                                                            \
  X(MOVED, "moved")

typedef enum {
#define R_ENUM(name, label) R_##name,
  REASONS(R_ENUM)
#undef R_ENUM
      R_COUNT
} reason;

static const char *const reason_name[] = {
#define R_NAME(name, label) label,
    REASONS(R_NAME)
#undef R_NAME
};

typedef enum { P_IDLE, P_CONNECTING, P_UP, P_DOWN } pstate;

typedef struct {
  proc_ticket *t;
  size_t off, len; /* the whole frame in the peer's buffer (prefix and sequence included) */
  uint64_t seq;
} frame;

typedef struct {
  char id[WSG_MAX_GATEWAY_LEN + 1];
  uint16_t id_len;
  char addr[ADDR_MAX + 1]; /* "" : none advertised */
  uint64_t addr_until_ms;  /* 0: never looked up */
  uint64_t lookup_after_ms;
  bool used; /* sent to since its last lookup */
  pstate st;
  int fd;
  uint64_t deadline_ms; /* CONNECTING: give up; DOWN: try again */
  int32_t partition;
  bool switched; /* has written since the connection came up */
  /* The barrier sent at the switch (-1: none), and the highest one the gateway passed: a switch
   * sends one when Kafka acknowledged a record to the partition after that. */
  int64_t barrier_sent, barrier_passed;
  uint8_t *buf;
  size_t head, wr, len, cap;
  frame *frames;
  size_t fhead, fn, fcap; /* frames[fhead, fn) are unacknowledged */
  uint64_t next_seq;
  /* Since when written frames wait for an ack: the first write after all were acknowledged, then
   * every ack that acknowledged more (0: none wait). Not the age of the oldest frame: an overloaded
   * gateway that keeps acknowledging, only later than the timeout after a frame's send, is alive.
   */
  uint64_t ack_wait_ms;
  uint8_t in[WSG_DFRAME_HDR + WSG_DFRAME_SEQ];
  size_t inlen;
} gwpeer;

struct proc_direct {
  proc_direct_options o;
  uint8_t hello[WSG_DFRAME_HELLO_MAX];
  size_t hello_len;
  gwpeer *peers;
  size_t npeers;
  size_t last; /* the peer found last: most batches reply to one or two gateways */
  struct pollfd *pfds;
  size_t *pix;
  wsg_log_ratelimit rl;
  char keys[LOOKUP_BATCH][KEY_MAX]; /* lookup()'s scratch */

  wsg_counter *m_sent;
  wsg_counter *m_fallback[R_COUNT];
  wsg_counter *m_refallback; /* frames re-produced to Kafka */
  wsg_counter *m_barriers;
  wsg_histogram *m_full_wait;
  wsg_gauge *m_connected;
};

#define FALLBACK_HELP                                                                              \
  "Times a gateway's direct connection was given up (its unacknowledged replies produced to "      \
  "Kafka, then Kafka for --direct-backoff), by reason."
#define R_ROW(name, label)                                                                         \
  WSG_COUNTER_ROW(proc_direct, m_fallback[R_##name], "wsgate_processor_direct_fallbacks_total",    \
                  FALLBACK_HELP, "reason=\"" label "\""),
static const double full_wait_bounds[] = WSG_HOP_BOUNDS;
static const wsg_metric_def metric_rows[] = {
    WSG_COUNTER_ROW(proc_direct, m_sent, "wsgate_processor_direct_frames_total",
                    "Outbound envelopes sent on the direct reply path instead of Kafka.", NULL),
    WSG_COUNTER_ROW(proc_direct, m_refallback, "wsgate_processor_direct_reproduced_total",
                    "Direct frames produced to Kafka after all because their gateway was given "
                    "up before acknowledging them (some may have been delivered: at least once).",
                    NULL),
    WSG_COUNTER_ROW(proc_direct, m_barriers, "wsgate_processor_direct_barriers_total",
                    "Barriers sent when switching a gateway back to direct replies: it "
                    "dispatches nothing after one until its outbound consumer has dispatched the "
                    "replies Kafka acknowledged before (reason barrier_timeout when it did not in "
                    "--direct-ack-timeout).",
                    NULL),
    WSG_HISTOGRAM_ROW(proc_direct, m_full_wait, "wsgate_processor_direct_full_wait_seconds",
                      "Waits of the consumer for a gateway's acks to make room under "
                      "--direct-max-unacked (backpressure: the gateway acknowledges, only slower "
                      "than replies come) instead of giving it up.",
                      NULL, full_wait_bounds),
    WSG_GAUGE_ROW(proc_direct, m_connected, "wsgate_processor_direct_peers",
                  "Gateways this processor has a direct connection up to.", NULL),
    REASONS(R_ROW)};
#undef R_ROW

const wsg_metric_table proc_direct_metric_table =
    WSG_METRIC_TABLE("processor/proc_direct.c", metric_rows);

/* --- peers ------------------------------------------------------------------------------------ */

static void set_connected(proc_direct *d) {
  int64_t n = 0;
  for (size_t i = 0; i < d->npeers; i++)
    n += d->peers[i].st == P_UP;
  if (d->m_connected)
    wsg_gauge_set(d->m_connected, n);
}

static gwpeer *find(proc_direct *d, const char *gw, size_t len, bool add) {
  if (d->last < d->npeers && d->peers[d->last].id_len == len &&
      memcmp(d->peers[d->last].id, gw, len) == 0)
    return &d->peers[d->last];
  for (size_t i = 0; i < d->npeers; i++)
    if (d->peers[i].id_len == len && memcmp(d->peers[i].id, gw, len) == 0)
      return &d->peers[d->last = i];
  if (!add || d->npeers >= MAX_PEERS || len == 0 || len > WSG_MAX_GATEWAY_LEN)
    return NULL;
  gwpeer *p = &d->peers[d->npeers];
  memset(p, 0, sizeof *p);
  memcpy(p->id, gw, len);
  p->id_len = (uint16_t)len;
  p->fd = -1;
  p->partition = -1;
  p->barrier_sent = p->barrier_passed = -1;
  d->last = d->npeers++;
  return p;
}

static void reset_buffers(gwpeer *p) {
  p->head = p->wr = p->len = 0;
  p->fhead = p->fn = 0;
  p->inlen = 0;
  p->ack_wait_ms = 0;
}

/* Gives up on p's connection: reset (so the gateway drops what it has not read yet), every
 * unacknowledged frame produced to Kafka in order, Kafka for --direct-backoff. */
static void fall_back(proc_direct *d, gwpeer *p, reason why, const char *detail) {
  if (p->fd >= 0) {
    struct linger lg = {.l_onoff = 1, .l_linger = 0};
    setsockopt(p->fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
    close(p->fd);
    p->fd = -1;
  }
  /* Down before producing: a produce that waits for room serves the other peers' acks
   * (proc_consumer's side), and must find this one out of the way. */
  bool was_up = p->st == P_UP;
  p->st = P_DOWN;
  size_t n = p->fn - p->fhead;
  for (size_t i = p->fhead; i < p->fn; i++) {
    frame *f = &p->frames[i];
    /* A failure here stops the processor (proc_consumer_failed); the ticket is Kafka's. */
    proc_consumer_produce_held(d->o.cons, f->t, p->buf + f->off + FRAME_HDR, f->len - FRAME_HDR);
  }
  if (n && d->m_refallback)
    wsg_counter_add(d->m_refallback, n);
  reset_buffers(p);
  p->switched = false;
  p->barrier_sent = -1;
  p->deadline_ms = wsg_now_mono_ms() + d->o.backoff_ms;
  if (d->m_fallback[why])
    wsg_counter_add(d->m_fallback[why], 1);
  wsg_log_limited(&d->rl, LOG_PER_S, wsg_now_mono_ms(), WSG_LOG_WARN, "direct",
                  "gateway %s (%s): %s%s%s; %zu replies re-sent through Kafka, Kafka for the next "
                  "%" PRIu64 " ms",
                  p->id, p->addr, reason_name[why], detail ? ": " : "", detail ? detail : "", n,
                  d->o.backoff_ms);
  if (was_up)
    set_connected(d);
}

/* --- sending ---------------------------------------------------------------------------------- */

static void write_some(proc_direct *d, gwpeer *p);

static int reserve(gwpeer *p, size_t more) {
  if (p->head > 0 && p->head == p->len) {
    p->head = p->wr = p->len = 0; /* all acknowledged (an ack being read stays) */
  } else if (p->head > 0 && p->head >= p->cap / 2) {
    /* Slide the unacknowledged bytes to the front. */
    memmove(p->buf, p->buf + p->head, p->len - p->head);
    for (size_t i = p->fhead; i < p->fn; i++)
      p->frames[i].off -= p->head;
    p->wr -= p->head;
    p->len -= p->head;
    p->head = 0;
  }
  if (p->len + more > p->cap) {
    size_t ncap = p->cap ? p->cap : 64 * 1024;
    while (ncap < p->len + more)
      ncap *= 2;
    uint8_t *nb = realloc(p->buf, ncap);
    if (!nb)
      return -1;
    p->buf = nb;
    p->cap = ncap;
  }
  if (p->fhead > 0 && p->fhead == p->fn) {
    p->fhead = p->fn = 0;
  } else if (p->fhead > 0 && p->fhead >= p->fcap / 2) {
    memmove(p->frames, p->frames + p->fhead, (p->fn - p->fhead) * sizeof(frame));
    p->fn -= p->fhead;
    p->fhead = 0;
  }
  if (p->fn == p->fcap) {
    size_t ncap = p->fcap ? p->fcap * 2 : 256;
    frame *nf = realloc(p->frames, ncap * sizeof(frame));
    if (!nf)
      return -1;
    p->frames = nf;
    p->fcap = ncap;
  }
  return 0;
}

/* More than --direct-max-unacked would be unacknowledged with `need` more bytes: the gateway is
 * waited for, like a produce waits for librdkafka's queue. Under overload it acknowledges, only
 * slower than replies come; giving it up would send its backlog through Kafka, the costlier path,
 * exactly when the box has no time to spare (docs/GATEWAY.md, "Overload"). The wait serves acks
 * and the timeouts (proc_direct_service), so a gateway that stops acknowledging is given up
 * --direct-ack-timeout after its last ack, as one that cannot write (the switch waiting for
 * Kafka) after that long without room. 1: room made; 0: given up (Kafka takes the frame); -1:
 * the consumer failed. */
static int wait_for_room(proc_direct *d, gwpeer *p, size_t need) {
  if (need > d->o.max_unacked) {
    fall_back(d, p, R_FULL, NULL);
    return 0;
  }
  uint64_t t0_us = wsg_now_mono_us(), progress = wsg_now_mono_ms();
  size_t head = p->head; /* only acks move it during the wait */
  int rc = 1;
  while (p->st == P_UP && p->len - p->head + need > d->o.max_unacked) {
    write_some(d, p);
    if (p->st != P_UP)
      break;
    uint64_t now = wsg_now_mono_ms();
    if (p->head != head) {
      head = p->head;
      progress = now;
    }
    /* Written frames waiting for an ack are the service's (ack_timeout, barrier_timeout). */
    if (!p->ack_wait_ms && now - progress >= d->o.ack_timeout_ms) {
      fall_back(d, p, R_FULL, "no room made within --direct-ack-timeout");
      break;
    }
    if (!proc_consumer_wait_side(d->o.cons)) {
      rc = -1;
      break;
    }
  }
  if (d->m_full_wait)
    wsg_histogram_observe(d->m_full_wait, (double)(wsg_now_mono_us() - t0_us) / 1e6);
  return p->st == P_UP ? rc : 0;
}

int proc_direct_send(proc_direct *d, proc_record *r, const char *gw, size_t gw_len,
                     int32_t partition, const uint8_t *env, size_t len) {
  gwpeer *p = find(d, gw, gw_len, true);
  if (!p)
    return 0;
  if (partition != p->partition)
    p->barrier_passed = -1; /* a new slot: offsets of the old partition say nothing */
  p->partition = partition;
  p->used = true; /* its address is read again at the end of the batch once stale */
  if (p->st != P_UP)
    return 0;
  /* Past a bound the frame goes through Kafka, and so must everything queued before it. */
  if (len > WSG_DFRAME_MAX_ENVELOPE) {
    fall_back(d, p, R_TOO_BIG, NULL);
    return 0;
  }
  if (p->len - p->head + FRAME_HDR + len > d->o.max_unacked) {
    int rc = wait_for_room(d, p, FRAME_HDR + len);
    if (rc <= 0)
      return rc;
  }
  if (reserve(p, FRAME_HDR + len) != 0)
    return -1;
  proc_ticket *t = proc_consumer_hold(d->o.cons, r, partition);
  if (!t)
    return -1;
  frame *f = &p->frames[p->fn++];
  *f = (frame){.t = t, .off = p->len, .len = FRAME_HDR + len, .seq = ++p->next_seq};
  uint8_t *w = p->buf + p->len;
  wsg_dframe_put32(w, (uint32_t)(WSG_DFRAME_SEQ + len));
  wsg_dframe_put64(w + WSG_DFRAME_HDR, f->seq);
  memcpy(w + FRAME_HDR, env, len);
  p->len += f->len;
  if (d->m_sent)
    wsg_counter_add(d->m_sent, 1);
  return 1;
}

/* The switch to direct: a barrier first when Kafka acknowledged records to the partition that
 * the gateway has not been seen to pass, so the gateway dispatches none of the frames after it
 * before those records. Nothing else is written yet: it goes right after the hello. */
static bool send_barrier(proc_direct *d, gwpeer *p) {
  int64_t off = proc_consumer_kafka_acked(d->o.cons, p->partition);
  if (off <= p->barrier_passed)
    return true;
  uint8_t b[WSG_DFRAME_BARRIER_LEN];
  wsg_dframe_barrier(b, p->partition, off);
  ssize_t n = send(p->fd, b, sizeof b, MSG_NOSIGNAL | MSG_DONTWAIT);
  if (n != (ssize_t)sizeof b) {
    fall_back(d, p, R_WRITE, n < 0 ? strerror(errno) : "the barrier did not fit");
    return false;
  }
  p->barrier_sent = off;
  if (d->m_barriers)
    wsg_counter_add(d->m_barriers, 1);
  return true;
}

/* Writes what is queued, once nothing this processor produced to the partition is in flight. */
static void write_some(proc_direct *d, gwpeer *p) {
  if (p->st != P_UP || p->wr == p->len)
    return;
  if (!p->switched) {
    if (proc_consumer_kafka_inflight(d->o.cons, p->partition) > 0)
      return;
    if (!send_barrier(d, p))
      return;
    p->switched = true;
  }
  while (p->wr < p->len) {
    ssize_t n = send(p->fd, p->buf + p->wr, p->len - p->wr, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n > 0) {
      if (p->ack_wait_ms == 0)
        p->ack_wait_ms = wsg_now_mono_ms();
      p->wr += (size_t)n;
      continue;
    }
    if (n < 0 && errno == EINTR)
      continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
      return;
    fall_back(d, p, R_WRITE, strerror(errno));
    return;
  }
}

/* --- acks ------------------------------------------------------------------------------------- */

static void acked(proc_direct *d, gwpeer *p, uint64_t seq) {
  bool progress = false;
  while (p->fhead < p->fn && p->frames[p->fhead].seq <= seq) {
    frame *f = &p->frames[p->fhead];
    if (f->off + f->len > p->wr)
      break; /* acknowledged before written: a confused peer; caught below */
    p->fhead++;
    proc_consumer_release(d->o.cons, f->t);
    p->head = f->off + f->len;
    progress = true;
  }
  if (seq > p->next_seq || (p->fhead < p->fn && p->frames[p->fhead].seq <= seq)) {
    fall_back(d, p, R_PROTOCOL, "acknowledged a frame not sent");
    return;
  }
  if (progress) {
    p->ack_wait_ms = p->head < p->wr ? wsg_now_mono_ms() : 0;
    if (p->barrier_sent > p->barrier_passed)
      p->barrier_passed = p->barrier_sent; /* acked frames come after it */
  }
}

static void read_acks(proc_direct *d, gwpeer *p) {
  for (;;) {
    ssize_t n = recv(p->fd, p->in + p->inlen, sizeof p->in - p->inlen, MSG_DONTWAIT);
    if (n < 0 && errno == EINTR)
      continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
      return;
    if (n <= 0) {
      fall_back(d, p, R_CLOSED, n < 0 ? strerror(errno) : "closed by the gateway");
      return;
    }
    p->inlen += (size_t)n;
    if (p->inlen < sizeof p->in)
      continue;
    p->inlen = 0;
    if (wsg_dframe_get32(p->in) != WSG_DFRAME_SEQ) {
      fall_back(d, p, R_PROTOCOL, "an ack of the wrong length");
      return;
    }
    acked(d, p, wsg_dframe_get64(p->in + WSG_DFRAME_HDR));
    if (p->st != P_UP)
      return;
  }
}

/* --- connections ------------------------------------------------------------------------------ */

static void start_connect(proc_direct *d, gwpeer *p, uint64_t now) {
  char host[ADDR_MAX + 1];
  const char *port;
  if (!wsg_dframe_split_addr(p->addr, host, sizeof host, &port)) {
    fall_back(d, p, R_CONNECT, "its direct address is not host:port");
    return;
  }
  struct addrinfo hints = {
      .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM, .ai_flags = AI_NUMERICSERV};
  struct addrinfo *ai = NULL;
  int grc = getaddrinfo(host, port, &hints, &ai);
  if (grc != 0) {
    fall_back(d, p, R_CONNECT, gai_strerror(grc));
    return;
  }
  int fd = socket(ai->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    freeaddrinfo(ai);
    fall_back(d, p, R_CONNECT, strerror(errno));
    return;
  }
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  int rc = connect(fd, ai->ai_addr, ai->ai_addrlen);
  int err = errno;
  freeaddrinfo(ai);
  p->fd = fd;
  if (rc != 0 && err != EINPROGRESS) {
    fall_back(d, p, R_CONNECT, strerror(err));
    return;
  }
  p->st = P_CONNECTING;
  p->deadline_ms = now + d->o.connect_timeout_ms;
}

/* The connect finished: the hello goes first, into an empty socket buffer. */
static void connected(proc_direct *d, gwpeer *p) {
  int soerr = 0;
  socklen_t sl = sizeof soerr;
  if (getsockopt(p->fd, SOL_SOCKET, SO_ERROR, &soerr, &sl) != 0)
    soerr = errno;
  if (soerr) {
    fall_back(d, p, R_CONNECT, strerror(soerr));
    return;
  }
  ssize_t n = send(p->fd, d->hello, d->hello_len, MSG_NOSIGNAL | MSG_DONTWAIT);
  if (n != (ssize_t)d->hello_len) {
    fall_back(d, p, R_WRITE, n < 0 ? strerror(errno) : "the hello did not fit");
    return;
  }
  reset_buffers(p);
  p->next_seq = 0;
  p->switched = false;
  p->barrier_sent = -1;
  p->st = P_UP;
  set_connected(d);
  WSG_INFO("direct", "gateway %s: direct connection to %s up", p->id, p->addr);
}

/* --- addresses -------------------------------------------------------------------------------- */

/* Reads `direct` of every gateway whose address is wanted and stale, in one pipeline. */
static void lookup(proc_direct *d, uint64_t now) {
  size_t ix[LOOKUP_BATCH], n = 0;
  for (size_t i = 0; i < d->npeers && n < LOOKUP_BATCH; i++) {
    gwpeer *p = &d->peers[i];
    if (p->used && p->addr_until_ms <= now && p->lookup_after_ms <= now)
      ix[n++] = i;
  }
  if (n == 0)
    return;
  char(*keys)[KEY_MAX] = d->keys;
  const char *argv[LOOKUP_BATCH][3];
  wsgate_redis_cmd cmds[LOOKUP_BATCH];
  const char *prefix = proc_redis_prefix(d->o.router);
  for (size_t k = 0; k < n; k++) {
    wsg_key_gateway(keys[k], sizeof keys[k], prefix, d->peers[ix[k]].id);
    argv[k][0] = "HGET";
    argv[k][1] = keys[k];
    argv[k][2] = "direct";
    cmds[k] = (wsgate_redis_cmd){.argc = 3, .argv = argv[k], .argvlen = NULL};
  }
  const wsgate_redis_reply *reps = NULL;
  void *block = NULL;
  char err[256];
  if (proc_redis_pipeline(d->o.router, cmds, n, &reps, &block, err, sizeof err) != WSGATE_OK) {
    wsg_log_limited(&d->rl, LOG_PER_S, now, WSG_LOG_WARN, "direct",
                    "looking up gateways' direct addresses: %s; replies go through Kafka", err);
    for (size_t k = 0; k < n; k++)
      d->peers[ix[k]].lookup_after_ms = now + LOOKUP_RETRY_MS;
    return;
  }
  for (size_t k = 0; k < n; k++) {
    gwpeer *p = &d->peers[ix[k]];
    const wsgate_redis_reply *rep = &reps[k];
    char addr[ADDR_MAX + 1] = "";
    if (rep->type == WSGATE_REDIS_STRING && rep->len <= ADDR_MAX && !memchr(rep->str, 0, rep->len))
      snprintf(addr, sizeof addr, "%.*s", (int)rep->len, rep->str);
    p->addr_until_ms = now + (d->o.lookup_ttl_ms ? d->o.lookup_ttl_ms : 1);
    p->used = false;
    if (strcmp(addr, p->addr) != 0) {
      if (p->fd >= 0 || p->fn > p->fhead)
        fall_back(d, p, R_MOVED, addr[0] ? addr : "no direct listener any more");
      memcpy(p->addr, addr, sizeof addr);
      if (p->st == P_DOWN)
        p->deadline_ms = 0; /* a new address: try it now */
      if (!addr[0])
        p->st = P_IDLE;
    }
  }
  free(block);
}

/* --- the loop's hooks ------------------------------------------------------------------------- */

void proc_direct_flush(proc_direct *d) {
  uint64_t now = wsg_now_mono_ms();
  lookup(d, now);
  for (size_t i = 0; i < d->npeers; i++) {
    gwpeer *p = &d->peers[i];
    if (p->addr[0] && (p->st == P_IDLE || (p->st == P_DOWN && now >= p->deadline_ms)))
      start_connect(d, p, now);
    write_some(d, p);
  }
}

bool proc_direct_service(proc_direct *d) {
  size_t n = 0;
  for (size_t i = 0; i < d->npeers; i++) {
    gwpeer *p = &d->peers[i];
    if (p->st != P_CONNECTING && p->st != P_UP)
      continue;
    short ev = p->st == P_CONNECTING ? POLLOUT : POLLIN;
    if (p->st == P_UP && p->wr < p->len)
      ev |= POLLOUT;
    d->pfds[n] = (struct pollfd){.fd = p->fd, .events = ev};
    d->pix[n++] = i;
  }
  if (n && poll(d->pfds, n, 0) < 0)
    return true;
  uint64_t now = wsg_now_mono_ms();
  bool waiting = false;
  for (size_t k = 0; k < n; k++) {
    gwpeer *p = &d->peers[d->pix[k]];
    short re = d->pfds[k].revents;
    if (p->st == P_CONNECTING) {
      if (re)
        connected(d, p);
      else if (now >= p->deadline_ms)
        fall_back(d, p, R_CONNECT_TIMEOUT, NULL);
      continue;
    }
    if (re & (POLLIN | POLLERR | POLLHUP))
      read_acks(d, p);
    if (p->st == P_UP && (re & POLLOUT))
      write_some(d, p);
    if (p->st == P_UP && p->wr < p->len)
      write_some(d, p); /* waiting for Kafka to drain before the switch */
    /* ack_wait_ms may be newer than `now` (set by the reads and writes just above). */
    if (p->st == P_UP && p->ack_wait_ms && now > p->ack_wait_ms &&
        now - p->ack_wait_ms >= d->o.ack_timeout_ms)
      fall_back(d, p, p->barrier_sent > p->barrier_passed ? R_BARRIER_TIMEOUT : R_ACK_TIMEOUT,
                NULL);
    if (p->st == P_UP && p->fn > p->fhead)
      waiting = true;
  }
  return waiting;
}

static bool side(void *arg) {
  return proc_direct_service(arg);
}

int proc_direct_create(proc_direct **out, const proc_direct_options *o, char *err, size_t errlen) {
  *out = NULL;
  proc_direct *d = calloc(1, sizeof *d);
  if (!d || !(d->peers = calloc(MAX_PEERS, sizeof(gwpeer))) ||
      !(d->pfds = calloc(MAX_PEERS, sizeof(struct pollfd))) ||
      !(d->pix = calloc(MAX_PEERS, sizeof(size_t)))) {
    snprintf(err, errlen, "out of memory");
    proc_direct_destroy(d);
    return -1;
  }
  d->o = *o;
  d->o.secret = NULL;
  d->hello_len = wsg_dframe_hello(d->hello, o->secret, o->secret_len);
  if (d->hello_len == 0) {
    snprintf(err, errlen, "--direct-secret-file: %zu bytes; it must hold %u to %u", o->secret_len,
             WSG_DFRAME_SECRET_MIN, WSG_DFRAME_SECRET_MAX);
    proc_direct_destroy(d);
    return -1;
  }
  if (o->metrics)
    wsg_metrics_register_table(o->metrics, &proc_direct_metric_table, d);
  proc_consumer_set_side(o->cons, side, d);
  *out = d;
  return 0;
}

void proc_direct_destroy(proc_direct *d) {
  if (!d)
    return;
  if (d->peers) {
    proc_consumer_set_side(d->o.cons, NULL, NULL);
    for (size_t i = 0; i < d->npeers; i++) {
      if (d->peers[i].fd >= 0)
        close(d->peers[i].fd);
      free(d->peers[i].buf);
      free(d->peers[i].frames);
    }
  }
  explicit_bzero(d->hello, sizeof d->hello);
  free(d->peers);
  free(d->pfds);
  free(d->pix);
  free(d);
}
