/*
 * gw_registry: the gateway's presence in Redis — its outbound slot lease, its gateway record and
 * the user -> connection entries of its clients (keys and scripts: common/wsg_redis_keys.h).
 *
 * Everything runs on the gateway's libev loop through hiredis' async API; no call blocks:
 *   - connect without blocking (a host name is resolved on a short-lived thread first, because
 *     hiredis 0.14 would call getaddrinfo() on the loop), AUTH and SELECT when configured: the
 *     connection, its watchdog and its reconnection are common/wsg_redis_conn.h's;
 *   - take a free slot k in 0..slots-1 (starting at a random k, the previous one first after a
 *     loss) with WSG_LUA_LEASE_ACQUIRE, write <prefix>gw:<id> and renew both every renew_ms;
 *   - if a renewal finds the slot taken or gone, or lease_ms passes without a successful renewal
 *     (timed from when the last good renewal was SENT, so we give up no later than Redis does),
 *     the slot is lost: on_slot(-1), then acquire again and, once held, on_slot(k) and re-register
 *     every live connection (foreach_conn);
 *   - when the connection drops (or a command gets no reply within timeout_ms), reconnect with
 *     backoff (50 ms doubling to 2 s); after each reconnect every live connection is registered
 *     again, because Redis may have restarted empty (the cost is one HSET per connection,
 *     pipelined). A slot is kept across a short outage while its lease has not run out.
 * While disconnected, conn_add fails at once (GW_REG_NOT_CONNECTED) and conn_remove is kept in a
 * bounded backlog sent after reconnecting, so no stale entry of a closed connection survives a
 * blip; conn_add calls in flight are capped (GW_REG_BUSY beyond the cap).
 *
 * Metrics (when a wsg_metrics is given): gw_registry_metric_table, listed in
 * docs/METRICS-gateway.md.
 *
 * Threads: the loop thread only — every function and every callback. The options' callbacks run
 * on the loop thread, never from inside create/conn_add/conn_remove/release themselves. Any
 * callback may call gw_registry_destroy(); the registry is then freed when the callback returns.
 */
#ifndef GW_REGISTRY_H
#define GW_REGISTRY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "wsg_metrics.h"

struct ev_loop;

/* X-macro: name, value, message. Generates the enum, gw_registry_strerror(), _err_name(). */
#define GW_REG_ERRNO_MAP(X)                                                                        \
  X(OK, 0, "success")                                                                              \
  X(NOT_CONNECTED, -1, "Redis is not connected (reconnecting)")                                    \
  X(BUSY, -2, "too many Redis commands in flight")                                                 \
  X(REPLY, -3, "Redis answered with an error")                                                     \
  X(LOST, -4, "the Redis connection was lost before the reply")                                    \
  X(RELEASED, -5, "the registry is releasing its entries (draining)")                              \
  X(INVALID, -6, "invalid argument")                                                               \
  X(NOMEM, -7, "out of memory")                                                                    \
  X(USER_LIMIT, -8, "the user already has --max-conns-per-user connections (all gateways)")

typedef enum {
#define GW_REG_ERR_ENUM(name, value, msg) GW_REG_##name = value,
  GW_REG_ERRNO_MAP(GW_REG_ERR_ENUM)
#undef GW_REG_ERR_ENUM
} gw_registry_err;

const char *gw_registry_strerror(int err); /* static string */
const char *gw_registry_err_name(int err); /* static string */

/* Called once per live connection by foreach_conn. user: borrowed for the call. */
typedef void (*gw_registry_emit_fn)(void *ctx, const char *user, size_t ulen, uint64_t conn_id);

