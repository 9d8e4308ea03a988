/*
 * wsg_kafka: wsgate's defaults for librdkafka, its logs routed into wsg_log, topic creation and
 * verification, and the Java client's murmur2 partitioner.
 *
 * Threads: any. The log callback runs on librdkafka's own threads (wsg_log is thread-safe);
 * wsg_kafka_topic_ensure and wsg_kafka_topic_partitions(_until) block their caller for at most
 * their timeout, so they belong at start-up or in tools, never on an event loop.
 */
#include "wsg_kafka.h"

#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <syslog.h>
#include <time.h>

#include "wsg_err.h"
#include "wsg_log.h"
#include "wsg_time.h"

/* The seed of Kafka's Utils.murmur2(), the Java client's default partitioner. */
#define MURMUR2_SEED 0x9747b28cu
#define MURMUR2_M    0x5bd1e995u

/* How long to wait between two metadata polls while a new topic propagates. */
#define TOPIC_POLL_INTERVAL_MS 100
/* One metadata request of a stoppable wait: how quickly a stop is noticed. */
#define STOP_CHECK_MS 200

typedef struct {
  const char *key;
  const char *value;
} kafka_default;

/* Every client: a recognisable client id in broker logs and quotas; no log line for each idle
 * connection the broker closes (connections.max.idle.ms), which is normal and not actionable. */
static const kafka_default common_defaults[] = {
    {"client.id", "wsgate"},
    {"log.connection.close", "false"},
};

/* Inbound producer: the Java client's partitioner, idempotent with acks=all, a 64 MiB queue that
 * pushes back (docs/notes/librdkafka-2.0.2.md#producer-defaults). */
// clang-format off
static const kafka_default producer_defaults[] = {
    {"enable.idempotence", "true"},
    {"acks", "all"},
    {"partitioner", "murmur2_random"},
    {"linger.ms", "5"},
    {"compression.codec", "none"},
    {"message.max.bytes", "1000000"},
    {"queue.buffering.max.kbytes", "65536"},
};
// clang-format on

/* Consumer group (processors): cooperative-sticky, offsets stored only when the work is done
 * (docs/notes/librdkafka-2.0.2.md#group-defaults). */
static const kafka_default group_defaults[] = {
    {"partition.assignment.strategy", "cooperative-sticky"},
    {"enable.auto.offset.store", "false"},
    {"enable.auto.commit", "true"},
    {"auto.offset.reset", "earliest"},
};

/* assign()-only consumer: rd_kafka_assign() needs a group.id, never used since nothing is
 * committed (docs/notes/librdkafka-2.0.2.md#assign-needs-group-id). */
static const kafka_default assign_defaults[] = {
    {"group.id", "wsgate.assign-only"},
    {"enable.auto.commit", "false"},
    {"enable.auto.offset.store", "false"},
    {"auto.offset.reset", "latest"},
};

/* librdkafka logs with syslog levels. */
static wsg_log_level level_from_syslog(int level) {
  if (level <= LOG_ERR)
    return WSG_LOG_ERROR;
  if (level == LOG_WARNING)
    return WSG_LOG_WARN;
  if (level <= LOG_INFO)
    return WSG_LOG_INFO;
  return WSG_LOG_DEBUG;
}

/* The inverse, for librdkafka's log_level: lines below our minimum are never formatted. */
static int syslog_from_level(wsg_log_level level) {
  switch (level) {
  case WSG_LOG_DEBUG:
    return LOG_DEBUG;
  case WSG_LOG_INFO:
    return LOG_INFO;
  case WSG_LOG_WARN:
    return LOG_WARNING;
  case WSG_LOG_ERROR:
    break;
  }
  return LOG_ERR;
}

static void log_cb(const rd_kafka_t *rk, int level, const char *fac, const char *buf) {
  wsg_log(level_from_syslog(level), "kafka", "%s: %s: %s", rk ? rd_kafka_name(rk) : "rdkafka", fac,
          buf);
}

int wsg_kafka_conf_set(rd_kafka_conf_t *conf, const char *key, const char *value, char *err,
                       size_t errlen) {
  char rderr[512];
  if (rd_kafka_conf_set(conf, key, value, rderr, sizeof(rderr)) != RD_KAFKA_CONF_OK) {
    wsg_err_set(err, errlen, "kafka property %s=%s: %s", key, value, rderr);
    return -1;
  }
  return 0;
}

