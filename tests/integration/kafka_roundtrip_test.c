/*
 * wsgate's Kafka settings against the real broker: 10,000 keyed messages through the gateway's
 * producer settings and back through a cooperative-sticky consumer group, per-key order, the
 * murmur2 partition of every key as the broker stored it, stored-offset commits, an assign-only
 * consumer, topic creation and its errors, and wsgate-admin.
 */
#include <criterion/criterion.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#include "harness.h"
#include "wsg_kafka.h"

#define KEYS       100
#define SEQS       100
#define TOTAL      (KEYS * SEQS)
#define PARTITIONS 6

typedef struct {
  int delivered;
  int errors;
  char first_error[256];
  int partition_of_key[KEYS]; /* as reported by the delivery reports; -1 until known */
  int wrong_partition;        /* reports whose partition is not murmur2's */
} delivery_state;

static int key_index(const void *key, size_t len) {
  int idx = -1;
  char buf[16];
  if (len >= sizeof(buf))
    return -1;
  memcpy(buf, key, len);
  buf[len] = '\0';
  if (sscanf(buf, "user-%d", &idx) != 1 || idx < 0 || idx >= KEYS)
    return -1;
  return idx;
}

static void on_delivery(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque) {
  delivery_state *st = opaque;
  if (m->err) {
    if (st->errors++ == 0)
      snprintf(st->first_error, sizeof(st->first_error), "%s", rd_kafka_err2str(m->err));
    return;
  }
  st->delivered++;
  int k = key_index(m->key, m->key_len);
  if (k < 0) {
    st->errors++;
    return;
  }
  if (m->partition != wsg_kafka_murmur2_partition(m->key, m->key_len, PARTITIONS))
    st->wrong_partition++;
  st->partition_of_key[k] = m->partition;
}

/* Produces TOTAL messages, key user-<k>, value "<k>:<seq>", seq ascending per key. */
static void produce_all(const char *topic, delivery_state *st) {
  for (int k = 0; k < KEYS; k++)
    st->partition_of_key[k] = -1;
  rd_kafka_conf_t *conf = itest_kafka_conf(WSG_KAFKA_PRODUCER, NULL);
  rd_kafka_conf_set_dr_msg_cb(conf, on_delivery);
  rd_kafka_conf_set_opaque(conf, st);
  char err[512];
  rd_kafka_t *rk = wsg_kafka_new(RD_KAFKA_PRODUCER, conf, err, sizeof(err));
  cr_assert(rk, "%s", err);

  uint64_t deadline = itest_now_ms() + 60000;
  /* Interleave keys so every partition receives a mixed stream, as from many users at once. */
  for (int seq = 0; seq < SEQS; seq++) {
    for (int k = 0; k < KEYS; k++) {
      char key[16], value[32];
      int klen = snprintf(key, sizeof(key), "user-%03d", k);
      int vlen = snprintf(value, sizeof(value), "%d:%d", k, seq);
      rd_kafka_resp_err_t e;
      while ((e = rd_kafka_producev(rk, RD_KAFKA_V_TOPIC(topic), RD_KAFKA_V_KEY(key, (size_t)klen),
                                    RD_KAFKA_V_VALUE(value, (size_t)vlen),
                                    RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_END)) ==
             RD_KAFKA_RESP_ERR__QUEUE_FULL) {
        cr_assert(itest_now_ms() < deadline, "local queue stayed full for 60 s");
        rd_kafka_poll(rk, 10);
      }
      cr_assert_eq(e, RD_KAFKA_RESP_ERR_NO_ERROR, "produce: %s", rd_kafka_err2str(e));
      rd_kafka_poll(rk, 0);
    }
  }
  rd_kafka_resp_err_t fe = rd_kafka_flush(rk, 60000);
  char fatal[256] = "";
  rd_kafka_resp_err_t fatal_err = rd_kafka_fatal_error(rk, fatal, sizeof(fatal));
  rd_kafka_destroy(rk);
  cr_assert_eq(fe, RD_KAFKA_RESP_ERR_NO_ERROR, "flush: %s", rd_kafka_err2str(fe));
  cr_assert_eq(fatal_err, RD_KAFKA_RESP_ERR_NO_ERROR, "idempotent producer fatal error: %s", fatal);
}

