/*
 * wsg_kbatch: partitions agree with the Java client's murmur2 (wsg_kafka_murmur2_partition), one
 * FIFO per partition released in order and in one produce_batch, refusals reported, the
 * partitioners it cannot hash refused. A producer with no reachable broker: produce_batch only
 * enqueues locally, which is what is checked (the order on the wire is the integration test's).
 */
#include <criterion/criterion.h>
#include <string.h>

#include "wsg_kafka.h"
#include "wsg_kbatch.h"

static rd_kafka_t *rk;
static rd_kafka_topic_t *rkt;

static void setup_producer(const char *max_messages) {
  char err[256];
  rd_kafka_conf_t *conf = rd_kafka_conf_new();
  cr_assert_eq(rd_kafka_conf_set(conf, "bootstrap.servers", "127.0.0.1:1", err, sizeof err),
               RD_KAFKA_CONF_OK);
  cr_assert_eq(rd_kafka_conf_set(conf, "log_level", "0", err, sizeof err), RD_KAFKA_CONF_OK);
  cr_assert_eq(
      rd_kafka_conf_set(conf, "queue.buffering.max.messages", max_messages, err, sizeof err),
      RD_KAFKA_CONF_OK);
  rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, err, sizeof err);
  cr_assert(rk, "%s", err);
  rkt = rd_kafka_topic_new(rk, "kbatch-unit", NULL);
  cr_assert(rkt);
}

static void teardown(void) {
  if (rkt)
    rd_kafka_topic_destroy(rkt);
  if (rk) {
    rd_kafka_purge(rk, RD_KAFKA_PURGE_F_QUEUE | RD_KAFKA_PURGE_F_INFLIGHT);
    rd_kafka_destroy(rk);
  }
  rk = NULL;
  rkt = NULL;
}

TestSuite(wsg_kbatch, .fini = teardown, .timeout = 30);

Test(wsg_kbatch, partitions_match_murmur2_and_refuse_random) {
  setup_producer("1000");
  char err[128];
  wsg_kbatch *b = wsg_kbatch_create(rkt, "murmur2_random", 8, err, sizeof err);
  cr_assert(b, "%s", err);
  const char *keys[] = {"alice", "bob", "carol", "u-123456", ""};
  for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++)
    cr_assert_eq(wsg_kbatch_partition(b, keys[i], strlen(keys[i])),
                 wsg_kafka_murmur2_partition(keys[i], strlen(keys[i]), 8), "key \"%s\"", keys[i]);
  wsg_kbatch_destroy(b);

  cr_assert(wsg_kbatch_partitioner_known(NULL));
  cr_assert(wsg_kbatch_partitioner_known("fnv1a"));
  cr_assert_not(wsg_kbatch_partitioner_known("random"));
  cr_assert_null(wsg_kbatch_create(rkt, "random", 8, err, sizeof err));
  cr_assert(strstr(err, "random"), "%s", err);
  cr_assert_null(wsg_kbatch_create(rkt, NULL, 0, err, sizeof err));
}

Test(wsg_kbatch, releases_one_partition_in_order_up_to_max) {
  setup_producer("1000");
  char err[128];
  wsg_kbatch *b = wsg_kbatch_create(rkt, "murmur2", 4, err, sizeof err);
  cr_assert(b, "%s", err);
  cr_assert_eq(wsg_kbatch_hold(b, 4, "k", 1, "x", 1, NULL), -1, "partition out of range");
  char v[16];
  for (int i = 0; i < 10; i++) {
    snprintf(v, sizeof v, "v%d", i);
    cr_assert_eq(wsg_kbatch_hold(b, i % 2, "key", 3, v, strlen(v), (void *)(uintptr_t)(i + 1)), 0);
  }
  cr_assert_eq(wsg_kbatch_held(b), 10);
  cr_assert_eq(wsg_kbatch_held_in(b, 0), 5);
  cr_assert_eq(wsg_kbatch_held_in(b, 1), 5);
  cr_assert_eq(wsg_kbatch_held_in(b, 2), 0);

  size_t accepted = 99;
  cr_assert_eq(wsg_kbatch_release(b, 0, 3, NULL, NULL, &accepted), 3);
  cr_assert_eq(accepted, 3);
  cr_assert_eq(wsg_kbatch_held_in(b, 0), 2);
  /* outq_len counts librdkafka's events too (e.g. "all brokers down"): at least */
  cr_assert_geq(rd_kafka_outq_len(rk), 3);
  cr_assert_eq(wsg_kbatch_release(b, 0, 100, NULL, NULL, &accepted), 2);
  cr_assert_eq(wsg_kbatch_release(b, 0, 100, NULL, NULL, &accepted), 0, "partition 0 is empty");
  cr_assert_eq(accepted, 0);
  cr_assert_eq(wsg_kbatch_held(b), 5);
  cr_assert_geq(rd_kafka_outq_len(rk), 5);
  cr_assert_eq(wsg_kbatch_destroy(b), 5, "the unreleased ones are dropped and counted");
}

static size_t nfailed;
static uintptr_t failed_ids[8];
static void on_failed(void *arg, void *opaque, const void *key, size_t keylen, const void *value,
                      size_t len, rd_kafka_resp_err_t err) {
  (void)arg;
  cr_assert_eq(err, RD_KAFKA_RESP_ERR__QUEUE_FULL);
  cr_assert(keylen == 3 && memcmp(key, "key", 3) == 0 && len == 1 && memcmp(value, "x", 1) == 0,
            "the refused record is passed back whole");
  if (nfailed < 8)
    failed_ids[nfailed] = (uintptr_t)opaque;
  nfailed++;
}

Test(wsg_kbatch, refusals_are_reported_per_record) {
  setup_producer("3"); /* librdkafka takes three, refuses the rest */
  char err[128];
  wsg_kbatch *b = wsg_kbatch_create(rkt, NULL, 2, err, sizeof err);
  cr_assert(b, "%s", err);
  for (uintptr_t i = 1; i <= 5; i++)
    cr_assert_eq(wsg_kbatch_hold(b, 1, "key", 3, "x", 1, (void *)i), 0);
  size_t accepted = 0;
  cr_assert_eq(wsg_kbatch_release(b, 1, 100, on_failed, NULL, &accepted), 5);
  cr_assert_eq(accepted, 3);
  cr_assert_eq(nfailed, 2);
  cr_assert_eq(failed_ids[0], 4, "the refused ones are the last: librdkafka keeps the order");
  cr_assert_eq(failed_ids[1], 5);
  cr_assert_eq(wsg_kbatch_held(b), 0);
  wsg_kbatch_destroy(b);
}
