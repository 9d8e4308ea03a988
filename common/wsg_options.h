/*
 * wsg_options: the option groups several programs share, declared once: Kafka (bootstrap
 * servers, librdkafka properties), Redis (the connection), the operations HTTP endpoint and
 * logging. A program embeds the struct in its config and lists the group as a section of its
 * wsg_config_spec at the struct's offset (wsg_config.h), overriding a row's default or flags where
 * it differs on purpose; flag names, variables and help text are then the same everywhere.
 *
 * Strings are owned by the embedding config and freed by its wsg_config_finish().
 * Threads: main thread only while parsing; read-only afterwards.
 */
#ifndef WSG_OPTIONS_H
#define WSG_OPTIONS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "wsg_config.h"
#include "wsg_log.h"

/* --kafka-brokers (-b), -X / --kafka-prop (WSGATE_KAFKA_PROPS). The daemons add
 * WSG_OPTF_REQUIRED to kafka-brokers; the tools call it --brokers. */
typedef struct {
  char *brokers;    /* host:port[,host:port...] */
  wsg_kvlist props; /* librdkafka properties, applied after the program's own */
} wsg_kafka_options;

/* --redis-host, --redis-port, --redis-password, --redis-user, --redis-cluster, --redis-db,
 * --redis-prefix, --redis-timeout. */
typedef struct {
  char *host;
  int64_t port;
  char *password; /* NULL: no AUTH */
  char *user;     /* ACL user; NULL: AUTH with the password only */
  char *cluster;  /* Redis Cluster seeds "h:p,h:p"; NULL: one node at host:port */
  int64_t db;
  char *prefix; /* of every key */
  uint64_t timeout_ms;
} wsg_redis_options;

/* --http-addr, --http-port of /healthz, /readyz, /metrics (default port 9090; the processor
 * overrides it with 9091), and --liveness-stall, after which /healthz fails. Not
 * wsg_http_options, which is the server's own start argument. */
typedef struct {
  char *addr;
  int64_t port;               /* 0 picks a free port */
  uint64_t liveness_stall_ms; /* /healthz 503 once the daemon's loop has not turned for this long */
} wsg_ops_options;

/* --log-level, --log-format, and what wsg_log_options_resolve() derives from them. */
typedef struct {
  char *level;
  char *format;
  wsg_log_level min_level; /* derived */
  bool json;               /* derived */
} wsg_log_options;

extern const wsg_option_group wsg_kafka_group;
extern const wsg_option_group wsg_redis_group;
extern const wsg_option_group wsg_ops_group;
extern const wsg_option_group wsg_log_group;

/* An empty --kafka-brokers (given as ""). Returns 0, or -1 with what to do in `err`. */
int wsg_kafka_options_check(const wsg_kafka_options *o, char *err, size_t errlen);

/* Fills min_level and json from the parsed words. Returns 0, or -1 with the problem in `err`. */
int wsg_log_options_resolve(wsg_log_options *o, char *err, size_t errlen);

#endif
