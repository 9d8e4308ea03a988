/*
 * gw_server: the gateway's WebSocket server, the ONE file that includes libwebsockets.h.
 *
 * libwebsockets runs on the gateway's libev loop as a foreign loop. The server authenticates at
 * the upgrade (a JWT verified with gw_auth's keys, Origin, admission limits) and again when the
 * token expires (gw_expiry: a refresh op or 4003), registers each connection in Redis
 * (gw_registry) before reading from it, produces every client message to Kafka as a `msg`
 * envelope (gw_kafka), delivers outbound envelopes through each connection's bounded send queue
 * (gw_sendq), and closes connections with the codes below.
 *
 * Threads: the loop thread only, except gw_server_wake() which the Kafka consumer thread calls.
 */
#ifndef GW_SERVER_H
#define GW_SERVER_H

#include <stdbool.h>
#include <stddef.h>
#include <openssl/types.h>
#include <stdint.h>

#include "gw_config.h"
#include "gw_jwt.h"
#include "gw_kafka.h"
#include "gw_registry.h"
#include "wsg_metrics.h"

struct ev_loop;

/*
 * Every WebSocket close code the gateway sends, in one place: name, code, when, reason text sent.
 * docs/PROTOCOL.md ("Client-facing contract") documents the same table, GATEWAY.md, CLIENTS.md
 * and the JS client mirror it (tests/docs/check_close_codes.py). Codes 4000-4099 are
 * wsgate's own; an application's close envelope may use 1000, 3000-3999 and 4100-4999.
 */
#define GW_CLOSE_MAP(X)                                                                            \
  X(NORMAL, 1000, "closed normally (the application asked, with code 1000)", "")                   \
  X(GOING_AWAY, 1001, "the gateway is draining (shutdown, rollout); reconnect", "draining")        \
  X(POLICY, 1008, "the client exceeded its message rate and --rate-action is close",               \
    "rate limit exceeded")                                                                         \
  X(TOO_BIG, 1009, "a message was larger than --max-message", "message too big")                   \
  X(INTERNAL, 1011,                                                                                \
    "the gateway could not do its part: Kafka refused or failed to deliver a message, or the "     \
    "connection could not be registered in Redis; reconnect and resend",                           \
    "internal error")                                                                              \
  X(TRY_AGAIN, 1013, "the gateway is overloaded (memory for partial messages); reconnect later",   \
    "try again later")                                                                             \
  X(SLOW_CONSUMER, 4001,                                                                           \
    "the client read too slowly: its send queue passed --sendq-hard, or "                          \
    "--sendq-soft for --sendq-soft-time",                                                          \
    "slow consumer")                                                                               \
  X(APP_CLOSE, 4002,                                                                               \
    "the application closed the connection (a close envelope without a usable "                    \
    "code)",                                                                                       \
    "closed by the application")                                                                   \
  X(TOKEN_EXPIRED, 4003,                                                                           \
    "the token expired and no valid refresh op arrived within --token-refresh-grace",              \
    "token expired")                                                                               \
  X(USER_LIMIT, 4004,                                                                              \
    "the user already had --max-conns-per-user connections across the gateways; close one "        \
    "before opening another",                                                                      \
    "too many connections for this user")

typedef enum {
#define GW_CLOSE_ENUM(name, code, when, reason) GW_CLOSE_##name = code,
  GW_CLOSE_MAP(GW_CLOSE_ENUM)
#undef GW_CLOSE_ENUM
} gw_close_code;

/* The default reason text of a gateway close code, "" for others. Static string. */
const char *gw_close_reason(int code);
/* Whether an application's close envelope may send `code` as is (1000, 3000-3999, 4100-4999). */
bool gw_close_code_app_allowed(int code);

/* Why an upgrade may not be admitted now; the gateway decides (readiness). */
typedef bool (*gw_server_admit_fn)(void *arg, char *why, size_t whylen);

typedef struct {
  const gw_config *cfg;     /* borrowed for the server's life */
  struct ev_loop *loop;     /* borrowed */
  gw_kafka *kafka;          /* borrowed */
  gw_registry *registry;    /* borrowed */
  wsg_metrics *metrics;     /* borrowed; may be NULL */
  const gw_jwt_config *jwt; /* borrowed for the server's life (gw_auth's; its keys change) */
  int fd_limit;             /* the process' RLIMIT_NOFILE (soft) */
  gw_server_admit_fn admit; /* NULL: always admitted */
  void *admit_arg;
  /* A token named a kid no key has: unknown_kid(auth) (gw_auth_unknown_kid); NULL: nothing. */
  void (*unknown_kid)(void *auth);
  void *auth;
} gw_server_options;

typedef struct gw_server gw_server;

/* File descriptors kept for Kafka, Redis, the operations endpoint and logs. */
#define GW_SERVER_FD_RESERVE 256
/* libwebsockets' share of an RLIMIT_NOFILE of fd_limit: all of it when it is too small to split
 * (wsgate_gateway_fd_limit; the gateway warns when --max-connections does not fit in it). */
static inline int gw_server_lws_fds(int fd_limit) {
  return fd_limit > GW_SERVER_FD_RESERVE * 2 ? fd_limit - GW_SERVER_FD_RESERVE : fd_limit;
}

/* Creates the libwebsockets context and starts listening. Returns 0 with *out set (caller
 * destroys) or -1 with a message in err. o: borrowed. */
int gw_server_create(gw_server **out, const gw_server_options *o, char *err, size_t errlen);

/*
 * Destroys the libwebsockets context (connections still open are dropped without a close frame)
 * and frees. Never call it from inside a libwebsockets callback; stop the Kafka consumer thread
 * first (it calls gw_server_wake). NULL is a no-op.
 */
void gw_server_destroy(gw_server *s);

int gw_server_port(const gw_server *s); /* the WebSocket port actually bound */

/* The SSL_CTX new TLS handshakes use (owned by libwebsockets), NULL without --tls-cert: a
 * reload installs a new certificate into it (gw_tls_install). */
SSL_CTX *gw_server_tls_ctx(const gw_server *s);

/* Sessions currently open (registered or registering). */
uint64_t gw_server_conn_count(const gw_server *s);

/* Kafka consumer thread: outbound envelopes are waiting (lws_cancel_service). */
void gw_server_wake(gw_server *s);
/* Loop thread: dispatch the outbound envelopes waiting now (--outbound-consume loop). */
void gw_server_drain_outbound(gw_server *s);
/* Loop thread: dispatch one outbound envelope that came another way than the slot's partition
 * (gw_direct), exactly as if it had come from there. `it` stays the caller's. */
void gw_server_dispatch(gw_server *s, gw_outbound *it);

/* The callbacks gw_kafka and gw_registry need, forwarded by the gateway. */
void gw_server_on_pressure(gw_server *s, bool paused);
void gw_server_on_delivery_failed(gw_server *s, uint64_t conn_id, const char *errstr);
void gw_server_set_slot(gw_server *s, int32_t slot);
void gw_server_foreach_conn(gw_server *s, gw_registry_emit_fn emit, void *ctx);

/*
 * Starts the drain: new upgrades get 503, and every connection is closed with 1001 (after what
 * is already queued for it) spread evenly over window_ms. Idempotent.
 */
void gw_server_drain(gw_server *s, uint64_t window_ms);

#endif
