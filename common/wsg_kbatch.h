/*
 * wsg_kbatch: records an application holds back from its producer, released to librdkafka as
 * whole batches (load-adaptive batching, docs/GATEWAY.md "Latency knobs", docs/notes/
 * librdkafka-2.0.2.md#producer-defaults).
 *
 * Why: with linger.ms=0 librdkafka sends what it has as soon as its broker thread wakes, one
 * ProduceRequest per partition; at high rates the broker drowns in tiny requests. With linger.ms
 * above 0 every record waits at least ~1 ms (the broker thread's timer granularity). The owner
 * runs librdkafka with linger.ms=0, produces a record directly while few records of its partition
 * are in flight, and holds it here while more are; wsg_kbatch_release() hands a partition's held
 * run over with one rd_kafka_produce_batch(), which librdkafka enqueues atomically (explicit
 * partition), so one ProduceRequest carries the whole run.
 *
 * Order: one FIFO per partition, released from its head; the owner must hold (not produce
 * directly) a record while anything of its partition is held. A key maps to one partition
 * (wsg_kbatch_partition: the configured partitioner's hash over the partition count read at
 * start), for held and direct records alike, so a key's records keep their order.
 * Partitioners without a public hash ("random") and unknown counts are not supported: create
 * returns NULL and says why.
 *
 * Threads: one, the producing thread (the owner's); librdkafka is only called from it.
 */
#ifndef WSG_KBATCH_H
#define WSG_KBATCH_H

#include <librdkafka/rdkafka.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "wsg_config.h"

typedef struct wsg_kbatch wsg_kbatch;

/* A held record librdkafka refused at release (err); opaque as given to wsg_kbatch_hold; key and
 * value valid during the call only (the owner may produce them again). */
typedef void (*wsg_kbatch_failed_fn)(void *arg, void *opaque, const void *key, size_t keylen,
                                     const void *value, size_t len, rd_kafka_resp_err_t err);

/*
 * A batcher for topic rkt (borrowed; outlives the batcher). partitioner: the producer's
 * "partitioner" property (NULL or "": librdkafka's default). partitions: the topic's partition
 * count. Returns NULL with the reason in err (a partitioner without a public hash, no partitions,
 * out of memory). Caller destroys.
 */
wsg_kbatch *wsg_kbatch_create(rd_kafka_topic_t *rkt, const char *partitioner, int32_t partitions,
                              char *err, size_t errlen);

/* The -X property by which the user chose librdkafka's linger (linger.ms or its alias
 * queue.buffering.max.ms), or NULL: then the owner may run adaptive batching. props may be NULL. */
const char *wsg_kbatch_user_linger(const wsg_kvlist *props);

/* Whether wsg_kbatch_create accepts this "partitioner" property (NULL or "": the default). */
bool wsg_kbatch_partitioner_known(const char *partitioner);

/* Frees what is still held without producing it. Returns how many records were dropped. NULL is
 * a no-op. */
size_t wsg_kbatch_destroy(wsg_kbatch *b);

int32_t wsg_kbatch_partitions(const wsg_kbatch *b);

/* The partition a record with this key goes to, in [0, partitions). key may be NULL (hashed as
 * empty: a NULL key has no order to keep). */
int32_t wsg_kbatch_partition(const wsg_kbatch *b, const void *key, size_t keylen);

/* Appends a copy of key and value (both borrowed) to partition's FIFO (from wsg_kbatch_partition).
 * Returns 0, or -1 when out of memory (nothing held). */
int wsg_kbatch_hold(wsg_kbatch *b, int32_t partition, const void *key, size_t keylen,
                    const void *value, size_t len, void *opaque);

size_t wsg_kbatch_held(const wsg_kbatch *b); /* all partitions */
size_t wsg_kbatch_held_in(const wsg_kbatch *b, int32_t partition);

/*
 * Hands up to max of partition's oldest held records to librdkafka with one
 * rd_kafka_produce_batch() (RD_KAFKA_MSG_F_COPY). A record librdkafka refuses is passed to failed
 * (may be NULL) and dropped. Returns the number taken off the queue; *accepted_out (may be NULL)
 * gets how many librdkafka accepted.
 */
size_t wsg_kbatch_release(wsg_kbatch *b, int32_t partition, size_t max, wsg_kbatch_failed_fn failed,
                          void *arg, size_t *accepted_out);

#endif
