/*
 * gw_config: every option of wsgate-gateway, declared once in wsg_config tables (its own in
 * gw_config.c; the Kafka, Redis, operations HTTP and log groups in common/wsg_options.c) that
 * drive flag and WSGATE_* environment parsing, validation, --help, --help-markdown
 * (docs/CONFIG-gateway.md) and the start-up log line; plus the cross-field checks and the values
 * derived from the options (the JWT secret read from a file, the default gateway id, the parsed
 * origin list).
 *
 * Threads: main thread only, before any other thread starts. The struct is read-only afterwards
 * and may then be read from any thread.
 */
#ifndef GW_CONFIG_H
#define GW_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "wsg_chkeys.h"
#include "wsg_config.h"
#include "wsg_log.h"
#include "wsg_chns.h"
#include "wsg_options.h"

/* Longest JWT secret read from --jwt-secret-file; HS256 needs 32 bytes, 4 KiB is generous. */
#define GW_JWT_SECRET_MAX 4096
/* Shortest accepted HS256 secret: RFC 7518 §3.2 asks for a key at least as long as the hash. */
#define GW_JWT_SECRET_MIN 32
#define GW_ORIGINS_MAX    64

/* How a drain (SIGTERM) divides --drain-grace (gateway.c): after the last 1001 of the window,
 * at least GW_DRAIN_LINGER_MS for the close handshakes to finish (lingering close: the client's
 * close frame answers ours), then the Kafka flush (3 s when the grace allows, at least
 * GW_DRAIN_FLUSH_MIN_MS), then GW_DRAIN_RELEASE_MS for the Redis release. */
#define GW_DRAIN_LINGER_MS    1000
#define GW_DRAIN_FLUSH_MS     3000
#define GW_DRAIN_FLUSH_MIN_MS 1000
#define GW_DRAIN_RELEASE_MS   1000

typedef enum {
  GW_RATE_CLOSE, /* close the connection with 1008 "rate limit exceeded" */
  GW_RATE_PAUSE, /* stop reading from the connection until its bucket allows the next frame */
} gw_rate_action;

