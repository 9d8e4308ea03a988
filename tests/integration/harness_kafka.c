/*
 * harness_kafka: records on a test cluster's topics (see harness_kafka.h).
 *
 * Threads: the test's own thread.
 */
#include "harness_kafka.h"

#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "wsg_kafka.h"

/* --- reading ------------------------------------------------------------------------------- */

void itest_reader_open(itest_reader *r, const char *topic, int partitions) {
  memset(r, 0, sizeof(*r));
  r->rk = itest_kafka_client(WSG_KAFKA_CONSUMER_ASSIGN, NULL);
  rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(partitions);
  for (int p = 0; p < partitions; p++)
    rd_kafka_topic_partition_list_add(l, topic, p)->offset = RD_KAFKA_OFFSET_BEGINNING;
  rd_kafka_resp_err_t e = rd_kafka_assign(r->rk, l);
  rd_kafka_topic_partition_list_destroy(l);
  cr_assert_eq(e, RD_KAFKA_RESP_ERR_NO_ERROR, "assign: %s", rd_kafka_err2str(e));
}

void itest_reader_close(itest_reader *r) {
  if (r->last)
    rd_kafka_message_destroy(r->last);
  r->last = NULL;
  if (r->rk) {
    rd_kafka_consumer_close(r->rk);
    rd_kafka_destroy(r->rk);
  }
  r->rk = NULL;
}

rd_kafka_message_t *itest_reader_next(itest_reader *r, int timeout_ms) {
  uint64_t deadline = itest_now_ms() + (uint64_t)timeout_ms;
  for (;;) {
    uint64_t now = itest_now_ms();
    if (now >= deadline)
      return NULL;
    rd_kafka_message_t *m = rd_kafka_consumer_poll(r->rk, (int)(deadline - now));
    if (!m)
      return NULL;
    if (m->err == RD_KAFKA_RESP_ERR_NO_ERROR)
      return m;
    rd_kafka_message_destroy(m); /* partition EOF and transient errors */
  }
}

bool itest_reader_next_envelope(itest_reader *r, wsg_envelope *env, int timeout_ms,
                                int32_t *partition) {
  uint64_t deadline = itest_now_ms() + (uint64_t)timeout_ms;
  for (;;) {
    uint64_t now = itest_now_ms();
    if (now >= deadline)
      return false;
    rd_kafka_message_t *m = rd_kafka_consumer_poll(r->rk, (int)(deadline - now));
    if (!m)
      continue;
    if (m->err) {
      rd_kafka_message_destroy(m);
      continue;
    }
    if (r->last)
      rd_kafka_message_destroy(r->last);
    r->last = m;
    const char *field = NULL;
    int rc = wsg_envelope_decode(env, m->payload, m->len, &field);
    cr_assert_eq(rc, WSG_ENV_OK, "inbound record does not decode: %s (field %s)",
                 wsg_env_strerror(rc), field ? field : "");
    /* An outbound record has neither key nor user: memcmp(NULL, NULL, 0) is undefined. */
    cr_assert(m->key_len == env->user_len &&
                  (env->user_len == 0 || memcmp(m->key, env->user, env->user_len) == 0),
              "record's key is not its user id");
    if (partition)
      *partition = m->partition;
    return true;
  }
}

void itest_reader_expect(itest_reader *r, wsg_env_kind kind, const char *user, wsg_envelope *env,
                         int timeout_ms) {
  uint64_t deadline = itest_now_ms() + (uint64_t)timeout_ms;
  for (;;) {
    uint64_t now = itest_now_ms();
    cr_assert(now < deadline, "no %s envelope for %s on the inbound topic within %d ms",
              wsg_env_kind_name(kind), user, timeout_ms);
    if (!itest_reader_next_envelope(r, env, (int)(deadline - now), NULL))
      continue;
    if (env->kind == kind && env->user_len == strlen(user) &&
        memcmp(env->user, user, env->user_len) == 0)
      return;
  }
}

rd_kafka_t *itest_producer(void) {
  return itest_kafka_client(WSG_KAFKA_PRODUCER, NULL);
}

void itest_produce_raw(rd_kafka_t *p, const char *topic, const void *key, size_t key_len,
                       const void *value, size_t len) {
  for (;;) {
    rd_kafka_resp_err_t e = rd_kafka_producev(
        p, RD_KAFKA_V_TOPIC(topic), RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
        RD_KAFKA_V_KEY((void *)key, key_len), RD_KAFKA_V_VALUE((void *)value, len), RD_KAFKA_V_END);
    if (e == RD_KAFKA_RESP_ERR__QUEUE_FULL) {
      rd_kafka_poll(p, 10);
      continue;
    }
    cr_assert_eq(e, RD_KAFKA_RESP_ERR_NO_ERROR, "produce: %s", rd_kafka_err2str(e));
    return;
  }
}

