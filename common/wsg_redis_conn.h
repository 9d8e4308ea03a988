/*
 * wsg_redis_conn: one asynchronous hiredis connection on a libev loop that keeps itself up, for
 * any module that must never block its loop on Redis (the gateway's registry today; a Redis
 * Cluster client later). It does not know which commands its owner sends.
 *
 * What it guarantees:
 *   - no call blocks: a host name is resolved on a short-lived thread (hiredis 0.14 would call
 *     getaddrinfo() on the loop), a literal address is connected to at once, without blocking;
 *   - AUTH (with the ACL user when given) and SELECT are pipelined on every new connection, then
 * the owner's on_handshake hook queues its own per-connection setup (e.g. SCRIPT LOAD), then a
 * PING: its reply makes the connection ready (on_ready). A refused AUTH/SELECT drops the
 * connection;
 *   - reconnect: a failed attempt or a lost connection is retried after a backoff that doubles
 *     from backoff_min_ms to backoff_max_ms, with jitter in [b/2, b]; a ready connection resets it;
 *   - watchdog: a command without a reply for timeout_ms (hiredis 0.14 has no command timeout)
 *     drops the connection, which fails every pending command and reconnects. The silence is the
 *     loop's: time the loop was late (a starved process) is not counted, and a reply waiting in
 *     the socket is never timed out;
 *   - cancellation: every command queued gets exactly one call of its request's callback — with
 *     the reply, with NULL when the connection was lost first, or with arg NULL once the
 *     connection is destroyed (then only release the request: everything else is gone).
 *
 * Threads: the loop thread runs every function and every callback, except the resolver thread,
 * which only resolves a name and wakes the loop. Hooks and request callbacks are never called
 * from inside create, command or destroy. A hook or callback may call wsg_redis_conn_destroy():
 * the connection is then freed when the callback returns.
 */
#ifndef WSG_REDIS_CONN_H
#define WSG_REDIS_CONN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "wsg_metrics.h"

struct ev_loop;
struct redisReply;

/* X-macro: name, value, message. Generates the enum, wsg_redis_conn_strerror(), _err_name(). */
#define WSG_REDIS_CONN_ERRNO_MAP(X)                                                                \
  X(OK, 0, "success")                                                                              \
  X(NOT_CONNECTED, -1, "no Redis connection to send on (reconnecting)")                            \
  X(INVALID, -2, "invalid argument")                                                               \
  X(NOMEM, -3, "out of memory")

typedef enum {
#define WSG_REDIS_CONN_ERR_ENUM(name, value, msg) WSG_REDIS_CONN_##name = value,
  WSG_REDIS_CONN_ERRNO_MAP(WSG_REDIS_CONN_ERR_ENUM)
#undef WSG_REDIS_CONN_ERR_ENUM
} wsg_redis_conn_err;

const char *wsg_redis_conn_strerror(int err); /* static string */
const char *wsg_redis_conn_err_name(int err); /* static string */

typedef struct wsg_redis_conn wsg_redis_conn;
typedef struct wsg_redis_conn_req wsg_redis_conn_req;

/*
 * A command's completion, called once per command sent with `req`:
 *   arg = the options' arg, rep = the reply (an error reply too), valid only during the call;
 *   arg = the options' arg, rep = NULL: the connection was lost before the reply;
 *   arg = NULL, rep = NULL: the connection was destroyed; release req and touch nothing else.
 */
typedef void (*wsg_redis_conn_cb)(void *arg, wsg_redis_conn_req *req, const struct redisReply *rep);

/* Embed it in the owner's per-command state (one allocation for both, like libuv's uv_req_t);
 * one req may carry several commands (a batch) when the owner counts its replies. */
struct wsg_redis_conn_req {
  wsg_redis_conn_cb cb;
};

/* Handles of the owner's metrics, borrowed (they must outlive the connection); any may be NULL. */
typedef struct {
  wsg_counter *ok;       /* replies that are not errors */
  wsg_counter *error;    /* error replies */
  wsg_counter *lost;     /* commands whose connection dropped before the reply */
  wsg_counter *connects; /* connection attempts that reached connect() */
  wsg_gauge *connected;  /* 1 while ready, else 0 */
  /* Watchdog ticks past a deadline that kept the connection: replies were waiting unread in the
   * socket, or the time the loop was late brought the silence back under the timeout. */
  wsg_counter *replies_waiting, *loop_late;
} wsg_redis_conn_metrics;

typedef struct {
  const char *host;     /* borrowed during create (copied); IP or host name, < 256 bytes */
  int port;             /* 1..65535 */
  const char *password; /* borrowed during create (copied); NULL or "": no AUTH */
  const char *user;     /* borrowed during create (copied); ACL user, NULL or "": password only */
  int db;               /* SELECT db when > 0 */
  uint64_t timeout_ms;  /* a command without a reply for this long (loop time) drops it; > 0 */
  uint32_t backoff_min_ms, backoff_max_ms; /* 0: 50 and 2000 */
  /* A new connection, not ready yet: queue per-connection setup commands here. May be NULL. */
  void (*on_handshake)(void *arg);
  /* The connection answered its handshake: commands may be sent. May be NULL. */
  void (*on_ready)(void *arg);
  /* The connection (ready or not) is gone; a retry is planned unless stopped. May be NULL. */
  void (*on_down)(void *arg);
  void *arg; /* borrowed, passed to the hooks and to request callbacks */
  wsg_redis_conn_metrics metrics;
} wsg_redis_conn_options;

/*
 * Creates the connection and starts connecting from the loop (never from inside this call).
 * Returns WSG_REDIS_CONN_OK with *out set (caller destroys), or a negative wsg_redis_conn_err
 * with a message in err. loop, o: borrowed (the loop must outlive the connection).
 */
int wsg_redis_conn_create(wsg_redis_conn **out, struct ev_loop *loop,
                          const wsg_redis_conn_options *o, char *err, size_t errlen);

/* Stops its watchers and closes the connection without waiting: every pending request's
 * callback then runs with arg NULL (maybe after this returns, if called from a callback), no
 * hook runs again. NULL is a no-op. */
void wsg_redis_conn_destroy(wsg_redis_conn *c);

/*
 * Queues one command (argv: borrowed for the call, copied) with req's callback as completion.
 * Works from the handshake on (see wsg_redis_conn_ready() for "usable"). Returns
 * WSG_REDIS_CONN_OK, or WSG_REDIS_CONN_NOT_CONNECTED when there is no connection to queue it on
 * (the callback is then never called). req: borrowed until its last callback.
 */
int wsg_redis_conn_command(wsg_redis_conn *c, wsg_redis_conn_req *req, int argc, const char **argv,
                           const size_t *lens);

bool wsg_redis_conn_ready(const wsg_redis_conn *c); /* handshake answered, not lost since */
bool wsg_redis_conn_open(const wsg_redis_conn *c);  /* a connection exists (maybe in handshake) */
uint32_t wsg_redis_conn_inflight(const wsg_redis_conn *c); /* commands sent, reply not yet seen */

/* Cancels a planned reconnection attempt; a connection lost later plans one again. */
void wsg_redis_conn_cancel_retry(wsg_redis_conn *c);

/* No connection attempt from now on: a planned one is cancelled, and a connection lost later is
 * neither logged nor replaced. The current connection stays usable. For a drain's last step. */
void wsg_redis_conn_stop(wsg_redis_conn *c);

#endif
