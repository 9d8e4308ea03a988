/*
 * proc_redis: everything the processor asks Redis, on one synchronous hiredis connection that
 * the consumer thread owns (it may block: the processor has no event loop to keep responsive).
 *
 * Routing a batch: user -> connections -> gateway -> slot. One pipelined round trip reads
 * HGETALL user:<u> for every distinct user of the batch; a second one reads the `slot` of every
 * gateway they name that is not in the short-lived gateway cache (a missing gw:<id> record means
 * the gateway's lease is gone). Entries of dead gateways are skipped and removed lazily with the
 * compare-and-delete script (WSG_LUA_CONN_DELETE), in a third round trip only when there are any.
 *
 * Handlers' own commands (wsgate_redis()) also run here, as one pipeline per call; so does the
 * numbering and storing of deliveries to users for resumable clients (proc_redis_append).
 *
 * The connection is made lazily and remade after any error, with a backoff so a Redis outage
 * costs one connect attempt per backoff step, not one per record.
 *
 * Threads: the consumer thread; proc_redis_status() may be called from any thread.
 */
#ifndef PROC_REDIS_H
#define PROC_REDIS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "wsg_envelope.h"
#include "wsg_metrics.h"
#include "wsgate_handler.h"

typedef struct proc_redis proc_redis;

typedef struct {
  const char *host; /* copied */
  int port;
  const char *password;      /* copied; NULL: no AUTH */
  const char *user;          /* copied; NULL or "": AUTH with the password only */
  const char *cluster_seeds; /* copied; non-empty: a Redis Cluster ("h:p,h:p"), host/port unused */
  int db;
  const char *prefix; /* copied */
  uint64_t timeout_ms;
  uint64_t gateway_cache_ttl_ms; /* 0: no cache */
  int32_t slots;                 /* outbound partitions: a gateway slot must be below */
  wsg_metrics *metrics;          /* borrowed; may be NULL */
  uint32_t resume_window;        /* entries kept in a user's replay stream; 0: no sequencing */
  uint64_t resume_ttl_ms;        /* replay stream TTL */
  uint64_t resume_seq_ttl_ms;    /* sequence counter TTL (>= resume_ttl_ms) */
} proc_redis_options;

/* Does not connect: the first command does. Returns 0, or -1 with a message. */
int proc_redis_create(proc_redis **out, const proc_redis_options *o, char *err, size_t errlen);
void proc_redis_destroy(proc_redis *r); /* NULL is a no-op */

const char *proc_redis_prefix(const proc_redis *r); /* borrowed */

/* Connects now if not connected (start-up check). Returns 0, or -1 with a message. */
int proc_redis_connect(proc_redis *r, char *err, size_t errlen);

/* 0 if the last Redis exchange worked (or none happened yet), else -1 and why. Any thread. */
int proc_redis_status(proc_redis *r, char *why, size_t whylen);
/* -1 and why once Redis has been failing without a break for grace_ms or more (now_ms from
 * wsg_now_mono_ms), else 0: what /readyz reports. Any thread. */
int proc_redis_failing(proc_redis *r, uint64_t now_ms, uint64_t grace_ms, char *why, size_t whylen);

/*
 * Runs `n` commands as one pipeline and converts the replies into handler-facing views, all in one
 * allocation returned in *block (caller frees with free(), after which replies[] dangle).
 * Returns WSGATE_OK, WSGATE_E_REDIS (connection failed; err says why), WSGATE_E_INVAL or
 * WSGATE_E_NOMEM.
 */
int proc_redis_command(proc_redis *r, const wsgate_redis_cmd *cmds, size_t n,
                       const wsgate_redis_reply **replies, void **block, char *err, size_t errlen);

/* proc_redis_command() for wsgate's own commands (not counted as handlers'). */
int proc_redis_pipeline(proc_redis *r, const wsgate_redis_cmd *cmds, size_t n,
                        const wsgate_redis_reply **replies, void **block, char *err, size_t errlen);

/* --- routing ------------------------------------------------------------------------------- */

typedef struct {
  const char *ptr; /* borrowed for the call */
  size_t len;
} proc_strref;

typedef struct {
  uint32_t gw; /* index into proc_routes.gws */
  uint64_t conn;
} proc_target;

typedef struct {
  char id[WSG_MAX_GATEWAY_LEN + 1];
  uint16_t len;
  int32_t slot;
} proc_route_gw;

/* The live connections of each user of one resolve. Reused across batches (memory kept). */
typedef struct {
  proc_target *targets; /* grouped by user: user i owns targets[first[i] .. first[i]+count[i]) */
  size_t ntargets, targets_cap;
  uint32_t *first, *count;
  size_t users_cap;
  proc_route_gw *gws; /* only gateways with a live lease and a valid slot */
  size_t ngws, gws_cap;
  uint32_t *gw_index; /* open-addressing table over gws (index + 1; 0 = empty) */
  size_t gw_index_cap;
  /* what the last resolve saw */
  uint64_t stale;    /* entries naming a gateway whose lease is gone (removed lazily) */
  uint64_t removed;  /* of which this resolve deleted */
  uint64_t bad;      /* entries that are not <decimal conn id> -> <gateway id> */
  uint64_t bad_slot; /* entries whose gateway claims a slot outside the outbound topic */
} proc_routes;

void proc_routes_init(proc_routes *rt);
void proc_routes_finish(proc_routes *rt);

/*
 * Looks up the live connections of users[0..n) (distinct; the caller deduplicates) at time
 * `now_ms` (monotonic; drives the gateway cache). Returns 0, or -1 with a message when Redis
 * failed (nothing was decided: retry the whole batch).
 */
int proc_redis_resolve(proc_redis *r, const proc_strref *users, size_t n, uint64_t now_ms,
                       proc_routes *out, char *err, size_t errlen);

/*
 * The slots of gateways ids[0..n) (duplicates allowed), from the gateway cache or one pipelined
 * HGET each: afterwards rt->gws[0..rt->ngws) lists the distinct ids in order of first
 * appearance, each with slot >= 0, -1 (lease gone) or -2 (no usable slot). rt: the caller's
 * scratch (its user targets are cleared). Returns 0, or -1 with a message.
 */
int proc_redis_gateways(proc_redis *r, const proc_strref *ids, size_t n, uint64_t now_ms,
                        proc_routes *rt, char *err, size_t errlen);

/* --- resume: per-user sequence and replay stream (docs/ARCHITECTURE.md, "Resume") ---------- */

/* One delivery to a user, to number and store. */
typedef struct {
  uint32_t user;       /* index into the users array given with it */
  const uint8_t *data; /* payload, borrowed */
  size_t len;
  bool binary;
  uint64_t q; /* out: the q the user's sequence assigned; 0 when not sequenced */
} proc_append;

/*
 * Stores a[0..n) in order, each in the replay stream of users[a[i].user], and sets a[i].q
 * (WSG_LUA_REPLAY_APPEND, pipelined). Run it before proc_redis_resolve() of the same batch: a
 * gateway relies on a message being stored before the lookup that routes it. With resume_window
 * 0 every q is 0 and Redis is not asked. A delivery Redis refuses (a key of another type under the
 * prefix) gets q 0 and is counted; the others go on. Returns 0, or -1 with a message when Redis
 * failed: nothing was decided, but some deliveries may be stored already (a retry stores them
 * again: at least once, like everything else).
 */
int proc_redis_append(proc_redis *r, const proc_strref *users, proc_append *a, size_t n, char *err,
                      size_t errlen);

/* Drops every cached gateway (tests; a processor never needs it). */
void proc_redis_cache_clear(proc_redis *r);

#endif