void itest_produce(rd_kafka_t *p, const itest_cluster *c, const wsg_envelope *env) {
  wsg_buf b;
  wsg_buf_init(&b, 0);
  int rc = wsg_envelope_encode(env, &b);
  cr_assert_eq(rc, WSG_ENV_OK, "encode: %s", wsg_env_strerror(rc));
  itest_produce_raw(p, c->in_topic, env->user, env->user_len, b.data, b.len);
  wsg_buf_finish(&b);
}

void itest_flush(rd_kafka_t *p) {
  rd_kafka_resp_err_t e = rd_kafka_flush(p, ITEST_TIMEOUT_MS);
  cr_assert_eq(e, RD_KAFKA_RESP_ERR_NO_ERROR, "flush: %s", rd_kafka_err2str(e));
}

wsg_envelope itest_msg(const char *user, uint64_t conn, const char *gw, uint32_t slot,
                       const void *data, size_t len, bool binary) {
  return (wsg_envelope){
      .kind = WSG_ENV_MSG,
      .fields = WSG_F_USER | WSG_F_CONN | WSG_F_GATEWAY | WSG_F_SLOT | WSG_F_TS | WSG_F_DATA |
                WSG_F_BINARY,
      .user = user,
      .user_len = strlen(user),
      .conn = conn,
      .gateway = gw,
      .gateway_len = strlen(gw),
      .slot = slot,
      .ts_us = 1700000000000000ULL,
      .data = data,
      .data_len = len,
      .binary = binary,
  };
}

int64_t itest_uncommitted(const itest_cluster *c) {
  const char *over[] = {"group.id", c->group, NULL};
  rd_kafka_t *rk = itest_kafka_client(WSG_KAFKA_CONSUMER_GROUP, over);
  rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(c->in_partitions);
  for (int p = 0; p < c->in_partitions; p++)
    rd_kafka_topic_partition_list_add(l, c->in_topic, p);
  rd_kafka_resp_err_t e = rd_kafka_committed(rk, l, 10000);
  cr_assert_eq(e, RD_KAFKA_RESP_ERR_NO_ERROR, "committed: %s", rd_kafka_err2str(e));
  int64_t total = 0;
  for (int i = 0; i < l->cnt; i++) {
    int64_t lo = 0, hi = 0;
    e = rd_kafka_query_watermark_offsets(rk, c->in_topic, l->elems[i].partition, &lo, &hi, 10000);
    cr_assert_eq(e, RD_KAFKA_RESP_ERR_NO_ERROR, "watermarks: %s", rd_kafka_err2str(e));
    int64_t committed = l->elems[i].offset;
    if (committed < 0) {
      if (hi > lo) {
        total = -1;
        break;
      }
      continue;
    }
    total += hi - committed;
  }
  rd_kafka_topic_partition_list_destroy(l);
  rd_kafka_destroy(rk);
  return total;
}

/* --- a gateway's outbound topic ------------------------------------------------------------ */

void itest_send_outbound(const itest_gateway *g, int32_t slot, const wsg_envelope *env) {
  wsg_buf b;
  wsg_buf_init(&b, 0);
  int rc = wsg_envelope_encode(env, &b);
  cr_assert_eq(rc, WSG_ENV_OK, "encode: %s", wsg_env_strerror(rc));
  rd_kafka_t *rk = itest_kafka_client(WSG_KAFKA_PRODUCER, NULL);
  rd_kafka_resp_err_t e = rd_kafka_producev(
      rk, RD_KAFKA_V_TOPIC(g->cluster.out_topic), RD_KAFKA_V_PARTITION(slot),
      RD_KAFKA_V_VALUE(b.data, b.len), RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_END);
  cr_assert_eq(e, RD_KAFKA_RESP_ERR_NO_ERROR, "produce: %s", rd_kafka_err2str(e));
  e = rd_kafka_flush(rk, 15000);
  cr_assert_eq(e, RD_KAFKA_RESP_ERR_NO_ERROR, "flush: %s", rd_kafka_err2str(e));
  rd_kafka_destroy(rk);
  wsg_buf_finish(&b);
}

