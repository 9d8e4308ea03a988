/*
 * harness_daemons: the real programs in an integration test. A "cluster" of unique topics,
 * consumer group and Redis prefix (so tests never see each other's traffic on the shared broker
 * and Redis), wsgate-gateway and wsgate-processor started on free ports in it, tokens, WebSocket
 * clients of a gateway, and /metrics.
 *
 * Every process started here is remembered until it is stopped: itest_fini, as a test's `.fini`,
 * kills what a failed assertion left running.
 *
 * Threads: the test's own thread. Functions named for what must hold fail the test otherwise.
 */
#ifndef WSG_ITEST_HARNESS_DAEMONS_H
#define WSG_ITEST_HARNESS_DAEMONS_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "harness.h"
#include "ws_client.h"

/* The one secret every test gateway verifies tokens with (--jwt-secret). */
#define ITEST_JWT_SECRET "integration-test-secret-0123456789abcdef"
/* Partitions of each topic of a gateway started without a cluster. */
#define ITEST_PARTITIONS 4

typedef struct {
  char in_topic[128];
  char out_topic[128];
  char dlq_topic[128]; /* "" without one */
  char cmd_topic[128]; /* commands topic, "" without one (itest_cluster_add_commands) */
  char group[128];
  char prefix[128]; /* Redis key prefix, "<unique>:" */
  int in_partitions;
  int out_partitions;
} itest_cluster;

/* Unique names; creates the inbound and outbound topics (and a dead-letter topic if asked). */
void itest_cluster_init(itest_cluster *c, int in_partitions, int out_partitions, bool dead_letter);

/* Creates a commands topic for the cluster; processors started after this read it. */
void itest_cluster_add_commands(itest_cluster *c, int partitions);

/* What a test varies when it starts a daemon; NULL means all defaults. */
typedef struct {
  const char *const *extra;    /* flags after the standard ones (NULL-terminated; may be NULL) */
  bool no_wait;                /* return once started, without waiting for /readyz (a start that is
                                  meant to fail, or one the test waits for itself) */
  int redis_port;              /* a Redis of the test's own, e.g. a private redis-server (0: the
                                  shared test Redis, or the Redis Cluster of
                                  WSGATE_TEST_REDIS_CLUSTER=host:port, `--redis-cluster`) */
  const char *jwt_secret_file; /* gateways: --jwt-secret-file instead of --jwt-secret (a test
                                  that rotates the secret) */
} itest_daemon_opts;

/* A command with two %s (e.g. prefix and id) on the Redis at 127.0.0.1:port (0: the daemons'
 * default one), following one MOVED like redis-cli -c, so it works on one node and on
 * WSGATE_TEST_REDIS_CLUSTER. Caller frees the reply; NULL on a lost connection. */
redisReply *itest_redis_key_command(int port, const char *fmt, const char *a, const char *b);

/*
 * Every process started below is remembered until it is stopped. Use as every test's `.fini`:
 * Criterion ends a test at its first failed assertion, so the test's own clean-up may never run;
 * this kills what is left (SIGKILL to its process group) and names its log.
 */
void itest_fini(void);
/* Remembers (forgets) a process started otherwise, e.g. a private redis-server, for itest_fini. */
void itest_track(pid_t pid, const char *log);
void itest_untrack(pid_t pid);

/* --- gateways ------------------------------------------------------------------------------ */

typedef struct {
  pid_t pid;
  int port;      /* WebSocket */
  int http_port; /* /healthz /readyz /metrics */
  char id[128];  /* --gateway-id, unique */
  char log[512];
  int redis_port;        /* the Redis it registers in (a cluster's seed node) */
  int32_t slot;          /* read from Redis once ready; -1 with no_wait */
  itest_cluster cluster; /* the topics and prefix it runs with (a copy) */
} itest_gateway;

/* Starts wsgate-gateway in cluster `c` (NULL: a cluster of its own, ITEST_PARTITIONS inbound and
 * outbound) with the standard test flags, waits for /readyz 200 and reads its slot from Redis. */
void itest_gateway_start(itest_gateway *g, const itest_cluster *c, const char *name,
                         const itest_daemon_opts *o);
