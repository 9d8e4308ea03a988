/*
 * chaos-kafka: the two Kafka questions the reliability suite (tests/chaos) asks that neither
 * wsgate-admin nor kcat answers:
 *
 *   chaos-kafka -b HOST:PORT offsets -g GROUP -t TOPIC
 *       one line per partition: "<partition> <committed offset of GROUP> <end offset>"
 *       (committed -1: the group has committed nothing there yet). Read with rd_kafka_committed()
 *       from a handle that never joins the group, so asking does not disturb the processors.
 *   chaos-kafka -b HOST:PORT topic-config -t TOPIC KEY=VALUE...
 *       sets topic-level configuration (AlterConfigs; other non-default settings of the topic
 *       are reset, which is fine for the suite's own fresh topics), e.g. max.message.bytes for
 *       the 16 MiB messages of Autobahn's case 9.
 *
 * Exit status: 0 success, 1 failure (message on stderr), 2 usage error.
 *
 * Threads: main only (librdkafka runs its own).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "wsg_kafka.h"
#include "wsg_log.h"

#define TIMEOUT_MS 15000

static int usage(void) {
  fprintf(stderr, "usage: chaos-kafka -b HOST:PORT offsets -g GROUP -t TOPIC\n"
                  "       chaos-kafka -b HOST:PORT topic-config -t TOPIC KEY=VALUE...\n");
  return 2;
}

static rd_kafka_t *client(const char *brokers, wsg_kafka_role role, rd_kafka_type_t type,
                          const char *group) {
  char err[512];
  rd_kafka_conf_t *conf = wsg_kafka_conf_new(role, brokers, NULL, err, sizeof err);
  if (!conf) {
    fprintf(stderr, "chaos-kafka: %s\n", err);
    return NULL;
  }
  if (group && wsg_kafka_conf_set(conf, "group.id", group, err, sizeof err) != 0) {
    rd_kafka_conf_destroy(conf);
    fprintf(stderr, "chaos-kafka: %s\n", err);
    return NULL;
  }
  rd_kafka_t *rk = wsg_kafka_new(type, conf, err, sizeof err);
  if (!rk)
    fprintf(stderr, "chaos-kafka: %s\n", err);
  return rk;
}

static int cmd_offsets(const char *brokers, const char *group, const char *topic) {
  rd_kafka_t *rk = client(brokers, WSG_KAFKA_CONSUMER_GROUP, RD_KAFKA_CONSUMER, group);
  if (!rk)
    return 1;
  char err[512];
  int parts = wsg_kafka_topic_partitions(rk, topic, TIMEOUT_MS, err, sizeof err);
  if (parts < 0) {
    fprintf(stderr, "chaos-kafka: %s\n", err);
    rd_kafka_destroy(rk);
    return 1;
  }
  rd_kafka_topic_partition_list_t *list = rd_kafka_topic_partition_list_new(parts);
  for (int p = 0; p < parts; p++)
    rd_kafka_topic_partition_list_add(list, topic, p);
  int rc = 0;
  rd_kafka_resp_err_t e = rd_kafka_committed(rk, list, TIMEOUT_MS);
  if (e) {
    fprintf(stderr, "chaos-kafka: committed offsets of group %s: %s\n", group, rd_kafka_err2str(e));
    rc = 1;
  }
  for (int i = 0; rc == 0 && i < list->cnt; i++) {
    const rd_kafka_topic_partition_t *tp = &list->elems[i];
    int64_t lo = 0, hi = 0;
    e = rd_kafka_query_watermark_offsets(rk, topic, tp->partition, &lo, &hi, TIMEOUT_MS);
    if (e || tp->err) {
      fprintf(stderr, "chaos-kafka: %s [%d]: %s\n", topic, tp->partition,
              rd_kafka_err2str(e ? e : tp->err));
      rc = 1;
      break;
    }
    printf("%d %lld %lld\n", tp->partition, (long long)(tp->offset < 0 ? -1 : tp->offset),
           (long long)hi);
  }
  rd_kafka_topic_partition_list_destroy(list);
  rd_kafka_destroy(rk);
  return rc;
}

static int cmd_topic_config(const char *brokers, const char *topic, char **kv, int n) {
  rd_kafka_t *rk = client(brokers, WSG_KAFKA_ADMIN, RD_KAFKA_PRODUCER, NULL);
  if (!rk)
    return 1;
  rd_kafka_ConfigResource_t *res = rd_kafka_ConfigResource_new(RD_KAFKA_RESOURCE_TOPIC, topic);
  for (int i = 0; i < n; i++) {
    char *eq = strchr(kv[i], '=');
    if (!eq || eq == kv[i]) {
      fprintf(stderr, "chaos-kafka: '%s' is not KEY=VALUE\n", kv[i]);
      rd_kafka_ConfigResource_destroy(res);
      rd_kafka_destroy(rk);
      return 2;
    }
    *eq = '\0';
    rd_kafka_ConfigResource_set_config(res, kv[i], eq + 1);
    *eq = '=';
  }
  rd_kafka_queue_t *q = rd_kafka_queue_new(rk);
  rd_kafka_AdminOptions_t *opts = rd_kafka_AdminOptions_new(rk, RD_KAFKA_ADMIN_OP_ALTERCONFIGS);
  char errstr[256];
  rd_kafka_AdminOptions_set_request_timeout(opts, TIMEOUT_MS, errstr, sizeof errstr);
  rd_kafka_AlterConfigs(rk, &res, 1, opts, q);
  int rc = 1;
  rd_kafka_event_t *ev = rd_kafka_queue_poll(q, TIMEOUT_MS + 1000);
  if (!ev) {
    fprintf(stderr, "chaos-kafka: AlterConfigs on %s timed out\n", topic);
  } else if (rd_kafka_event_error(ev)) {
    fprintf(stderr, "chaos-kafka: AlterConfigs on %s: %s\n", topic,
            rd_kafka_event_error_string(ev));
  } else {
    size_t cnt = 0;
    const rd_kafka_ConfigResource_t **out =
        rd_kafka_AlterConfigs_result_resources(rd_kafka_event_AlterConfigs_result(ev), &cnt);
    rc = 0;
    for (size_t i = 0; i < cnt; i++) {
      if (rd_kafka_ConfigResource_error(out[i])) {
        fprintf(stderr, "chaos-kafka: AlterConfigs on %s: %s\n", topic,
                rd_kafka_ConfigResource_error_string(out[i]));
        rc = 1;
      }
    }
  }
  if (ev)
    rd_kafka_event_destroy(ev);
  rd_kafka_AdminOptions_destroy(opts);
  rd_kafka_ConfigResource_destroy(res);
  rd_kafka_queue_destroy(q);
  rd_kafka_destroy(rk);
  return rc;
}

int main(int argc, char **argv) {
  wsg_log_setup(WSG_LOG_WARN, false, "chaos-kafka");
  const char *brokers = NULL, *group = NULL, *topic = NULL;
  int i = 1;
  if (i + 1 < argc && strcmp(argv[i], "-b") == 0) {
    brokers = argv[i + 1];
    i += 2;
  }
  if (!brokers || i >= argc)
    return usage();
  const char *cmd = argv[i++];
  while (i + 1 < argc && argv[i][0] == '-') {
    if (strcmp(argv[i], "-g") == 0)
      group = argv[i + 1];
    else if (strcmp(argv[i], "-t") == 0)
      topic = argv[i + 1];
    else
      return usage();
    i += 2;
  }
  if (strcmp(cmd, "offsets") == 0 && group && topic && i == argc)
    return cmd_offsets(brokers, group, topic);
  if (strcmp(cmd, "topic-config") == 0 && topic && i < argc)
    return cmd_topic_config(brokers, topic, argv + i, argc - i);
  return usage();
}