Test(kafka_roundtrip, ten_thousand_keyed_messages_in_order, .timeout = 240) {
  itest_require_kafka();
  char *topic = itest_unique("itest-roundtrip");
  itest_topic_create(topic, PARTITIONS);

  delivery_state st = {0};
  produce_all(topic, &st);
  cr_assert_eq(st.errors, 0, "%d delivery errors, first: %s", st.errors, st.first_error);
  cr_assert_eq(st.delivered, TOTAL);
  cr_assert_eq(st.wrong_partition, 0,
               "%d messages landed on another partition than murmur2 computes", st.wrong_partition);

  rd_kafka_t *rk = itest_kafka_client(WSG_KAFKA_CONSUMER_GROUP, NULL);
  rd_kafka_topic_partition_list_t *sub = rd_kafka_topic_partition_list_new(1);
  rd_kafka_topic_partition_list_add(sub, topic, RD_KAFKA_PARTITION_UA);
  cr_assert_eq(rd_kafka_subscribe(rk, sub), RD_KAFKA_RESP_ERR_NO_ERROR);
  rd_kafka_topic_partition_list_destroy(sub);

  int next_seq[KEYS] = {0};
  int64_t last_offset[PARTITIONS];
  for (int p = 0; p < PARTITIONS; p++)
    last_offset[p] = -1;
  int received = 0, out_of_order = 0, wrong_partition = 0, bad = 0;
  uint64_t deadline = itest_now_ms() + 90000;
  while (received < TOTAL && itest_now_ms() < deadline) {
    rd_kafka_message_t *m = rd_kafka_consumer_poll(rk, 200);
    if (!m)
      continue;
    if (m->err) {
      /* Not an error of the data: e.g. end of partition if enabled. Anything else fails. */
      cr_assert_eq(m->err, RD_KAFKA_RESP_ERR__PARTITION_EOF, "consume: %s",
                   rd_kafka_message_errstr(m));
      rd_kafka_message_destroy(m);
      continue;
    }
    int k = key_index(m->key, m->key_len), vk = -1, seq = -1;
    char value[32] = "";
    if (m->len < sizeof(value))
      memcpy(value, m->payload, m->len);
    if (k < 0 || sscanf(value, "%d:%d", &vk, &seq) != 2 || vk != k) {
      bad++;
    } else {
      if (seq != next_seq[k])
        out_of_order++;
      next_seq[k] = seq + 1;
      if (m->partition != st.partition_of_key[k] ||
          m->partition != wsg_kafka_murmur2_partition(m->key, m->key_len, PARTITIONS))
        wrong_partition++;
    }
    if (m->partition >= 0 && m->partition < PARTITIONS)
      last_offset[m->partition] = m->offset;
    /* The group runs with enable.auto.offset.store=false: nothing is committed until stored. */
    cr_assert_eq(rd_kafka_offset_store(m->rkt, m->partition, m->offset),
                 RD_KAFKA_RESP_ERR_NO_ERROR);
    received++;
    rd_kafka_message_destroy(m);
  }
  cr_expect_eq(received, TOTAL, "received %d of %d within 90 s", received, TOTAL);
  cr_expect_eq(bad, 0, "%d malformed messages", bad);
  cr_expect_eq(out_of_order, 0, "%d messages out of per-key order", out_of_order);
  cr_expect_eq(wrong_partition, 0, "%d messages on an unexpected partition", wrong_partition);
  for (int k = 0; k < KEYS; k++)
    cr_expect_eq(next_seq[k], SEQS, "key user-%03d: last seq %d", k, next_seq[k] - 1);

  /* Nothing more arrives: no duplicates beyond TOTAL. */
  rd_kafka_message_t *extra = rd_kafka_consumer_poll(rk, 500);
  cr_expect_null(extra, "a message beyond the %d produced", TOTAL);
  if (extra)
    rd_kafka_message_destroy(extra);

  /* Commit what was stored and read it back: stored offset + 1 on every partition. */
  cr_expect_eq(rd_kafka_commit(rk, NULL, 0), RD_KAFKA_RESP_ERR_NO_ERROR);
  rd_kafka_topic_partition_list_t *parts = rd_kafka_topic_partition_list_new(PARTITIONS);
  for (int p = 0; p < PARTITIONS; p++)
    rd_kafka_topic_partition_list_add(parts, topic, p);
  cr_assert_eq(rd_kafka_committed(rk, parts, 10000), RD_KAFKA_RESP_ERR_NO_ERROR);
  for (int i = 0; i < parts->cnt; i++) {
    int p = parts->elems[i].partition;
    cr_expect_eq(parts->elems[i].offset, last_offset[p] + 1, "partition %d committed %lld", p,
                 (long long)parts->elems[i].offset);
  }
  rd_kafka_topic_partition_list_destroy(parts);

  rd_kafka_consumer_close(rk);
  rd_kafka_destroy(rk);
  free(topic);
}

