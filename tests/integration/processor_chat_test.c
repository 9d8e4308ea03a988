/*
 * wsgate-processor --handler chat driven through Kafka with gateways simulated in Redis (their
 * records and connection entries, as wsgate-gateway writes them): a room of 100 users over two
 * gateways gets each message as exactly one outbound envelope per gateway listing its members'
 * connections; a direct message to an offline user comes back as an error to the sender; while
 * Redis is down records wait (the processor is not ready) and are handled once it is back.
 */
#include <criterion/criterion.h>
#include <jansson.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#include "harness.h"
#include "harness_kafka.h"

#define MEMBERS 100

static const char *gw_name(int i) {
  return i % 2 ? "gw-two" : "gw-one";
}

static void send_json(rd_kafka_t *prod, const itest_cluster *c, const char *user, uint64_t conn,
                      const char *gw, uint32_t slot, const char *json) {
  wsg_envelope env = itest_msg(user, conn, gw, slot, json, strlen(json), false);
  itest_produce(prod, c, &env);
}

/* The JSON object in a deliver's payload (NULL if it is not JSON). Caller decrefs. */
static json_t *payload_json(const wsg_envelope *e) {
  return json_loadb((const char *)e->data, e->data_len, 0, NULL);
}

Test(processor_chat, room_of_100_over_two_gateways_one_envelope_each, .timeout = 120,
     .fini = itest_fini) {
  itest_cluster c;
  itest_cluster_init(&c, 4, 4, false);
  redisContext *rc = itest_redis_connect();
  itest_fake_gateway(rc, c.prefix, "gw-one", 1, 600000);
  itest_fake_gateway(rc, c.prefix, "gw-two", 2, 600000);
  char user[16];
  for (int i = 0; i < MEMBERS; i++) {
    snprintf(user, sizeof(user), "u%03d", i);
    itest_fake_conn(rc, c.prefix, user, 1000 + (uint64_t)i, gw_name(i));
  }
  itest_processor p;
  itest_processor_start(&p, &c, "chat", "chat", NULL);
  rd_kafka_t *prod = itest_producer();
  for (int i = 0; i < MEMBERS; i++) {
    snprintf(user, sizeof(user), "u%03d", i);
    send_json(prod, &c, user, 1000 + (uint64_t)i, gw_name(i), i % 2 ? 2 : 1,
              "{\"op\":\"join\",\"room\":\"hall\"}");
  }
  itest_flush(prod);

  itest_reader rd;
  itest_reader_open(&rd, c.out_topic, c.out_partitions);
  int joined = 0;
  while (joined < MEMBERS) {
    rd_kafka_message_t *m = itest_reader_next(&rd, ITEST_TIMEOUT_MS);
    cr_assert_not_null(m, "only %d of %d joins acknowledged", joined, MEMBERS);
    wsg_envelope e;
    cr_assert_eq(wsg_envelope_decode(&e, m->payload, m->len, NULL), WSG_ENV_OK);
    json_t *j = payload_json(&e);
    cr_assert_not_null(j);
    cr_assert_str_eq(json_string_value(json_object_get(j, "type")), "joined");
    json_decref(j);
    joined++;
    rd_kafka_message_destroy(m);
  }

  /* Three messages from different members: each is one envelope per gateway. */
  for (int k = 0; k < 3; k++) {
    char json[128];
    snprintf(json, sizeof(json), "{\"op\":\"say\",\"room\":\"hall\",\"text\":\"message %d\"}", k);
    int from = k * 7;
    snprintf(user, sizeof(user), "u%03d", from);
    send_json(prod, &c, user, 1000 + (uint64_t)from, gw_name(from), from % 2 ? 2 : 1, json);
  }
  itest_flush(prod);
  int envelopes[3][3] = {{0}}; /* [message][slot] */
  static int seen[3][MEMBERS];
  memset(seen, 0, sizeof(seen));
  for (int got = 0; got < 6; got++) {
    rd_kafka_message_t *m = itest_reader_next(&rd, ITEST_TIMEOUT_MS);
    cr_assert_not_null(m, "only %d of 6 fan-out envelopes arrived", got);
    wsg_envelope e;
    cr_assert_eq(wsg_envelope_decode(&e, m->payload, m->len, NULL), WSG_ENV_OK);
    cr_assert(e.fields & WSG_F_CONNS, "50 members on a gateway: one list");
    json_t *j = payload_json(&e);
    const char *text = json_string_value(json_object_get(j, "text"));
    cr_assert_not_null(text);
    int k = text[strlen(text) - 1] - '0';
    cr_assert(k >= 0 && k < 3);
    envelopes[k][m->partition]++;
    size_t pos = 0;
    uint64_t id;
    while (wsg_conns_next(&e.conns, &pos, &id)) {
      int u = (int)(id - 1000);
      cr_assert(u >= 0 && u < MEMBERS);
      cr_assert_eq(m->partition, u % 2 ? 2 : 1, "each connection on its gateway's partition");
      cr_assert_eq(seen[k][u], 0, "member %d got message %d twice", u, k);
      seen[k][u]++;
    }
    json_decref(j);
    rd_kafka_message_destroy(m);
  }
  for (int k = 0; k < 3; k++) {
    cr_assert_eq(envelopes[k][1], 1, "message %d: one envelope for gw-one", k);
    cr_assert_eq(envelopes[k][2], 1, "message %d: one envelope for gw-two", k);
    for (int u = 0; u < MEMBERS; u++)
      cr_assert_eq(seen[k][u], 1, "member %d missed message %d", u, k);
  }

  /* A direct message to someone who is not connected: the sender hears so. */
  send_json(prod, &c, "u000", 1000, "gw-one", 1,
            "{\"op\":\"dm\",\"to\":\"nobody\",\"text\":\"hello?\",\"id\":9}");
  itest_flush(prod);
  rd_kafka_message_t *m = itest_reader_next(&rd, ITEST_TIMEOUT_MS);
  cr_assert_not_null(m);
  wsg_envelope e;
  cr_assert_eq(wsg_envelope_decode(&e, m->payload, m->len, NULL), WSG_ENV_OK);
  cr_assert_eq(e.conn, 1000);
  json_t *j = payload_json(&e);
  cr_assert_str_eq(json_string_value(json_object_get(j, "code")), "offline");
  cr_assert_eq(json_integer_value(json_object_get(j, "id")), 9);
  json_decref(j);
  rd_kafka_message_destroy(m);
  cr_assert_geq(itest_metric(p.http_port, "wsgate_processor_undeliverable_total"), 1);
  cr_assert_gt(itest_metric(p.http_port, "wsgate_processor_redis_lookups_total{kind=\"user\"}"), 0);

  int status = itest_processor_stop(&p, SIGTERM, 30000);
  cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  itest_reader_close(&rd);
  rd_kafka_destroy(prod);
  redisFree(rc);
  itest_processor_cleanup(&p);
}