void itest_deliver(const itest_gateway *g, int32_t slot, const char *gw_id, uint64_t conn,
                   const char *data) {
  wsg_envelope e = {0};
  e.kind = WSG_ENV_DELIVER;
  e.version = WSG_ENVELOPE_VERSION;
  e.fields = WSG_F_GATEWAY | WSG_F_CONN | WSG_F_DATA | WSG_F_SLOT;
  e.gateway = gw_id ? gw_id : g->id;
  e.gateway_len = strlen(e.gateway);
  e.slot = (uint32_t)slot;
  e.conn = conn;
  e.data = (const uint8_t *)data;
  e.data_len = strlen(data);
  itest_send_outbound(g, slot, &e);
}

void itest_send_close(const itest_gateway *g, int32_t slot, uint64_t conn, int code,
                      const char *reason) {
  wsg_envelope e = {0};
  e.kind = WSG_ENV_CLOSE;
  e.version = WSG_ENVELOPE_VERSION;
  e.fields = WSG_F_GATEWAY | WSG_F_CONN;
  e.gateway = g->id;
  e.gateway_len = strlen(g->id);
  e.conn = conn;
  if (code) {
    e.fields |= WSG_F_CLOSE_CODE;
    e.close_code = (uint16_t)code;
  }
  if (reason) {
    e.fields |= WSG_F_CLOSE_REASON;
    e.close_reason = reason;
    e.close_reason_len = strlen(reason);
  }
  itest_send_outbound(g, slot, &e);
}

void itest_outbound_produce(rd_kafka_t *rk, const itest_gateway *g, int32_t slot, const void *value,
                            size_t len) {
  rd_kafka_resp_err_t err;
  while ((err = rd_kafka_producev(rk, RD_KAFKA_V_TOPIC(g->cluster.out_topic),
                                  RD_KAFKA_V_PARTITION(slot), RD_KAFKA_V_VALUE((void *)value, len),
                                  RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_END)) ==
         RD_KAFKA_RESP_ERR__QUEUE_FULL)
    rd_kafka_poll(rk, 10);
  cr_assert_eq(err, RD_KAFKA_RESP_ERR_NO_ERROR, "produce: %s", rd_kafka_err2str(err));
}

static void deliver_n(const itest_gateway *g, int32_t slot, uint64_t conn, size_t size, int count,
                      bool numbered) {
  uint8_t *payload = malloc(size);
  cr_assert(payload);
  memset(payload, 'z', size);
  wsg_envelope e = {0};
  e.kind = WSG_ENV_DELIVER;
  e.version = WSG_ENVELOPE_VERSION;
  e.fields = WSG_F_GATEWAY | WSG_F_CONN | WSG_F_DATA | WSG_F_BINARY;
  e.gateway = g->id;
  e.gateway_len = strlen(g->id);
  e.conn = conn;
  e.data = payload;
  e.data_len = size;
  e.binary = true;
  wsg_buf b;
  wsg_buf_init(&b, 0);
  int rc = wsg_envelope_encode(&e, &b);
  cr_assert_eq(rc, WSG_ENV_OK, "encode: %s", wsg_env_strerror(rc));
  rd_kafka_t *rk = itest_kafka_client(WSG_KAFKA_PRODUCER, NULL);
  for (int i = 0; i < count; i++) {
    if (numbered) {
      char num[16];
      snprintf(num, sizeof num, "%08d", i % 100000000);
      memcpy(payload, num, 8);
      rc = wsg_envelope_encode(&e, &b);
      cr_assert_eq(rc, WSG_ENV_OK, "encode: %s", wsg_env_strerror(rc));
    }
    itest_outbound_produce(rk, g, slot, b.data, b.len);
  }
  cr_assert_eq(rd_kafka_flush(rk, 30000), RD_KAFKA_RESP_ERR_NO_ERROR);
  rd_kafka_destroy(rk);
  wsg_buf_finish(&b);
  free(payload);
}

void itest_deliver_many(const itest_gateway *g, int32_t slot, uint64_t conn, size_t size,
                        int count) {
  deliver_n(g, slot, conn, size, count, false);
}

void itest_deliver_numbered(const itest_gateway *g, int32_t slot, uint64_t conn, size_t size,
                            int count) {
  cr_assert_geq(size, 8);
  deliver_n(g, slot, conn, size, count, true);
}

bool itest_numbered_ok(const uint8_t *data, size_t len, size_t size, int i) {
  char want[16];
  snprintf(want, sizeof want, "%08d", i % 100000000);
  if (len != size || memcmp(data, want, 8) != 0)
    return false;
  for (size_t k = 8; k < len; k++)
    if (data[k] != 'z')
      return false;
  return true;
}
