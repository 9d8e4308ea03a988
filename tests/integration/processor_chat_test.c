/*
 * wsgate-processor --handler chat: a room of 20 members on two real gateways gets each say as one
 * publication and one record per gateway, and a member that reconnects keeps receiving; with
 * gateways simulated in Redis (their records and connection entries, as wsgate-gateway writes
 * them): the dm's offline answer follows dm_offline; while Redis is down records wait (the
 * processor is not ready) and are handled once it is back.
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

static void send_json(rd_kafka_t *prod, const itest_cluster *c, const char *user, uint64_t conn,
                      const char *gw, uint32_t slot, const char *json) {
  wsg_envelope env = itest_msg(user, conn, gw, slot, json, strlen(json), false);
  itest_produce(prod, c, &env);
}

/* The JSON object in a deliver's payload (NULL if it is not JSON). Caller decrefs. */
static json_t *payload_json(const wsg_envelope *e) {
  return json_loadb((const char *)e->data, e->data_len, 0, NULL);
}

/* The namespace the chat handler's rooms live in, as scripts/cluster and k8s/base configure it. */
#define ROOM_NS "room=history_size=1000,history_ttl=10m,presence=true,subscribe=handler"

/* The next text frame; its JSON object (caller decrefs). */
static json_t *recv_json(ws_client *cl, const char *what) {
  ws_message m;
  itest_recv(cl, &m, ITEST_TIMEOUT_MS);
  cr_assert_eq(m.opcode, WS_OP_TEXT, "%s: not a text frame", what);
  json_t *j = json_loadb((const char *)m.data, m.len, 0, NULL);
  cr_assert_not_null(j, "%s: not JSON: %.*s", what, (int)m.len, (const char *)m.data);
  return j;
}

/* Reads frames until the join's two answers arrived: the gateway's unsolicited `subscribed`
 * (server: true) and the handler's `joined`, in either order. */
static void expect_joined(ws_client *cl, const char *user) {
  bool sub = false, joined = false;
  while (!sub || !joined) {
    json_t *j = recv_json(cl, user);
    const char *w = json_string_value(json_object_get(j, "wsgate"));
    const char *t = json_string_value(json_object_get(j, "type"));
    if (w && strcmp(w, "subscribed") == 0) {
      cr_assert_str_eq(json_string_value(json_object_get(j, "channel")), "room:hall");
      cr_assert(json_is_true(json_object_get(j, "server")), "%s: the handler subscribed it", user);
      sub = true;
    } else {
      cr_assert(t && strcmp(t, "joined") == 0, "%s: unexpected frame", user);
      joined = true;
    }
    json_decref(j);
  }
}

/* The next frame must be a publication of room:hall whose message has `text`. */
static void expect_message(ws_client *cl, const char *who, const char *text) {
  json_t *j = recv_json(cl, who);
  cr_assert_str_eq(json_string_value(json_object_get(j, "wsgate")), "pub", "%s", who);
  cr_assert_str_eq(json_string_value(json_object_get(j, "channel")), "room:hall");
  const char *data = json_string_value(json_object_get(j, "data"));
  cr_assert_not_null(data);
  json_t *msg = json_loads(data, 0, NULL);
  cr_assert_not_null(msg, "%s: data is not JSON: %s", who, data);
  cr_assert_str_eq(json_string_value(json_object_get(msg, "type")), "message");
  cr_assert_str_eq(json_string_value(json_object_get(msg, "text")), text, "%s", who);
  json_decref(msg);
  json_decref(j);
}

/*
 * A room of 20 members on two real gateways: each say is ONE publication (one script in Redis)
 * and one Kafka record per gateway, whatever the number of members, and every member gets it. A
 * member that reconnects (to the other gateway) is subscribed again by on_connect and keeps
 * receiving without knowing about channels.
 */