static bool not_ready(void *arg) {
  return itest_http_get(*(int *)arg, "/readyz", NULL, 0) == 503;
}

static bool retried(void *arg) {
  return itest_metric(*(int *)arg, "wsgate_processor_retries_total") > 0;
}

/* /readyz stays 200 for --unready-after (5 s) of failing Redis, then turns 503 naming Redis. */
Test(processor_chat, records_wait_while_redis_is_down, .timeout = 120, .fini = itest_fini) {
  itest_cluster c;
  itest_cluster_init(&c, 2, 2, false);
  itest_redis_server srv = {0};
  itest_redis_server_start(&srv, 0);
  itest_track(srv.pid, srv.log);
  const char *extra[] = {"--redis-timeout", "300ms", "--unready-after", "5s", NULL};
  itest_processor p;
  itest_processor_start(&p, &c, "chat-redis", "chat",
                        &(itest_daemon_opts){.extra = extra, .redis_port = srv.port});
  rd_kafka_t *prod = itest_producer();

  itest_untrack(srv.pid);
  itest_redis_server_stop(&srv, SIGKILL);
  send_json(prod, &c, "alice", 1, "gw-one", 1, "{\"op\":\"join\",\"room\":\"r\",\"id\":1}");
  itest_flush(prod);
  cr_assert(itest_wait_until(retried, &p.http_port, ITEST_TIMEOUT_MS), "the record never waited");
  uint64_t t0 = itest_now_ms();
  cr_assert_eq(itest_http_get(p.http_port, "/readyz", NULL, 0), 200,
               "ready while Redis has failed for less than --unready-after");
  cr_assert(itest_wait_until(not_ready, &p.http_port, ITEST_TIMEOUT_MS),
            "not ready once Redis has been unreachable for --unready-after");
  uint64_t took = itest_now_ms() - t0;
  cr_assert_geq(took, 4000, "unready after %llu ms, before --unready-after (5 s)",
                (unsigned long long)took);
  char body[512];
  itest_http_get(p.http_port, "/readyz", body, sizeof(body));
  cr_assert(strstr(body, "redis"), "the reason names Redis: %s", body);
  itest_reader rd;
  itest_reader_open(&rd, c.out_topic, c.out_partitions);
  cr_assert_null(itest_reader_next(&rd, 1500), "nothing is answered without Redis");

  itest_redis_server_start(&srv, srv.port);
  itest_track(srv.pid, srv.log); /* back, empty */
  rd_kafka_message_t *m = itest_reader_next(&rd, ITEST_TIMEOUT_MS);
  cr_assert_not_null(m, "the waiting record is handled once Redis is back");
  wsg_envelope e;
  cr_assert_eq(wsg_envelope_decode(&e, m->payload, m->len, NULL), WSG_ENV_OK);
  json_t *j = payload_json(&e);
  cr_assert_str_eq(json_string_value(json_object_get(j, "type")), "joined");
  json_decref(j);
  rd_kafka_message_destroy(m);
  cr_assert_eq(itest_wait_http(p.http_port, "/readyz", 200, ITEST_TIMEOUT_MS), 0, "ready again");
  cr_assert_gt(itest_metric(p.http_port, "wsgate_processor_retries_total"), 0);

  int status = itest_processor_stop(&p, SIGTERM, 30000);
  cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  itest_untrack(srv.pid);
  itest_redis_server_stop(&srv, SIGTERM);
  itest_reader_close(&rd);
  rd_kafka_destroy(prod);
  itest_processor_cleanup(&p);
}