/* Starts it again with the same cluster and id (after a stop). */
void itest_gateway_restart(itest_gateway *g, const itest_daemon_opts *o);
/* Sends sig (0: none, just wait) and waits up to timeout_ms; returns the wait status. Fails the
 * test on timeout or if the sanitizers reported anything in its log. */
int itest_gateway_stop(itest_gateway *g, int sig, int timeout_ms);
/* Teardown: kills it if it still runs, names its log on stderr and checks it for sanitizer
 * reports (Criterion 2.4 cannot tell a fixture whether the test failed). */
void itest_gateway_cleanup(itest_gateway *g);
/* The slot the gateway holds according to Redis now (its gateway record); fails the test if
 * none. */
int32_t itest_gateway_slot(const itest_gateway *g);

/* --- processors ---------------------------------------------------------------------------- */

typedef struct {
  pid_t pid;
  int http_port;
  char name[64];
  char log[512];
} itest_processor;

/* Starts wsgate-processor in cluster `c` with `handler` and waits until /readyz answers 200 (it
 * joined the group) unless o->no_wait. */
void itest_processor_start(itest_processor *p, const itest_cluster *c, const char *name,
                           const char *handler, const itest_daemon_opts *o);
/* Sends sig and waits; returns the wait status. Fails the test if it does not exit in time. */
int itest_processor_stop(itest_processor *p, int sig, int timeout_ms);
/* Teardown: kills it if still running and names its log on stderr. */
void itest_processor_cleanup(itest_processor *p);

/* --- clients ------------------------------------------------------------------------------- */

/* An HS256 token (ITEST_JWT_SECRET) for `user` expiring exp_in_s from now (negative: already
 * expired). Static buffer, valid until the next call. */
const char *itest_token(const char *user, long exp_in_s);
/* Connects with "Authorization: Bearer <token>" for user and subprotocol wsgate.v1; fails the
 * test unless the upgrade succeeds. */
ws_client *itest_connect(const itest_gateway *g, const char *user);
/* The same, offering permessage-deflate (the gateway needs --deflate to accept it). */
ws_client *itest_connect_deflate(const itest_gateway *g, const char *user);
/* The same with a token whose `channels` claim is channels_json (a JSON array of patterns). */
ws_client *itest_connect_channels(const itest_gateway *g, const char *user,
                                  const char *channels_json);
/* Shrinks c's receive buffer to 4 KiB, so that once the test stops reading, the kernel absorbs
 * little of what the gateway writes (a client that stopped reading: slow consumers, closes). */
void itest_stop_reading(ws_client *c);
/* Any request: path (NULL "/"), extra headers (NULL-terminated, may be NULL), subprotocol (may be
 * NULL). Returns ws_client_connect's result; *out set on success. */
int itest_connect_raw(const itest_gateway *g, const char *path, const char *const *headers,
                      const char *subprotocol, ws_client **out, ws_http_response *resp);
/* Upgrades with "Authorization: Bearer <token>" and closes at once: 101, or the refusal's status
 * with its body copied to body[0..cap) (body may be NULL). Fails the test on anything else. */
int itest_upgrade_status(const itest_gateway *g, const char *token, char *body, size_t cap);
/* Receives the next message within timeout_ms; fails the test unless it is `op`. */
void itest_expect_msg(ws_client *c, ws_opcode op, ws_message *m, int timeout_ms);
/* Receives messages until one that is not a pong arrives within timeout_ms; fails the test on
 * timeout or a close. */
void itest_recv(ws_client *c, ws_message *m, int timeout_ms);

/* The next message (pongs skipped) must be the text `want` / a close with `code`. */
void itest_expect_text(ws_client *c, const char *want, int timeout_ms);
void itest_expect_close(ws_client *c, uint16_t code, int timeout_ms);

/* The value of one metric series ("name" or "name{labels}") at /metrics; -1 if absent. */
double itest_metric(int http_port, const char *series);
/* Waits until `series` is at least `want`; fails the test after timeout_ms. Returns the
 * itest_now_ms() at which it was seen. */
uint64_t itest_wait_metric(int http_port, const char *series, double want, int timeout_ms);
/* Waits until `series` is exactly `want`: a gauge settling (a connection closed by the client
 * counts until the daemon notices). Fails the test after timeout_ms; returns like the above. */
uint64_t itest_wait_metric_eq(int http_port, const char *series, double want, int timeout_ms);

#endif
