/*
 * load_worker: the private side of one wsgate-load worker (load_engine.h is the public one),
 * shared by the files that make it, one concern each:
 *
 *   load_engine.c  the worker's life: set-up, the ramp, the epoll loop, the phases, teardown;
 *   load_conn.c    one connection's life: connect, upgrade, set-up commands, receiving, closing;
 *   load_sched.c   the open-loop traffic schedule: which message is due when, and sending it;
 *   load_ctl.c     the control socket to the parent: its commands in, progress and result out.
 *
 * Functions named load__* are internal to these files. Threads: a worker is single-threaded.
 */
#ifndef LOAD_WORKER_H
#define LOAD_WORKER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include "load_engine.h"
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
  /* --mode api: only the parent can tell the drain is over (the sender knows what to expect):
   * "C" lines report `received`, "D" sets caught_up. */
  bool caught_up;
  uint64_t rx_reported, next_rx_report;

  conn *cur; /* connection whose bytes the marker scanner is reading */
  uint64_t now;
  char *msg; /* scratch: one application message */
  size_t msg_cap;
  char **token_cache; /* --token-cmd: per user of this worker, filled on first use */
  uint64_t token_cache_first, token_cache_n;
} worker;

static inline uint64_t mono_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * NS + (uint64_t)ts.tv_nsec;
}

static inline uint32_t rnd32(worker *w) {
  w->rng ^= w->rng << 13;
  w->rng ^= w->rng >> 7;
  w->rng ^= w->rng << 17;
  return (uint32_t)(w->rng >> 16);
}

/* load_conn.c */
/* Starts connection i: socket, bind, non-blocking connect; a failure is counted, not returned. */
void load__start_conn(worker *w, uint32_t i);
/* Counts connection i as failed (the first message of each kind is kept for the report). */
void load__fail(worker *w, uint32_t i, fail_kind kind, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
/* Closes k's socket and frees its buffers; the connection is S_DONE. */
void load__release(worker *w, conn *k);
void load__on_readable(worker *w, uint32_t i);
void load__on_writable(worker *w, uint32_t i);
/* Queues one masked frame. -1 when the connection already holds --out-max unsent bytes. */
int load__out_frame(worker *w, uint32_t i, unsigned opcode, const void *payload, size_t len);
/* Sends what the connection has queued; arms EPOLLOUT for the rest. */
void load__out_flush(worker *w, uint32_t i);

/* load_sched.c */
/* The parent's "G <t0>": the traffic phase starts at t0. */
void load__begin_run(worker *w, uint64_t t0);
/* When message number g of the whole schedule is due. */
uint64_t load__sched_time(const worker *w, uint64_t g);
/* Queues every message due by `now`, then sends each touched connection's bytes at once. */
void load__send_due(worker *w, uint64_t now);

/* load_ctl.c */
/* Reads the parent's commands; returns -1 when the parent is gone. */
int load__ctl_read(worker *w);
/* One line to the parent (progress "P", ready "R"); lost if the parent is gone. */
void load__ctl_send(worker *w, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* The result as "J <bytes>\n<json>"; -1 if it could not be encoded or sent. */
int load__report(worker *w);

#endif