typedef struct {
  bool assigned;  /* eos.idemp_state was "Assigned" in some statistics report */
  char state[64]; /* the last idemp_state seen */
} idemp_stats;

/* The value of "name" in a flat JSON object: the text after the colon and any blanks. */
static const char *json_value(const char *json, const char *name) {
  char quoted[64];
  snprintf(quoted, sizeof(quoted), "\"%s\"", name);
  const char *p = strstr(json, quoted);
  if (!p)
    return NULL;
  p += strlen(quoted);
  p += strspn(p, " \t");
  if (*p != ':')
    return NULL;
  return p + 1 + strspn(p + 1, " \t");
}

static int on_stats(rd_kafka_t *rk, char *json, size_t len, void *opaque) {
  idemp_stats *st = opaque;
  /* librdkafka's statistics: "eos": { "idemp_state": "Assigned", ..., "producer_id": 4, ... } */
  const char *state = json_value(json, "idemp_state");
  const char *pid = json_value(json, "producer_id");
  if (state && *state == '"') {
    snprintf(st->state, sizeof(st->state), "%.*s", (int)strcspn(state + 1, "\""), state + 1);
    if (strcmp(st->state, "Assigned") == 0 && pid && atoll(pid) >= 0)
      st->assigned = true;
  }
  return 0; /* librdkafka frees json */
}

/* The reason the broker is pinned to 3.9: Debian's librdkafka must get a producer id from it, or
 * the idempotent producer would be off. librdkafka's statistics say which. */
Test(kafka_roundtrip, idempotent_producer_gets_a_producer_id, .timeout = 120) {
  itest_require_kafka();
  char *topic = itest_unique("itest-idemp");
  itest_topic_create(topic, 1);
  const char *const stats_every_100ms[] = {"statistics.interval.ms", "100", NULL};
  rd_kafka_conf_t *conf = itest_kafka_conf(WSG_KAFKA_PRODUCER, stats_every_100ms);
  idemp_stats st = {0};
  rd_kafka_conf_set_stats_cb(conf, on_stats);
  rd_kafka_conf_set_opaque(conf, &st);
  char err[512];
  rd_kafka_t *rk = wsg_kafka_new(RD_KAFKA_PRODUCER, conf, err, sizeof(err));
  cr_assert(rk, "%s", err);
  cr_assert_eq(rd_kafka_producev(rk, RD_KAFKA_V_TOPIC(topic), RD_KAFKA_V_KEY("k", 1),
                                 RD_KAFKA_V_VALUE("v", 1), RD_KAFKA_V_END),
               RD_KAFKA_RESP_ERR_NO_ERROR);
  cr_expect_eq(rd_kafka_flush(rk, 30000), RD_KAFKA_RESP_ERR_NO_ERROR);
  uint64_t deadline = itest_now_ms() + 30000;
  while (!st.assigned && itest_now_ms() < deadline)
    rd_kafka_poll(rk, 100);
  rd_kafka_destroy(rk);
  cr_expect(st.assigned, "no producer id within 30 s (last idemp_state '%s')", st.state);
  free(topic);
}

