/*
 * wsg_kafka: the librdkafka glue shared by every wsgate program: a configuration with wsgate's
 * defaults and the user's -X overrides, logs routed into wsg_log, a constructor whose ownership of
 * the configuration does not depend on success, and topic creation for tools and tests.
 *
 * Threads: any; librdkafka's own threads call the log callback.
 */
#ifndef WSG_KAFKA_H
#define WSG_KAFKA_H

#include <librdkafka/rdkafka.h>
#include <signal.h>
#include <stddef.h>
#include <stdint.h>

#include "wsg_config.h"

typedef enum {
  WSG_KAFKA_PRODUCER,        /* idempotent, acks=all, murmur2_random, small linger */
  WSG_KAFKA_CONSUMER_GROUP,  /* cooperative-sticky, manual offset store */
  WSG_KAFKA_CONSUMER_ASSIGN, /* no group semantics: assign() only, no commits */
  WSG_KAFKA_ADMIN,
} wsg_kafka_role;

/*
 * A new configuration: bootstrap servers, wsgate's defaults for `role`, then `overrides` (the
 * user's -X key=value, applied last so they win). Logs go to wsg_log under subsystem "kafka".
 * Returns NULL and a message in `err` if a property is unknown or invalid. Caller owns the result.
 */
rd_kafka_conf_t *wsg_kafka_conf_new(wsg_kafka_role role, const char *brokers,
                                    const wsg_kvlist *overrides, char *err, size_t errlen);

/* Sets one property; 0 or -1 with librdkafka's message in `err`. */
int wsg_kafka_conf_set(rd_kafka_conf_t *conf, const char *key, const char *value, char *err,
                       size_t errlen);

/* rd_kafka_new() that takes `conf` (freed even on failure). Returns NULL and a message on error. */
rd_kafka_t *wsg_kafka_new(rd_kafka_type_t type, rd_kafka_conf_t *conf, char *err, size_t errlen);

/*
 * Creates `topic` with `partitions` partitions if it does not exist, then checks the partition
 * count. Returns 0, or -1 with a message (e.g. "topic wsgate.inbound has 3 partitions, 8
 * configured"). Waits at most `timeout_ms` in total.
 */
int wsg_kafka_topic_ensure(rd_kafka_t *rk, const char *topic, int partitions,
                           int replication_factor, int timeout_ms, char *err, size_t errlen);

/* Partition count of `topic`, or -1 with a message if it does not exist or the broker is down. */
int wsg_kafka_topic_partitions(rd_kafka_t *rk, const char *topic, int timeout_ms, char *err,
                               size_t errlen);
/* What wsg_kafka_topic_partitions_until returns when *stop was set during its wait. */
#define WSG_KAFKA_STOPPED (-2)
/*
 * The same, for a daemon's start-up: while the cluster does not answer it asks again in short
 * slices, and returns WSG_KAFKA_STOPPED as soon as *stop is set (a signal handler's flag), so a
 * SIGTERM during a wait for an unreachable cluster stops the daemon promptly. stop may be NULL.
 */
int wsg_kafka_topic_partitions_until(rd_kafka_t *rk, const char *topic, int timeout_ms,
                                     const volatile sig_atomic_t *stop, char *err, size_t errlen);

/* The partition librdkafka's murmur2_random partitioner (the Java client's default) picks for a
 * non-empty key: (murmur2(key) & 0x7fffffff) % partitions. Used by tests and tools.
 * Returns -1 if `partitions` < 1. */
int wsg_kafka_murmur2_partition(const void *key, size_t len, int partitions);

/* Kafka's Utils.murmur2() of `key`: the Java int's 32 bits. */
uint32_t wsg_kafka_murmur2(const void *key, size_t len);

#endif