static int set_defaults(rd_kafka_conf_t *conf, const kafka_default *defs, size_t n, char *err,
                        size_t errlen) {
  for (size_t i = 0; i < n; i++) {
    if (wsg_kafka_conf_set(conf, defs[i].key, defs[i].value, err, errlen) != 0)
      return -1;
  }
  return 0;
}

#define SET_DEFAULTS(conf, table, err, errlen)                                                     \
  set_defaults((conf), (table), sizeof(table) / sizeof((table)[0]), (err), (errlen))

rd_kafka_conf_t *wsg_kafka_conf_new(wsg_kafka_role role, const char *brokers,
                                    const wsg_kvlist *overrides, char *err, size_t errlen) {
  if (!brokers || !*brokers) {
    wsg_err_set(err, errlen, "no Kafka bootstrap servers given (host:port[,host:port...])");
    return NULL;
  }
  rd_kafka_conf_t *conf = rd_kafka_conf_new();
  char level[4];
  snprintf(level, sizeof(level), "%d", syslog_from_level(wsg_log_min_level));

  if (wsg_kafka_conf_set(conf, "bootstrap.servers", brokers, err, errlen) != 0 ||
      wsg_kafka_conf_set(conf, "log_level", level, err, errlen) != 0 ||
      SET_DEFAULTS(conf, common_defaults, err, errlen) != 0)
    goto fail;

  int rc = 0;
  switch (role) {
  case WSG_KAFKA_PRODUCER:
    rc = SET_DEFAULTS(conf, producer_defaults, err, errlen);
    break;
  case WSG_KAFKA_CONSUMER_GROUP:
    rc = SET_DEFAULTS(conf, group_defaults, err, errlen);
    break;
  case WSG_KAFKA_CONSUMER_ASSIGN:
    rc = SET_DEFAULTS(conf, assign_defaults, err, errlen);
    break;
  case WSG_KAFKA_ADMIN:
    break;
  default:
    wsg_err_set(err, errlen, "unknown Kafka client role %d", (int)role);
    rc = -1;
  }
  if (rc != 0)
    goto fail;

  rd_kafka_conf_set_log_cb(conf, log_cb);

  /* The user's -X properties last, so they win over every default above. */
  if (overrides) {
    for (size_t i = 0; i < overrides->count; i++) {
      if (wsg_kafka_conf_set(conf, overrides->keys[i], overrides->values[i], err, errlen) != 0)
        goto fail;
    }
  }
  return conf;

fail:
  rd_kafka_conf_destroy(conf);
  return NULL;
}

rd_kafka_t *wsg_kafka_new(rd_kafka_type_t type, rd_kafka_conf_t *conf, char *err, size_t errlen) {
  if (!conf) {
    wsg_err_set(err, errlen, "no Kafka configuration");
    return NULL;
  }
  char rderr[512];
  /* rd_kafka_new() owns conf only when it succeeds. */
  rd_kafka_t *rk = rd_kafka_new(type, conf, rderr, sizeof(rderr));
  if (!rk) {
    rd_kafka_conf_destroy(conf);
    wsg_err_set(err, errlen, "cannot create the Kafka %s: %s",
                type == RD_KAFKA_PRODUCER ? "producer" : "consumer", rderr);
    return NULL;
  }
  return rk;
}

static int remaining_ms(uint64_t deadline) {
  uint64_t now = wsg_now_mono_ms();
  if (now >= deadline)
    return 0;
  uint64_t left = deadline - now;
  return left > INT32_MAX ? INT32_MAX : (int)left;
}

static void sleep_ms(int ms) {
  struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000L};
  while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
  }
}

/* Partition count of `topic`, 0 if not listed, -1 if the request failed. Asks for all topics, so
 * asking never auto-creates it (docs/notes/librdkafka-2.0.2.md#metadata-question). */
static int lookup_partitions(rd_kafka_t *rk, const char *topic, int timeout_ms, char *err,
                             size_t errlen) {
  const struct rd_kafka_metadata *md = NULL;
  rd_kafka_resp_err_t rc = rd_kafka_metadata(rk, 1, NULL, &md, timeout_ms > 0 ? timeout_ms : 1);
  if (rc != RD_KAFKA_RESP_ERR_NO_ERROR) {
    wsg_err_set(err, errlen, "cannot read the cluster's metadata: %s", rd_kafka_err2str(rc));
    return -1;
  }
  int count = 0;
  for (int i = 0; i < md->topic_cnt; i++) {
    const struct rd_kafka_metadata_topic *t = &md->topics[i];
    if (strcmp(t->topic, topic) != 0)
      continue;
    /* A topic still being created may be listed with LEADER_NOT_AVAILABLE: its partition count
     * is already final. UNKNOWN_TOPIC_OR_PART means it is not there. */
    if (t->err == RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART)
      break;
    count = t->partition_cnt;
    break;
  }
  rd_kafka_metadata_destroy(md);
  if (count == 0)
    wsg_err_set(err, errlen, "topic %s does not exist", topic);
  return count;
}

