/*
 * gateway_itest: what the gateway's integration tests share: a real wsgate-gateway started on
 * free ports with topics, Redis prefix and gateway id of its own (so tests never see each other's
 * traffic), tokens, WebSocket clients, a reader of the inbound topic, a producer to the outbound
 * topic, and the gateway's metrics.
 *
 * Threads: the test's own thread. Functions named for what must hold fail the test otherwise.
 */
#ifndef WSG_GATEWAY_ITEST_H
#define WSG_GATEWAY_ITEST_H

#include <hiredis/hiredis.h>
#include <librdkafka/rdkafka.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "wsg_envelope.h"
#include "ws_client.h"

#define GWT_SECRET     "integration-test-secret-0123456789abcdef"
#define GWT_PARTITIONS 4
#define GWT_WAIT_MS    30000

typedef struct {
  pid_t pid;
  int port;      /* WebSocket */
  int http_port; /* /healthz /readyz /metrics */
  char in_topic[128];
  char out_topic[128];
  char prefix[128]; /* Redis key prefix, "<unique>:" */
  char gw_id[128];
  char log[512];
} gwt_gateway;

/* Creates the two topics (GWT_PARTITIONS each), starts the gateway with its standard flags plus
 * `extra` (NULL-terminated, may be NULL) and waits for /readyz 200. */
void gwt_start(gwt_gateway *g, const char *name, const char *const *extra);
/* As gwt_start, but returns once the process is started, without waiting for /readyz (a start
 * that is meant to fail). */
void gwt_launch(gwt_gateway *g, const char *name, const char *const *extra);
/* Starts again with the same topics, prefix and id (after a stop). */
void gwt_restart(gwt_gateway *g, const char *const *extra);
/* Sends sig and waits up to timeout_ms; returns the wait status (fails the test on timeout). */
int gwt_stop(gwt_gateway *g, int sig, int timeout_ms);
/* Kills the gateway if it still runs (teardown) and names its log on stderr (Criterion 2.4 cannot
 * tell a fixture whether the test failed). */
void gwt_cleanup(gwt_gateway *g);

/* An HS256 token for `user` expiring exp_in_s from now (negative: already expired). Static
 * buffer, valid until the next call. */
const char *gwt_token(const char *user, long exp_in_s);

/* Connects with "Authorization: Bearer <token>" for user and subprotocol wsgate.v1; fails the
 * test unless the upgrade succeeds. */
ws_client *gwt_connect(const gwt_gateway *g, const char *user);
/* Any request: path (NULL "/"), extra headers (NULL-terminated, may be NULL), subprotocol (may be
 * NULL). Returns ws_client_connect's result; *out set on success. */
int gwt_connect_raw(const gwt_gateway *g, const char *path, const char *const *headers,
                    const char *subprotocol, ws_client **out, ws_http_response *resp);

/* The slot the gateway holds according to Redis (its gateway record); fails the test if none. */
int32_t gwt_slot(const gwt_gateway *g);
redisContext *gwt_redis(void);

/* --- the inbound topic, read from the beginning of every partition --- */
typedef struct {
  rd_kafka_t *rk;
  rd_kafka_message_t *last; /* the envelope returned last (its bytes back env's pointers) */
} gwt_reader;

void gwt_reader_open(gwt_reader *r, const gwt_gateway *g);
void gwt_reader_close(gwt_reader *r);
/* The next inbound record within timeout_ms, decoded (fails the test if it does not decode).
 * Returns false on timeout. partition/key may be NULL. */
bool gwt_reader_next(gwt_reader *r, wsg_envelope *env, int timeout_ms, int32_t *partition);
/* Skips records until one of `kind` for `user` arrives; fails the test after timeout_ms. */
void gwt_reader_expect(gwt_reader *r, wsg_env_kind kind, const char *user, wsg_envelope *env,
                       int timeout_ms);

/* --- the outbound topic --- */
/* Encodes env and produces it to partition `slot` of the outbound topic; waits for the ack. */
void gwt_send_outbound(const gwt_gateway *g, int32_t slot, const wsg_envelope *env);
/* A deliver of text `data` to connection `conn` on this gateway (g = its id unless gw_id given). */
void gwt_deliver(const gwt_gateway *g, int32_t slot, const char *gw_id, uint64_t conn,
                 const char *data);

/* `count` delivers of `size` bytes each to `conn`, produced in one batch; waits for the acks. */
void gwt_deliver_many(const gwt_gateway *g, int32_t slot, uint64_t conn, size_t size, int count);

/* The value of one metric series ("name" or "name{labels}") from /metrics; -1 if absent. */
double gwt_metric(const gwt_gateway *g, const char *series);

/* Receives the next message within timeout_ms; fails the test unless it is `op`. */
void gwt_expect_msg(ws_client *c, ws_opcode op, ws_message *m, int timeout_ms);

#endif