typedef struct {
  /* --- WebSocket listener --- */
  char *listen_addr;
  int64_t listen_port;
  char *tls_cert;
  char *tls_key;
  char *subprotocol;
  uint64_t max_message; /* bytes of one (reassembled, decompressed) client message */
  uint64_t rx_buffer;   /* libwebsockets' per-connection receive buffer */
  uint64_t ping_interval_ms;
  uint64_t idle_timeout_ms;
  bool deflate;
  int64_t deflate_max_conns;
  char *allowed_origins;
  int64_t max_connections; /* 0: derived from the file descriptor limit */
  int64_t max_upgrades_per_sec;
  uint64_t rx_memory_max;
  bool loop_clock;             /* gw_clock: one clock reading per loop iteration */
  bool eager_write;            /* gw_outbound: write to an idle connection without WRITEABLE */
  bool coalesce_writes;        /* gw_outbound: several queued messages in one write */
  uint64_t rx_memory_per_user; /* 0: no per-user share */
  /* --- hostile clients (issue 16): the door's own limits --- */
  uint64_t handshake_timeout_ms; /* accept to upgrade (TLS, request head) */
  int64_t max_handshakes;        /* sockets accepted, not yet upgraded: also the header pool */
  int64_t max_conns_per_addr;    /* open sockets of one source address; 0: no cap */
  int64_t max_conns_per_user;    /* across gateways, in Redis (gw_reguser.c); 0: no limit */
  int64_t max_pending_per_addr;  /* ... of those, not yet upgraded; 0: no cap */
  int64_t max_upgrades_per_addr; /* upgrade attempts per second of one address; 0: no cap */

  /* --- operations endpoint (shared group) --- */
  wsg_ops_options http;

  /* --- authentication --- */
  char *jwt_secret;
  char *jwt_secret_file;
  char *jwt_audience;
  char *jwt_user_claim;
  uint64_t jwt_leeway_ms;
  char *jwt_algorithms; /* comma-separated JWS names, parsed by gw_jwt_algs_parse */
  char *jwt_key_file;
  char *jwt_jwks_file;
  char *jwt_issuer; /* comma-separated; empty: "iss" not checked */

  /* expiry on live connections (gw_expiry); 0: not enforced */
  uint64_t token_refresh_grace_ms;
  char *jwt_jwks_url;
  char *jwt_jwks_ca_file;
  uint64_t jwt_jwks_refresh_ms;
  uint64_t jwt_jwks_min_interval_ms;
  bool insecure_dev_user;

  /* --- Kafka --- */
  wsg_kafka_options kafka; /* shared group: brokers, -X */
  char *inbound_topic;
  char *outbound_topic;
  int64_t slots; /* 0: the outbound topic's partition count */
  int64_t outbound_queue;
  uint64_t outbound_queue_bytes;
  char *outbound_consume; /* "thread" or "loop" (gw_kafka_ev) */

  /* --- Redis --- */
  wsg_redis_options redis; /* shared group: the connection */
  uint64_t lease_ttl_ms;
  uint64_t lease_renew_ms;
  char *gateway_id; /* filled with "<hostname>-<8 hex>" by gw_config_load when empty */
  /* This process' life under gateway_id (random, by gw_config_load; not an option): in the lease
   * record and the presence keys, so a restart under the same id disowns the old life's entries. */
  char gateway_boot[WSG_GW_BOOT_LEN + 1];
  char *advertise_addr; /* filled with "<hostname>:<listen-port>" by gw_config_load when empty */

  /* --- direct replies (gw_direct) --- */
  char *direct_listen;      /* "host:port"; empty: off */
  char *direct_secret_file; /* required with direct_listen */
  char *direct_advertise;   /* filled with direct_listen by gw_config_load when empty */
  int64_t direct_max_peers;
  uint8_t *direct_secret; /* derived: the file's bytes (not an option) */
  size_t direct_secret_len;

  /* --- per-connection limits --- */
  uint64_t sendq_hard;
  uint64_t sendq_soft;
  uint64_t sendq_soft_time_ms;
  uint64_t sendq_max; /* all connections together (gw_sendmem.c) */
  int64_t rate_msgs;
  int64_t rate_burst;
  uint64_t rate_bytes;
  char *rate_action;

  /* --- resume --- */
  int64_t resume_max; /* messages replayed per reconnect; 0: the +seq subprotocol is off */
  uint64_t resume_max_age_ms;
  uint64_t resume_seq_ttl_ms;

  /* --- channels --- */
  int64_t channel_max_per_conn;
  int64_t channel_max;
  int64_t channel_presence_users;     /* most users in a presence answer */
  int64_t channel_presence_inflight;  /* presence queries in flight per gateway */
  int64_t channel_resync_rate;        /* subscriptions rewritten per second after a reconnect */
  uint64_t channel_jl_interval_ms;    /* least time between two presence_change frames */
  int64_t channel_jl_threshold;       /* subscribers from which presence_change is coalesced */
  uint64_t channel_decide_timeout_ms; /* subscribe=handler: how long a decision is waited for */
  int64_t channel_pending_per_conn;
  int64_t channel_pending_max;
  uint64_t channel_tail_check_ms; /* quiet time before a channel's :m is read (0: never) */
  int64_t channel_tail_inflight;  /* tail checks waiting for Redis per gateway */
  uint64_t channel_key_ttl_ms;    /* TTL of the gateway-written channel keys (:gws, :pc, :p:) */
  uint64_t channel_key_renew_ms;  /* how often each gateway renews those it holds */
  char *channel_claim;
  wsg_chns_options channels; /* shared group: namespaces (--channel-namespace) */

  /* --- drain --- */
  uint64_t drain_window_ms;
  uint64_t drain_grace_ms;

  /* --- logging (shared group; log.min_level and log.json derived by gw_config_load) --- */
  wsg_log_options log;

  /* --- derived by gw_config_load (not options) --- */
  uint8_t *jwt_key; /* the HS256 secret bytes, from --jwt-secret or --jwt-secret-file */
  size_t jwt_key_len;
  char *origins[GW_ORIGINS_MAX]; /* allowed Origin values, lower-case; nulls after the last */
  size_t norigins;
  gw_rate_action rate_action_kind;
} gw_config;

/* The option table (for --help and tests). Borrowed, static. */
const wsg_config_spec *gw_config_spec(void);

/*
 * Parses defaults < environment (`envp`, may be NULL) < argv into `cfg` (zeroed by the caller),
 * then validates across fields and fills the derived values. Returns WSG_CONFIG_OK,
 * WSG_CONFIG_EXIT (help or version printed) or WSG_CONFIG_ERROR with the problem and what to do
 * in `err`. Whatever the result, release with gw_config_finish().
 */
wsg_config_result gw_config_load(gw_config *cfg, int argc, char **argv, char **envp, char *err,
                                 size_t errlen);

/*
 * The cross-field checks alone (exposed for tests): renew < TTL, idle timeout > ping interval,
 * certificate and key together, a JWT secret unless --insecure-dev-user, soft <= hard limits, the
 * drain window inside the grace. Returns 0, or -1 with the message in `err`.
 */
int gw_config_validate(const gw_config *cfg, char *err, size_t errlen);

/* Logs the effective configuration at INFO, secrets redacted. */
void gw_config_log(const gw_config *cfg);

/* Frees everything inside `cfg`, including derived values. Safe on a zeroed struct. */
void gw_config_finish(gw_config *cfg);

/* Reads --jwt-secret-file's file (at most GW_JWT_SECRET_MAX bytes, one trailing newline
 * dropped): 0 with *out malloc'd (caller wipes and frees), or -1 with the file and the problem in
 * err. At start and on every reload (gw_auth_reload). */
int gw_config_read_secret_file(const char *path, uint8_t **out, size_t *outlen, char *err,
                               size_t errlen);

#endif