Test(processor_chat, room_on_two_gateways_one_publication_per_say, .timeout = 180,
     .fini = itest_fini) {
  enum { N = 20, SAYS = 3 };
  itest_cluster c;
  itest_cluster_init(&c, 4, 4, false);
  const char *extra[] = {"--channel-namespace", ROOM_NS, NULL};
  itest_daemon_opts o = {.extra = extra};
  itest_gateway g[2];
  itest_gateway_start(&g[0], &c, "chat-ch1", &o);
  itest_gateway_start(&g[1], &c, "chat-ch2", &o);
  itest_processor p;
  itest_processor_start(&p, &c, "chat-ch", "chat", &o);
  ws_client *cl[N];
  char user[16];
  for (int i = 0; i < N; i++) {
    snprintf(user, sizeof user, "m%02d", i);
    cl[i] = itest_connect(&g[i % 2], user);
    const char *join = "{\"op\":\"join\",\"room\":\"hall\"}";
    cr_assert_eq(ws_client_send_text(cl[i], join, strlen(join)), WS_CLIENT_OK);
  }
  for (int i = 0; i < N; i++)
    expect_joined(cl[i], "a member");
  double stored0 =
      itest_metric(p.http_port, "wsgate_processor_channel_publications_total{result=\"stored\"}");
  double records0 = itest_metric(p.http_port, "wsgate_processor_channel_publish_records_total");

  char say[128], text[32];
  for (int k = 0; k < SAYS; k++) {
    snprintf(say, sizeof say, "{\"op\":\"say\",\"room\":\"hall\",\"text\":\"message %d\"}", k);
    cr_assert_eq(ws_client_send_text(cl[k], say, strlen(say)), WS_CLIENT_OK);
    snprintf(text, sizeof text, "message %d", k);
    for (int i = 0; i < N; i++)
      expect_message(cl[i], "a member", text);
  }
  double stored =
      itest_metric(p.http_port, "wsgate_processor_channel_publications_total{result=\"stored\"}") -
      (stored0 < 0 ? 0 : stored0);
  double records = itest_metric(p.http_port, "wsgate_processor_channel_publish_records_total") -
                   (records0 < 0 ? 0 : records0);
  cr_assert_eq(stored, SAYS, "one publication per say, not per member: %.0f", stored);
  cr_assert_eq(records, 2 * SAYS, "one record per gateway per say: %.0f", records);
  cr_log_info("%d says to %d members on 2 gateways: %.0f publications, %.0f Kafka records", SAYS, N,
              stored, records);

  /* m01 (on the second gateway) reconnects to the first: on_connect subscribes it again. */
  ws_client_destroy(cl[1]);
  cl[1] = itest_connect(&g[0], "m01");
  json_t *j = recv_json(cl[1], "m01 after reconnecting");
  cr_assert_str_eq(json_string_value(json_object_get(j, "wsgate")), "subscribed");
  cr_assert(json_is_true(json_object_get(j, "server")));
  json_decref(j);
  const char *after = "{\"op\":\"say\",\"room\":\"hall\",\"text\":\"welcome back\"}";
  cr_assert_eq(ws_client_send_text(cl[0], after, strlen(after)), WS_CLIENT_OK);
  expect_message(cl[1], "m01", "welcome back");
  expect_message(cl[2], "m02", "welcome back");

  for (int i = 0; i < N; i++)
    ws_client_destroy(cl[i]);
  int status = itest_processor_stop(&p, SIGTERM, 30000);
  cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  itest_processor_cleanup(&p);
  itest_gateway_cleanup(&g[0]);
  itest_gateway_cleanup(&g[1]);
}

/* A direct message to someone who is not connected: with dm_offline=tell the sender hears so;
 * by default nothing comes back (no presence oracle). */
Test(processor_chat, dm_offline_answer_is_a_setting, .timeout = 120, .fini = itest_fini) {
  itest_cluster c;
  itest_cluster_init(&c, 2, 2, false);
  redisContext *rc = itest_redis_connect();
  itest_fake_gateway(rc, c.prefix, "gw-one", 1, 600000);
  itest_fake_conn(rc, c.prefix, "u000", 1000, "gw-one");
  const char *extra[] = {"--handler-arg", "dm_offline=tell", NULL};
  itest_processor p;
  itest_processor_start(&p, &c, "chat-dm", "chat", &(itest_daemon_opts){.extra = extra});
  rd_kafka_t *prod = itest_producer();
  send_json(prod, &c, "u000", 1000, "gw-one", 1,
            "{\"op\":\"dm\",\"to\":\"nobody\",\"text\":\"hello?\",\"id\":9}");
  itest_flush(prod);
  itest_reader rd;
  itest_reader_open(&rd, c.out_topic, c.out_partitions);
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
  int status = itest_processor_stop(&p, SIGTERM, 30000);
  cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  itest_processor_cleanup(&p);

  /* The default: the same dm, nothing back. */
  itest_processor_start(&p, &c, "chat-dm2", "chat", NULL);
  send_json(prod, &c, "u000", 1000, "gw-one", 1,
            "{\"op\":\"dm\",\"to\":\"nobody\",\"text\":\"hello?\",\"id\":10}");
  itest_flush(prod);
  cr_assert_null(itest_reader_next(&rd, 3000), "the default answers nothing");
  status = itest_processor_stop(&p, SIGTERM, 30000);
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
  uint64_t killed = itest_now_ms();
  itest_redis_server_stop(&srv, SIGKILL);
  send_json(prod, &c, "alice", 1, "gw-one", 1, "{\"op\":\"join\",\"room\":\"r\",\"id\":1}");
  itest_flush(prod);
  /* Ready while Redis has been down for less than --unready-after (5 s): /readyz is asked back to
   * back from the kill until the record has waited 300 ms, and every answer within 3 s of the
   * kill must be 200 (a loaded box may take most of the 5 s to consume the record). Asking
   * without a pause is what catches a failure's start read as later than the probe's clock. */
  uint64_t waited = 0;
  for (int polls = 0;; polls++) {
    char why[512] = "";
    int st = itest_http_get(p.http_port, "/readyz", why, sizeof why);
    uint64_t t = itest_now_ms();
    if (t - killed >= 3000)
      break;
    cr_assert_eq(st, 200,
                 "ready while Redis has failed for less than --unready-after (%llu ms): %s",
                 (unsigned long long)(t - killed), why);
    if (!waited && polls % 16 == 0 && retried(&p.http_port))
      waited = t;
    if (waited && t - waited >= 300)
      break;
  }
  cr_assert(itest_wait_until(retried, &p.http_port, ITEST_TIMEOUT_MS), "the record never waited");
  cr_assert(itest_wait_until(not_ready, &p.http_port, ITEST_TIMEOUT_MS),
            "not ready once Redis has been unreachable for --unready-after");
  /* From the kill: the processor counts from the failure, not from our retried record. */
  uint64_t took = itest_now_ms() - killed;
  cr_assert_geq(took, 4000, "unready %llu ms after Redis died, before --unready-after (5 s)",
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