int wsg_kafka_topic_partitions(rd_kafka_t *rk, const char *topic, int timeout_ms, char *err,
                               size_t errlen) {
  int n = lookup_partitions(rk, topic, timeout_ms, err, errlen);
  return n > 0 ? n : -1;
}

int wsg_kafka_topic_partitions_until(rd_kafka_t *rk, const char *topic, int timeout_ms,
                                     const volatile sig_atomic_t *stop, char *err, size_t errlen) {
  uint64_t deadline = wsg_now_mono_ms() + (uint64_t)(timeout_ms > 0 ? timeout_ms : 0);
  for (;;) {
    if (stop && *stop) {
      wsg_err_set(err, errlen, "stopped by a signal while waiting for the Kafka cluster");
      return WSG_KAFKA_STOPPED;
    }
    int left = remaining_ms(deadline);
    int slice = stop && left > STOP_CHECK_MS ? STOP_CHECK_MS : left;
    uint64_t t0 = wsg_now_mono_ms();
    int n = lookup_partitions(rk, topic, slice, err, errlen);
    /* Only an unanswered request is asked again: a missing topic is an answer. */
    if (n >= 0 || remaining_ms(deadline) == 0)
      return n > 0 ? n : -1;
    uint64_t spent = wsg_now_mono_ms() - t0;
    if (spent < (uint64_t)slice) /* a request that failed at once must not spin */
      sleep_ms((int)((uint64_t)slice - spent));
  }
}

/*
 * CreateTopics for one topic. Returns 0 if it was created or already existed, -1 with the
 * broker's message otherwise (the caller still checks whether the topic exists: a client without
 * the right to create topics may use one an operator created).
 */
static int create_topic(rd_kafka_t *rk, const char *topic, int partitions, int replication_factor,
                        int timeout_ms, bool *created, char *err, size_t errlen) {
  char rderr[512];
  int rc = -1;
  *created = false;
  rd_kafka_NewTopic_t *nt = rd_kafka_NewTopic_new(
      topic, partitions, replication_factor > 0 ? replication_factor : -1, rderr, sizeof(rderr));
  if (!nt) {
    wsg_err_set(err, errlen, "topic %s: %s", topic, rderr);
    return -1;
  }
  rd_kafka_AdminOptions_t *opts = rd_kafka_AdminOptions_new(rk, RD_KAFKA_ADMIN_OP_CREATETOPICS);
  rd_kafka_queue_t *q = rd_kafka_queue_new(rk);
  rd_kafka_event_t *ev = NULL;
  /* The broker waits up to the operation timeout for the new topic to propagate; the request
   * timeout bounds the whole call. */
  if (rd_kafka_AdminOptions_set_request_timeout(opts, timeout_ms, rderr, sizeof(rderr)) ||
      rd_kafka_AdminOptions_set_operation_timeout(opts, timeout_ms, rderr, sizeof(rderr))) {
    wsg_err_set(err, errlen, "topic %s: %s", topic, rderr);
    goto out;
  }
  rd_kafka_CreateTopics(rk, &nt, 1, opts, q);
  /* librdkafka enforces the request timeout itself and then emits an error event; the margin only
   * covers its timer granularity. */
  ev = rd_kafka_queue_poll(q, timeout_ms + 1000);
  if (!ev) {
    wsg_err_set(err, errlen, "creating topic %s timed out after %d ms", topic, timeout_ms);
    goto out;
  }
  if (rd_kafka_event_error(ev)) {
    wsg_err_set(err, errlen, "creating topic %s: %s", topic, rd_kafka_event_error_string(ev));
    goto out;
  }
  const rd_kafka_CreateTopics_result_t *res = rd_kafka_event_CreateTopics_result(ev);
  size_t cnt = 0;
  const rd_kafka_topic_result_t **results =
      res ? rd_kafka_CreateTopics_result_topics(res, &cnt) : NULL;
  if (cnt != 1) {
    wsg_err_set(err, errlen, "creating topic %s: unexpected reply (%zu results)", topic, cnt);
    goto out;
  }
  rd_kafka_resp_err_t terr = rd_kafka_topic_result_error(results[0]);
  if (terr == RD_KAFKA_RESP_ERR_NO_ERROR) {
    *created = true;
    rc = 0;
  } else if (terr == RD_KAFKA_RESP_ERR_TOPIC_ALREADY_EXISTS) {
    rc = 0;
  } else {
    const char *msg = rd_kafka_topic_result_error_string(results[0]);
    wsg_err_set(err, errlen, "creating topic %s: %s (%s)", topic,
                msg ? msg : rd_kafka_err2str(terr), rd_kafka_err2name(terr));
  }

out:
  if (ev)
    rd_kafka_event_destroy(ev);
  rd_kafka_queue_destroy(q);
  rd_kafka_AdminOptions_destroy(opts);
  rd_kafka_NewTopic_destroy(nt);
  return rc;
}