typedef struct {
  const char *host; /* borrowed during create (copied); IP or host name */
  int port;
  const char *password; /* borrowed during create (copied); NULL or "": no AUTH */
  const char *user;     /* borrowed during create (copied); ACL user, NULL or "": none */
  const char *cluster;  /* borrowed during create (copied); Redis Cluster seeds, NULL or "": one
                         * node at host:port */
  int db;               /* SELECT db when > 0 */
  const char *prefix;   /* key prefix, e.g. "wsgate:" (copied) */
  const char *gw_id;    /* this gateway's id (copied), <= WSG_MAX_GATEWAY_LEN bytes */
  const char *boot;     /* this process' life, written as the record's boot (copied); may be NULL */
  const char *advertise; /* "host:port" written as the record's addr (copied); may be NULL */
  const char *direct;    /* "host:port" of the direct reply listener, the record's `direct`
                            (copied); NULL or "": none (the field is not written) */
  uint32_t slots;        /* number of outbound partitions = slots, >= 1 */
  uint64_t lease_ms;     /* slot and record TTL, e.g. 15000 */
  uint64_t renew_ms;     /* renewal period, < lease_ms, e.g. 5000 */
  uint64_t timeout_ms;   /* a command without a reply for this long drops the connection */
  uint32_t max_inflight; /* conn_add + conn_remove in flight before conn_add says BUSY; 0: 65536 */
  uint64_t replay_seq_ttl_ms;  /* TTL of a sequence counter a replay read creates; 0: 24 h */
  uint32_t max_conns_per_user; /* entries a user's hash may hold at conn_add; 0: no limit */
  /* The slot changed: k when (re)acquired, -1 when lost or released. Loop thread. */
  void (*on_slot)(void *arg, int32_t slot);
  /* Calls emit(ctx, ...) for every live connection, synchronously, to re-register them. */
  void (*foreach_conn)(void *arg, gw_registry_emit_fn emit, void *ctx);
  void *arg; /* borrowed, passed to the callbacks above */
} gw_registry_options;

typedef struct gw_registry gw_registry;

/*
 * Creates the registry and starts connecting; returns GW_REG_OK with *out set (caller destroys),
 * or a negative gw_registry_err with a message in err. Connection failures later are not
 * errors here: they are retried and logged. loop, o, metrics: borrowed (loop and metrics must
 * outlive the registry; metrics may be NULL).
 */
int gw_registry_create(gw_registry **out, struct ev_loop *loop, const gw_registry_options *o,
                       wsg_metrics *metrics, char *err, size_t errlen);

/* Stops its watchers and closes the connection without waiting. Calls no callback (pending
 * conn_add callbacks and a pending release's done are dropped). NULL is a no-op. */
void gw_registry_destroy(gw_registry *r);

int32_t gw_registry_slot(const gw_registry *r); /* -1 if no slot is held */
bool gw_registry_connected(const gw_registry *r);

/* Completion of gw_registry_conn_add: status GW_REG_OK, or a negative gw_registry_err. The
 * callback gets the connection id, not a session pointer: the session may be gone by then. */
typedef void (*gw_registry_conn_cb)(void *arg, uint64_t conn_id, int status);

/*
 * HSET <prefix>user:<user> <conn_id> <gw_id> and its TTL, through WSG_LUA_CONN_ADD: with
 * max_conns_per_user set, status GW_REG_USER_LIMIT if the user has that many entries of live
 * gateways already (gw_reguser.c). Returns GW_REG_OK and later calls cb(arg, conn_id, status)
 * exactly once on the loop thread; or returns a negative gw_registry_err at once and never calls
 * cb. user: borrowed for the call; cb may be NULL; arg: borrowed until cb.
 */
int gw_registry_conn_add(gw_registry *r, const char *user, size_t ulen, uint64_t conn_id,
                         gw_registry_conn_cb cb, void *arg);

/* A user's entry hash expires GW_REG_USER_TTL_MS after its last add or touch: entries left by a
 * gateway that died and a user who never comes back go with it. Every gateway touches the keys
 * of its live users every GW_REG_USER_TOUCH_S, so a live entry never expires. */
#define GW_REG_USER_TTL_MS  (24ull * 3600 * 1000)
#define GW_REG_USER_TOUCH_S (6u * 3600)

/* PEXPIRE <prefix>user:<user> GW_REG_USER_TTL_MS, fire and forget (not sent while disconnected:
 * the next touch, or the re-registration after a reconnect, sets it); for a user with a live
 * resumable connection also WSG_LUA_SEQ_TOUCH on its sequence counter, which nothing else renews
 * while no message reaches the user. user: borrowed. */
