/*
 * wsg_options: the rows of the shared option groups. The help text IS the user documentation
 * (docs/CONFIG-*.md) of every program that embeds the group: write it for all of them, and name
 * a program only where the embeddings differ on purpose.
 */
#include "wsg_options.h"

#include <stdio.h>
#include <string.h>

#define KAFKA(field) offsetof(wsg_kafka_options, field)
static const wsg_option kafka_rows[] = {
    {"kafka-brokers", 'b', "WSGATE_KAFKA_BROKERS", WSG_OPT_STRING, KAFKA(brokers), NULL, 0, 0, NULL,
     0, "Kafka bootstrap servers, host:port[,host:port...]."},
    {"kafka-prop", 'X', "WSGATE_KAFKA_PROPS", WSG_OPT_KVLIST, KAFKA(props), NULL, 0, 0, NULL, 0,
     "librdkafka property key=value for every Kafka client of the program (the processor's "
     "consumer and producer alike), repeatable (environment: k=v;k=v), applied last, e.g. "
     "-X security.protocol=ssl."},
};
const wsg_option_group wsg_kafka_group = {"kafka", kafka_rows, WSG_COUNTOF(kafka_rows)};

#define REDIS(field) offsetof(wsg_redis_options, field)
static const wsg_option redis_rows[] = {
    {"redis-host", 0, "WSGATE_REDIS_HOST", WSG_OPT_STRING, REDIS(host), "127.0.0.1", 0, 0, NULL, 0,
     "Redis host (an IP address or a name resolved again at each connect)."},
    {"redis-port", 0, "WSGATE_REDIS_PORT", WSG_OPT_INT, REDIS(port), "6379", 1, 65535, NULL, 0,
     "Redis port."},
    {"redis-password", 0, "WSGATE_REDIS_PASSWORD", WSG_OPT_STRING, REDIS(password), NULL, 0, 0,
     NULL, WSG_OPTF_SECRET, "Redis password (AUTH); unset: no AUTH."},
    {"redis-user", 0, "WSGATE_REDIS_USER", WSG_OPT_STRING, REDIS(user), NULL, 0, 0, NULL, 0,
     "Redis ACL user name (AUTH user password); unset: AUTH with the password only."},
    {"redis-cluster", 0, "WSGATE_REDIS_CLUSTER", WSG_OPT_STRING, REDIS(cluster), NULL, 0, 0, NULL,
     0,
     "Redis Cluster seed nodes, host:port[,host:port...]: when set, the slot map is read from "
     "them and every command goes to the primary serving its key (--redis-host, --redis-port and "
     "--redis-db are then unused); unset: the single Redis at --redis-host."},
    {"redis-db", 0, "WSGATE_REDIS_DB", WSG_OPT_INT, REDIS(db), "0", 0, 1000, NULL, 0,
     "Redis database number."},
    {"redis-prefix", 0, "WSGATE_REDIS_PREFIX", WSG_OPT_STRING, REDIS(prefix), "wsgate:", 0, 0, NULL,
     0, "Prefix of every Redis key; gateways and processors of one cluster must agree."},
    {"redis-timeout", 0, "WSGATE_REDIS_TIMEOUT", WSG_OPT_DURATION, REDIS(timeout_ms), "2s", 100,
     60 * WSG_SEC, NULL, 0,
     "Deadline of a Redis connect and of each Redis command (in the processor, of each pipelined "
     "round trip). In the gateway it is counted in event-loop time: a loop that ran late (a "
     "CPU-starved process) does not count the delay as Redis' silence, and replies already "
     "received are never timed out."},
};
const wsg_option_group wsg_redis_group = {"redis", redis_rows, WSG_COUNTOF(redis_rows)};

#define OPS(field) offsetof(wsg_ops_options, field)
static const wsg_option ops_rows[] = {
    {"http-addr", 0, "WSGATE_HTTP_ADDR", WSG_OPT_STRING, OPS(addr), "0.0.0.0", 0, 0, NULL, 0,
     "Address of the operations endpoint (/healthz, /readyz, /metrics)."},
    {"http-port", 0, "WSGATE_HTTP_PORT", WSG_OPT_INT, OPS(port), "9090", 0, 65535, NULL, 0,
     "Port of the operations endpoint (0 picks a free port, logged at start); the default is 9090 "
     "for the gateway and 9091 for the processor, so the two can share a host."},
    {"liveness-stall", 0, "WSGATE_LIVENESS_STALL", WSG_OPT_DURATION, OPS(liveness_stall_ms), "10s",
     1 * WSG_SEC, 10 * 60 * WSG_SEC, NULL, 0,
     "/healthz answers 503 once the daemon's main loop (the gateway's event loop, the "
     "processor's consumer loop, wsgate-api's loop of signals and keys-file reloads) has not "
     "turned for this long, so a liveness probe restarts a wedged process; /readyz is not "
     "affected. The probe's own failureThreshold x periodSeconds comes on top."},
};
const wsg_option_group wsg_ops_group = {"ops", ops_rows, WSG_COUNTOF(ops_rows)};

#define LOG(field) offsetof(wsg_log_options, field)
static const wsg_option log_rows[] = {
    {"log-level", 0, "WSGATE_LOG_LEVEL", WSG_OPT_ENUM, LOG(level), "info", 0, 0,
     "debug|info|warn|error", 0, "Least severe level logged."},
    {"log-format", 0, "WSGATE_LOG_FORMAT", WSG_OPT_ENUM, LOG(format), "text", 0, 0, "text|json", 0,
     "One line of text or one JSON object per event."},
};
const wsg_option_group wsg_log_group = {"log", log_rows, WSG_COUNTOF(log_rows)};

int wsg_kafka_options_check(const wsg_kafka_options *o, char *err, size_t errlen) {
  if (o->brokers == NULL || o->brokers[0] == '\0') {
    snprintf(err, errlen, "--kafka-brokers is empty; give host:port of at least one broker");
    return -1;
  }
  return 0;
}

int wsg_log_options_resolve(wsg_log_options *o, char *err, size_t errlen) {
  if (wsg_log_level_parse(o->level, &o->min_level) != 0) {
    snprintf(err, errlen, "--log-level: unknown level %s", o->level ? o->level : "(unset)");
    return -1;
  }
  o->json = o->format != NULL && strcmp(o->format, "json") == 0;
  return 0;
}
