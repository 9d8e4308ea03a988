/*
 * api_kafka: wsgate-api's only librdkafka code: a transactional producer onto the commands
 * topic. A request's records are committed in one Kafka transaction, so a batch is accepted
 * whole or not at all ("no half-accepted batch"); several requests waiting at once share a
 * transaction (group commit), which is what keeps the cost of a commit off each request.
 * Processors read with isolation.level=read_committed (librdkafka's default), so an aborted
 * transaction's records are never executed.
 *
 * A request of exactly one record needs no transaction to be all or nothing: it is produced by
 * a second, plain idempotent producer (acks=all) and answered on its delivery report, which
 * librdkafka batches with the others (a transaction commit costs tens of milliseconds).
 *
 * A writer thread owns the transactional producer: it initialises transactions (retrying while
 * Kafka is unreachable: requests meanwhile fail at once with the reason), takes the queued
 * requests, produces their records, commits, and calls each request's `done` with the outcome.
 * Nothing waits: a request's thread goes on serving others (wsgate-api suspends the connection).
 *
 * Threads: api_kafka_submit() and api_kafka_status() from any thread; `done` runs on the
 * submitting thread (refused at once) or on a Kafka thread (the writer, the delivery-report
 * poller); create, shutdown and destroy from the main thread.
 */
#ifndef API_KAFKA_H
#define API_KAFKA_H

#include <stddef.h>
#include <stdint.h>

#include "wsg_config.h"
#include "wsg_metrics.h"

typedef struct api_kafka api_kafka;

typedef struct {
  const char *brokers;
  const wsg_kvlist *props; /* -X overrides; may be NULL */
  const char *topic;       /* the commands topic */
  const char *outbound;    /* the outbound topic: its partitions are the gateway slots (info) */
  uint64_t txn_timeout_ms; /* transaction.timeout.ms; also bounds a commit */
  wsg_metrics *metrics;    /* borrowed; may be NULL */
} api_kafka_options;

/* One record. Everything is borrowed until the submit's `done` is called. */
typedef struct {
  const void *key;
  size_t key_len;
  int32_t partition; /* RD_KAFKA_PARTITION_UA (-1): the murmur2 partitioner on the key */
  const void *value;
  size_t len;
} api_record;

/* Starts the writer thread (it connects in the background). Returns 0, or -1 with `err`. */
int api_kafka_create(api_kafka **out, const api_kafka_options *o, char *err, size_t errlen);
/* Refuses new submits, finishes what is queued or in flight (within the transaction timeout, then
 * purged: failed) and stops the threads: after it every `done` has been called. Idempotent. */
void api_kafka_shutdown(api_kafka *k);
void api_kafka_destroy(api_kafka *k); /* shuts down if needed, frees; NULL is a no-op */

/*
 * The outcome of a submit: 0 when every record is durable (acks=all, committed); -1 with the
 * reason when nothing was committed (Kafka unavailable, busy, shutting down), -2 when one of the
 * records was refused (too large). A commit that timed out is reported as a failure, but Kafka
 * may still have committed it: the Idempotency-Key is what makes the retry safe. `why` is valid
 * for the call ("" on success).
 */
typedef void (*api_kafka_done_fn)(void *arg, int rc, const char *why);

/*
 * Produces recs[0..n) (one record: idempotent producer; more: one transaction) and calls
 * done(arg, ...) exactly once, when they are acknowledged or failed (bounded by the transaction
 * timeout), or at once on this thread when refused.
 */
void api_kafka_submit(api_kafka *k, const api_record *recs, size_t n, api_kafka_done_fn done,
                      void *arg);

/* 0 when transactions are initialised, else -1 and why. Any thread. */
int api_kafka_status(api_kafka *k, char *why, size_t whylen);

/* Partitions of the commands topic (0 until the writer read the metadata). Any thread. */
int api_kafka_partitions(api_kafka *k);
/* Partitions of the outbound topic, the gateway slots (0 until read). Any thread. */
int api_kafka_slots(api_kafka *k);

#endif