/* The gateway's outbound consumer: assign() at the end of one partition, no group, no commits. */
Test(kafka_roundtrip, assign_only_consumer_reads_from_the_end, .timeout = 120) {
  itest_require_kafka();
  char *topic = itest_unique("itest-assign");
  itest_topic_create(topic, 2);

  rd_kafka_t *prod = itest_kafka_client(WSG_KAFKA_PRODUCER, NULL);
  cr_assert_eq(rd_kafka_producev(prod, RD_KAFKA_V_TOPIC(topic), RD_KAFKA_V_PARTITION(1),
                                 RD_KAFKA_V_VALUE("old", 3), RD_KAFKA_V_END),
               RD_KAFKA_RESP_ERR_NO_ERROR);
  cr_assert_eq(rd_kafka_flush(prod, 30000), RD_KAFKA_RESP_ERR_NO_ERROR);

  rd_kafka_t *cons = itest_kafka_client(WSG_KAFKA_CONSUMER_ASSIGN, NULL);
  rd_kafka_topic_partition_list_t *parts = rd_kafka_topic_partition_list_new(1);
  rd_kafka_topic_partition_list_add(parts, topic, 1)->offset = RD_KAFKA_OFFSET_END;
  cr_assert_eq(rd_kafka_assign(cons, parts), RD_KAFKA_RESP_ERR_NO_ERROR);
  rd_kafka_topic_partition_list_destroy(parts);

  /* "Assigned" is not "positioned": keep producing fresh messages until one arrives, then check
   * that the old one never did. */
  bool got_new = false, got_old = false;
  uint64_t deadline = itest_now_ms() + 60000;
  uint64_t next_send = 0;
  while (!got_new && itest_now_ms() < deadline) {
    if (itest_now_ms() >= next_send) {
      cr_assert_eq(rd_kafka_producev(prod, RD_KAFKA_V_TOPIC(topic), RD_KAFKA_V_PARTITION(1),
                                     RD_KAFKA_V_VALUE("new", 3), RD_KAFKA_V_END),
                   RD_KAFKA_RESP_ERR_NO_ERROR);
      rd_kafka_flush(prod, 10000);
      next_send = itest_now_ms() + 1000;
    }
    rd_kafka_message_t *m = rd_kafka_consumer_poll(cons, 100);
    if (!m)
      continue;
    if (!m->err && m->len == 3) {
      got_new |= memcmp(m->payload, "new", 3) == 0;
      got_old |= memcmp(m->payload, "old", 3) == 0;
    }
    rd_kafka_message_destroy(m);
  }
  cr_expect(got_new, "no message arrived on the assigned partition within 60 s");
  cr_expect_not(got_old, "a message from before the assignment arrived");

  rd_kafka_consumer_close(cons);
  rd_kafka_destroy(cons);
  rd_kafka_destroy(prod);
  free(topic);
}

Test(kafka_roundtrip, topic_ensure_checks_partition_counts, .timeout = 120) {
  itest_require_kafka();
  char *topic = itest_unique("itest-ensure");
  rd_kafka_t *rk = itest_kafka_client(WSG_KAFKA_ADMIN, NULL);
  char err[512] = "";

  cr_assert_eq(wsg_kafka_topic_ensure(rk, topic, 3, 1, 30000, err, sizeof(err)), 0, "%s", err);
  cr_expect_eq(wsg_kafka_topic_partitions(rk, topic, 10000, err, sizeof(err)), 3, "%s", err);
  /* Idempotent: the topic exists with the right count. */
  cr_expect_eq(wsg_kafka_topic_ensure(rk, topic, 3, 1, 30000, err, sizeof(err)), 0, "%s", err);
  /* A different count is an error that names both numbers. */
  cr_expect_eq(wsg_kafka_topic_ensure(rk, topic, 5, 1, 30000, err, sizeof(err)), -1);
  cr_expect(strstr(err, "has 3 partitions, 5 configured"), "message: %s", err);
  /* More replicas than brokers: the broker's reason reaches the caller. */
  char *other = itest_unique("itest-rf");
  cr_expect_eq(wsg_kafka_topic_ensure(rk, other, 1, 3, 30000, err, sizeof(err)), -1);
  cr_expect(strstr(err, "INVALID_REPLICATION_FACTOR"), "message: %s", err);
  cr_expect_eq(wsg_kafka_topic_partitions(rk, other, 10000, err, sizeof(err)), -1);
  cr_expect(strstr(err, "does not exist"), "message: %s", err);

  rd_kafka_destroy(rk);
  free(other);
  free(topic);
}

