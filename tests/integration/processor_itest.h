/*
 * processor_itest: what the processor's integration tests share: a "cluster" of unique topics,
 * consumer group and Redis prefix (so tests never see each other's traffic on the shared broker
 * and Redis), real wsgate-processor and wsgate-gateway processes started on free ports, envelopes
 * produced to the inbound topic, the outbound topic read from the beginning, committed offsets
 * and metrics.
 *
 * Threads: the test's own thread. Functions named for what must hold fail the test otherwise.
 */
#ifndef WSG_PROCESSOR_ITEST_H
#define WSG_PROCESSOR_ITEST_H

#include <hiredis/hiredis.h>
#include <librdkafka/rdkafka.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "wsg_envelope.h"
#include "ws_client.h"

#define PIT_WAIT_MS    30000
#define PIT_JWT_SECRET "processor-itest-secret-0123456789abcdef!"

typedef struct {
  char in_topic[128];
  char out_topic[128];
  char dlq_topic[128]; /* "" without one */
  char group[128];
  char prefix[128]; /* "<unique>:" */
  int in_partitions;
  int out_partitions;
} pit_cluster;

/*
 * Every process started below is remembered until it is stopped. Use as every test's `.fini`:
 * Criterion ends a test at its first failed assertion, so the test's own clean-up may never run;
 * this kills what is left (SIGKILL to its process group) and names its log.
 */
void pit_fini(void);
/* Remembers (forgets) a process started otherwise, e.g. a private redis-server, for pit_fini. */
void pit_track(pid_t pid, const char *log);
void pit_untrack(pid_t pid);

/* Unique names; creates the inbound and outbound topics (and a dead-letter topic if asked). */
void pit_cluster_init(pit_cluster *c, int in_partitions, int out_partitions, bool dead_letter);

typedef struct {
  pid_t pid;
  int http_port;
  char name[64];
  char log[512];
} pit_proc;

/*
 * Starts wsgate-processor for cluster `c` with `handler` and `extra` flags (NULL-terminated, may
 * be NULL) and waits until /readyz answers 200 (it joined the group) unless wait_ready is false.
 */
void pit_proc_start(pit_proc *p, const pit_cluster *c, const char *name, const char *handler,
                    const char *const *extra, bool wait_ready);
/* Sends sig and waits; returns the wait status. Fails the test if it does not exit in time. */
int pit_proc_stop(pit_proc *p, int sig, int timeout_ms);
/* Teardown: kills it if still running and names its log on stderr. */
void pit_proc_cleanup(pit_proc *p);

typedef struct {
  pid_t pid;
  int port;
  int http_port;
  char id[96];
  char log[512];
  int32_t slot;
} pit_gateway;

/* Starts wsgate-gateway for cluster `c`, waits for /readyz 200 and reads its slot from Redis. */
void pit_gateway_start(pit_gateway *g, const pit_cluster *c, const char *name);
/* The same with `extra` flags (NULL-terminated, may be NULL) after the standard ones. */
void pit_gateway_start_with(pit_gateway *g, const pit_cluster *c, const char *name,
                            const char *const *extra);
void pit_gateway_cleanup(pit_gateway *g);
/* A WebSocket client of `user` on gateway g (HS256 token, subprotocol wsgate.v1). */
ws_client *pit_connect(const pit_gateway *g, const char *user);
/* Receives messages until one that is not a ping/pong arrives within timeout_ms; fails the test
 * on timeout or a close. */
void pit_recv(ws_client *c, ws_message *m, int timeout_ms);

/* The value of one metric series ("name" or "name{labels}") at /metrics; -1 if absent. */
double pit_metric(int http_port, const char *series);

/* --- Kafka ----------------------------------------------------------------------------------- */

rd_kafka_t *pit_producer(void);
/* Produces one envelope to the inbound topic keyed by its user (murmur2 like a gateway) without
 * waiting; pit_flush waits for every acknowledgement. */
void pit_produce(rd_kafka_t *p, const pit_cluster *c, const wsg_envelope *env);
void pit_produce_raw(rd_kafka_t *p, const char *topic, const void *key, size_t key_len,
                     const void *value, size_t len);
void pit_flush(rd_kafka_t *p);

/* A msg envelope from (user, conn) on gateway gw/slot. Pointers borrowed. */
wsg_envelope pit_msg(const char *user, uint64_t conn, const char *gw, uint32_t slot,
                     const void *data, size_t len, bool binary);

/* Reads every partition of a topic from the beginning (no group). */
typedef struct {
  rd_kafka_t *rk;
} pit_reader;

void pit_reader_open(pit_reader *r, const char *topic, int partitions);
void pit_reader_close(pit_reader *r);
/* The next record within timeout_ms (caller destroys it), or NULL. */
rd_kafka_message_t *pit_reader_next(pit_reader *r, int timeout_ms);

/* Sum over the inbound partitions of (end offset - committed offset of the group); -1 if a
 * partition has no committed offset while it holds records. */
int64_t pit_uncommitted(const pit_cluster *c);

/* --- Redis ----------------------------------------------------------------------------------- */

/* The shared node, or the seed node of WSGATE_TEST_REDIS_CLUSTER (keys of other nodes answer
 * MOVED there). */
redisContext *pit_redis(void);
/* fmt with two %s (prefix and id) on the node serving the key: one MOVED followed, like
 * redis-cli -c, so it works on the shared node and on WSGATE_TEST_REDIS_CLUSTER. */
redisReply *pit_redis_key_command(const char *fmt, const char *a, const char *b);
/* A gateway record (slot, lease) and a connection entry under the cluster's prefix, as a gateway
 * writes them: for tests that drive the processor without a gateway. */
void pit_fake_gateway(redisContext *rc, const pit_cluster *c, const char *gw, int slot);
void pit_fake_conn(redisContext *rc, const pit_cluster *c, const char *user, uint64_t conn,
                   const char *gw);

#endif
