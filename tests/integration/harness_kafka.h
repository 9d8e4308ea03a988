/*
 * harness_kafka: records on a test cluster's topics: a reader of any topic from the beginning
 * (raw records or decoded envelopes), a producer of envelopes to the inbound topic (as a gateway
 * would) or of deliveries to a gateway's outbound partition (as a processor would), and the
 * consumer group's uncommitted records.
 *
 * Threads: the test's own thread. Functions named for what must hold fail the test otherwise.
 */
#ifndef WSG_ITEST_HARNESS_KAFKA_H
#define WSG_ITEST_HARNESS_KAFKA_H

#include <librdkafka/rdkafka.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "harness_daemons.h"
#include "wsg_envelope.h"

/* --- reading ------------------------------------------------------------------------------- */

/* Reads every partition of a topic from the beginning (no group). */
typedef struct {
  rd_kafka_t *rk;
  rd_kafka_message_t *last; /* the envelope returned last (its bytes back env's pointers) */
} itest_reader;

void itest_reader_open(itest_reader *r, const char *topic, int partitions);
void itest_reader_close(itest_reader *r);
/* The next record within timeout_ms (caller destroys it), or NULL. */
rd_kafka_message_t *itest_reader_next(itest_reader *r, int timeout_ms);
/* The next record of an inbound topic within timeout_ms, decoded (fails the test unless it
 * decodes and is keyed by its user). Returns false on timeout. partition may be NULL. */
bool itest_reader_next_envelope(itest_reader *r, wsg_envelope *env, int timeout_ms,
                                int32_t *partition);
/* Skips records until one of `kind` for `user` arrives; fails the test after timeout_ms. */
void itest_reader_expect(itest_reader *r, wsg_env_kind kind, const char *user, wsg_envelope *env,
                         int timeout_ms);

/* --- the inbound topic --------------------------------------------------------------------- */

rd_kafka_t *itest_producer(void);
/* Produces one envelope to the inbound topic keyed by its user (murmur2 like a gateway) without
 * waiting; itest_flush waits for every acknowledgement. */
void itest_produce(rd_kafka_t *p, const itest_cluster *c, const wsg_envelope *env);
void itest_produce_raw(rd_kafka_t *p, const char *topic, const void *key, size_t key_len,
                       const void *value, size_t len);
void itest_flush(rd_kafka_t *p);
/* A msg envelope from (user, conn) on gateway gw/slot. Pointers borrowed. */
wsg_envelope itest_msg(const char *user, uint64_t conn, const char *gw, uint32_t slot,
                       const void *data, size_t len, bool binary);

/* Sum over the inbound partitions of (end offset - committed offset of the group); -1 if a
 * partition has no committed offset while it holds records. */
int64_t itest_uncommitted(const itest_cluster *c);

/* --- a gateway's outbound topic ------------------------------------------------------------ */

/* Encodes env and produces it to partition `slot` of g's outbound topic; waits for the ack. */
void itest_send_outbound(const itest_gateway *g, int32_t slot, const wsg_envelope *env);
/* Produces one encoded envelope to partition `slot` of g's outbound topic with rk, waiting while
 * its queue is full, without waiting for the ack (rd_kafka_flush does). value: copied. */
void itest_outbound_produce(rd_kafka_t *rk, const itest_gateway *g, int32_t slot, const void *value,
                            size_t len);
/* A deliver of text `data` to connection `conn` on this gateway (g's id unless gw_id given). */
void itest_deliver(const itest_gateway *g, int32_t slot, const char *gw_id, uint64_t conn,
                   const char *data);
/* A `close` envelope for `conn` on this gateway: code 0 none (the gateway then sends 4002),
 * reason NULL none. */
void itest_send_close(const itest_gateway *g, int32_t slot, uint64_t conn, int code,
                      const char *reason);
/* `count` delivers of `size` bytes each to `conn`, produced in one batch; waits for the acks. */
void itest_deliver_many(const itest_gateway *g, int32_t slot, uint64_t conn, size_t size,
                        int count);
/* The same, each payload starting with its number, "%08d" from 0 (size >= 8), so a reader can
 * check order and completeness (itest_numbered_ok). */
void itest_deliver_numbered(const itest_gateway *g, int32_t slot, uint64_t conn, size_t size,
                            int count);
/* Whether data is message number i of itest_deliver_numbered's `size`-byte series. */
bool itest_numbered_ok(const uint8_t *data, size_t len, size_t size, int i);

#endif