void gw_registry_user_touch(gw_registry *r, const char *user, size_t ulen, bool resumable);

/*
 * Removes <conn_id> from <prefix>user:<user> only if it still names this gateway
 * (WSG_LUA_CONN_DELETE). Fire and forget: failures are counted and logged. Queued (bounded) while
 * disconnected. Returns GW_REG_OK, or GW_REG_BUSY if neither the connection nor the backlog can
 * take it (or GW_REG_INVALID, GW_REG_NOMEM). user: borrowed for the call.
 */
int gw_registry_conn_remove(gw_registry *r, const char *user, size_t ulen, uint64_t conn_id);

/*
 * Callbacks of every gw_registry_conn_add() already queued will not be called: their `arg` is
 * about to be freed (the server, at shutdown, while Redis replies may still be in flight). The
 * commands themselves still complete. NULL is a no-op.
 */
void gw_registry_cancel_conn_callbacks(gw_registry *r);

/* The connection count written into the gateway record at the next renewal. */
void gw_registry_set_conn_count(gw_registry *r, uint64_t n);

/* --- resume: the replay stream of a user (docs/ARCHITECTURE.md, "Resume") --------------------- */

/* Bounds of one read. */
typedef struct {
  uint32_t max_entries;  /* entries in one page, >= 1 */
  uint64_t max_bytes;    /* payload bytes in one page (a page holds at least one entry) */
  uint64_t max_age_ms;   /* entries older than this are skipped; 0: no age limit */
  uint64_t max_distance; /* read from at most this far behind the counter; 0: no limit */
} gw_replay_limits;

/* One stored message; data is borrowed from the reply, valid only during the callback. */
typedef struct {
  uint64_t q;
  bool binary;
  const uint8_t *data;
  size_t len;
} gw_replay_entry;

/* One read's result, valid only during the callback. */
typedef struct {
  uint64_t counter; /* the user's sequence when Redis ran the read: the last q assigned */
  bool more;        /* a bound stopped the page: entries after the last one remain */
  size_t count;     /* entries, in q order */
  const void *priv; /* the reply itself; read entries with gw_replay_page_entry() */
} gw_replay_page;

/* Entry i (< page->count). page, out: borrowed. */
void gw_replay_page_entry(const gw_replay_page *page, size_t i, gw_replay_entry *out);

/* Completion of gw_registry_replay_read: status GW_REG_OK with a page, else a negative
 * gw_registry_err (GW_REG_REPLY also for a reply that does not have the script's shape) and a
 * NULL page. */
typedef void (*gw_registry_replay_cb)(void *arg, uint64_t conn_id, int status,
                                      const gw_replay_page *page);

/*
 * Runs WSG_LUA_REPLAY_READ on the replay keys of `user`: with `position_only`, only the counter
 * (created at the server's time when absent, so the position stays meaningful); else the entries
 * after `after` within `lim`. Returns GW_REG_OK and later calls cb exactly once on the loop thread,
 * or a negative gw_registry_err at once and never calls cb. Counted with conn_add against
 * max_inflight; gw_registry_cancel_conn_callbacks() cancels it too. Commands run in the order they
 * were issued: a read issued just before gw_registry_conn_add() runs before the registration.
 * user: borrowed for the call; lim: borrowed for the call; arg: borrowed until cb.
 */
int gw_registry_replay_read(gw_registry *r, const char *user, size_t ulen, uint64_t conn_id,
                            bool position_only, uint64_t after, const gw_replay_limits *lim,
                            gw_registry_replay_cb cb, void *arg);

/*
 * Drain: stop renewing, remove every live connection (foreach_conn; pipelined), delete the
 * gateway record and release the slot (on_slot(-1)), then call done(arg) once — when Redis has
 * answered, or after timeout_ms, or at once (asynchronously) if Redis is not connected. After
 * this, conn_add fails with GW_REG_RELEASED. Returns GW_REG_OK, or GW_REG_RELEASED if already
 * called. arg: borrowed until done.
 */
int gw_registry_release(gw_registry *r, void (*done)(void *arg), void *arg);

#endif