int wsg_kafka_topic_ensure(rd_kafka_t *rk, const char *topic, int partitions,
                           int replication_factor, int timeout_ms, char *err, size_t errlen) {
  if (!topic || !*topic) {
    wsg_err_set(err, errlen, "no topic name given");
    return -1;
  }
  if (partitions < 1) {
    wsg_err_set(err, errlen, "topic %s: partition count must be at least 1 (got %d)", topic,
                partitions);
    return -1;
  }
  if (timeout_ms < 1)
    timeout_ms = 1;
  uint64_t deadline = wsg_now_mono_ms() + (uint64_t)timeout_ms;

  char create_err[512] = "";
  bool created = false;
  int create_rc = create_topic(rk, topic, partitions, replication_factor, timeout_ms, &created,
                               create_err, sizeof(create_err));
  if (created)
    WSG_INFO("kafka", "created topic %s with %d partitions", topic, partitions);

  /* Metadata can lag just after a creation: poll until the topic is listed or the deadline. */
  char look_err[512] = "";
  for (;;) {
    int n = lookup_partitions(rk, topic, remaining_ms(deadline), look_err, sizeof(look_err));
    if (n > 0) {
      if (n != partitions) {
        wsg_err_set(err, errlen,
                    "topic %s has %d partitions, %d configured: change the configuration to %d, or "
                    "recreate the topic",
                    topic, n, partitions, n);
        return -1;
      }
      if (create_rc != 0)
        WSG_WARN("kafka", "%s; using the existing topic %s (%d partitions)", create_err, topic, n);
      return 0;
    }
    /* The creation itself failed and the topic is not there: its error says why. */
    if (create_rc != 0 && n == 0) {
      wsg_err_set(err, errlen, "%s", create_err);
      return -1;
    }
    int left = remaining_ms(deadline);
    if (left == 0)
      break;
    sleep_ms(left < TOPIC_POLL_INTERVAL_MS ? left : TOPIC_POLL_INTERVAL_MS);
  }
  wsg_err_set(err, errlen, "topic %s not usable after %d ms: %s", topic, timeout_ms,
              create_rc != 0 ? create_err : look_err);
  return -1;
}

/* Kafka's Utils.murmur2(): MurmurHash2 (32-bit) with a fixed seed, the key's bytes read as
 * little-endian 32-bit words. Unsigned arithmetic gives the Java int's bits exactly. */
static uint32_t murmur2(const unsigned char *data, size_t len) {
  uint32_t h = MURMUR2_SEED ^ (uint32_t)len;
  size_t words = len / 4;
  for (size_t i = 0; i < words; i++) {
    const unsigned char *p = data + i * 4;
    uint32_t k = (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
    k *= MURMUR2_M;
    k ^= k >> 24;
    k *= MURMUR2_M;
    h *= MURMUR2_M;
    h ^= k;
  }
  const unsigned char *tail = data + words * 4;
  switch (len & 3) {
  case 3:
    h ^= (uint32_t)tail[2] << 16;
    /* fall through */
  case 2:
    h ^= (uint32_t)tail[1] << 8;
    /* fall through */
  case 1:
    h ^= tail[0];
    h *= MURMUR2_M;
  }
  h ^= h >> 13;
  h *= MURMUR2_M;
  h ^= h >> 15;
  return h;
}

uint32_t wsg_kafka_murmur2(const void *key, size_t len) {
  return murmur2(key, len);
}

int wsg_kafka_murmur2_partition(const void *key, size_t len, int partitions) {
  if (partitions < 1)
    return -1;
  return (int)((murmur2(key, len) & 0x7fffffffu) % (uint32_t)partitions);
}