/* Runs wsgate-admin with `args` and extra environment `env` (NULL-terminated, may be NULL),
 * returns its exit status; its output is in `log`. */
static int run_admin_env(const char *const *args, const char *const *env, const char *log) {
  const char *argv[16] = {itest_bin("WSGATE_ADMIN_BIN")};
  size_t n = 1;
  for (; args[n - 1] && n < 15; n++)
    argv[n] = args[n - 1];
  argv[n] = NULL;
  pid_t pid = itest_spawn(argv, env, log);
  int status = 0;
  cr_assert_eq(itest_stop(pid, 0, 60000, &status), 0, "wsgate-admin did not exit within 60 s");
  cr_assert(WIFEXITED(status), "wsgate-admin died of signal %d", WTERMSIG(status));
  return WEXITSTATUS(status);
}

static int run_admin(const char *const *args, const char *log) {
  return run_admin_env(args, NULL, log);
}

Test(kafka_roundtrip, admin_tool_ensures_and_maps_keys, .timeout = 120) {
  itest_require_kafka();
  char *topic = itest_unique("itest-admin");
  char *log = itest_log_path("kafka_roundtrip-admin.log");
  const char *brokers = itest_kafka_bootstrap();
  char out[4096];

  const char *ensure[] = {"topics", "ensure",       "--brokers", brokers, "--topic",
                          topic,    "--partitions", "4",         NULL};
  cr_assert_eq(run_admin(ensure, log), 0);

  /* partition --topic asks the broker for the count; the answer is murmur2's. */
  const char *part[] = {"partition", "--brokers", brokers, "--topic", topic, "alice", NULL};
  cr_assert_eq(run_admin(part, log), 0);
  itest_read_file(log, out, sizeof(out));
  char want[16];
  snprintf(want, sizeof(want), "%d\n", wsg_kafka_murmur2_partition("alice", 5, 4));
  cr_expect_str_eq(out, want);

  const char *mismatch[] = {"topics", "ensure",       "--brokers", brokers, "--topic",
                            topic,    "--partitions", "2",         NULL};
  cr_expect_eq(run_admin(mismatch, log), 1);
  itest_read_file(log, out, sizeof(out));
  cr_expect(strstr(out, "has 4 partitions, 2 configured"), "output: %s", out);

  const char *usage[] = {"topics", "ensure", "--topic", topic, NULL};
  cr_expect_eq(run_admin(usage, log), 2);

  /* WSGATE_KAFKA_PROPS reaches librdkafka as the daemons' does (a bad value is refused by
   * name), -X wins over it per key, and a malformed list is a usage error naming it. */
  const char *describe[] = {"topics", "describe", "--brokers", brokers, "--topic", topic, NULL};
  const char *bad_env[] = {"WSGATE_KAFKA_PROPS=client.id=admin-itest;security.protocol=bogus",
                           NULL};
  cr_expect_eq(run_admin_env(describe, bad_env, log), 1);
  itest_read_file(log, out, sizeof(out));
  cr_expect(strstr(out, "security.protocol"), "output: %s", out);
  const char *describe_x[] = {"topics",  "describe", "--brokers", brokers,
                              "--topic", topic,      "-X",        "security.protocol=plaintext",
                              NULL};
  cr_expect_eq(run_admin_env(describe_x, bad_env, log), 0);
  itest_read_file(log, out, sizeof(out));
  cr_expect(strstr(out, "partitions=4"), "output: %s", out);
  const char *malformed_env[] = {"WSGATE_KAFKA_PROPS=client.id", NULL};
  cr_expect_eq(run_admin_env(describe, malformed_env, log), 2);
  itest_read_file(log, out, sizeof(out));
  cr_expect(strstr(out, "WSGATE_KAFKA_PROPS"), "output: %s", out);

  free(log);
  free(topic);
}