typedef struct {
  const char *path;
  const char *needle;
} log_wait;

static bool log_has(void *arg) {
  log_wait *w = arg;
  static char buf[1 << 20];
  itest_read_file(w->path, buf, sizeof(buf));
  return strstr(buf, w->needle) != NULL;
}

/*
 * A processor that blocks past max.poll.interval.ms (Redis down, records retried) is thrown out
 * of the group and its assignment is lost; when it gets the partitions back it starts after its
 * own completed (acknowledged, not yet committed) work instead of handling it again.
 */
Test(processor_chat, lost_assignment_resumes_after_own_completed_work, .timeout = 120,
     .fini = itest_fini) {
  itest_cluster c;
  itest_cluster_init(&c, 1, 2, false);
  itest_redis_server srv = {0};
  itest_redis_server_start(&srv, 0);
  itest_track(srv.pid, srv.log);
  const char *extra[] = {"--redis-timeout",           "300ms", "--commit-interval", "60s", "-X",
                         "max.poll.interval.ms=6000", NULL};
  itest_processor p;
  itest_processor_start(&p, &c, "chat-lost", "chat",
                        &(itest_daemon_opts){.extra = extra, .redis_port = srv.port});
  rd_kafka_t *prod = itest_producer();
  itest_reader rd;
  itest_reader_open(&rd, c.out_topic, c.out_partitions);

  for (int i = 0; i < 5; i++)
    send_json(prod, &c, "alice", 1, "gw-one", 1, "{\"op\":\"join\",\"room\":\"r\"}");
  itest_flush(prod);
  for (int i = 0; i < 5; i++) {
    rd_kafka_message_t *m = itest_reader_next(&rd, ITEST_TIMEOUT_MS);
    cr_assert_not_null(m, "join %d not answered", i);
    rd_kafka_message_destroy(m);
  }
  cr_assert_eq(itest_uncommitted(&c), -1, "nothing committed yet (60 s interval)");

  itest_untrack(srv.pid);
  itest_redis_server_stop(&srv, SIGKILL);
  send_json(prod, &c, "alice", 1, "gw-one", 1, "{\"op\":\"join\",\"room\":\"r\",\"id\":6}");
  itest_flush(prod);
  log_wait w = {.path = p.log, .needle = "maximum poll interval"};
  cr_assert(itest_wait_until(log_has, &w, ITEST_TIMEOUT_MS), "thrown out of the group");

  itest_redis_server_start(&srv, srv.port);
  itest_track(srv.pid, srv.log);
  rd_kafka_message_t *m = itest_reader_next(&rd, ITEST_TIMEOUT_MS);
  cr_assert_not_null(m, "the sixth join is answered once Redis is back");
  wsg_envelope e;
  cr_assert_eq(wsg_envelope_decode(&e, m->payload, m->len, NULL), WSG_ENV_OK);
  json_t *j = payload_json(&e);
  cr_assert_eq(json_integer_value(json_object_get(j, "id")), 6);
  json_decref(j);
  rd_kafka_message_destroy(m);
  w.needle = "resuming at offset";
  cr_assert(itest_wait_until(log_has, &w, ITEST_TIMEOUT_MS), "it resumes after its own work");
  cr_assert_geq(itest_metric(p.http_port, "wsgate_processor_rebalances_total{kind=\"lost\"}"), 1);
  cr_assert_null(itest_reader_next(&rd, 3000), "the five earlier joins are not handled again");

  int status = itest_processor_stop(&p, SIGTERM, 30000);
  cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  cr_assert_eq(itest_uncommitted(&c), 0, "SIGTERM commits everything");
  itest_untrack(srv.pid);
  itest_redis_server_stop(&srv, SIGTERM);
  itest_reader_close(&rd);
  rd_kafka_destroy(prod);
  itest_processor_cleanup(&p);
}
