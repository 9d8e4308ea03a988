/*
 * The whole path with real programs: WebSocket clients on two real wsgate-gateway processes, a
 * real wsgate-processor, Kafka and Redis in between. Echo round trip; chat between a user on
 * gateway 1 (JSON) and a user on gateway 2 (MessagePack); a room of 100 users over the two
 * gateways gets each message once per user through one publication: exactly one outbound record
 * per gateway.
 */
#include <criterion/criterion.h>
#include <jansson.h>
#include <msgpack.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#include "harness.h"
#include "harness_kafka.h"

#define RECV_MS 20000

static void send_text(ws_client *c, const char *s) {
  cr_assert_eq(ws_client_send_text(c, s, strlen(s)), WS_CLIENT_OK);
}

/* The next frame as JSON (a text frame); caller decrefs. */
static json_t *recv_json(ws_client *c) {
  ws_message m;
  itest_recv(c, &m, RECV_MS);
  cr_assert_eq(m.opcode, WS_OP_TEXT, "expected a JSON text frame, got opcode %d", m.opcode);
  json_t *j = json_loadb((const char *)m.data, m.len, 0, NULL);
  cr_assert_not_null(j, "not JSON: %.*s", (int)m.len, (const char *)m.data);
  return j;
}

static const char *jstr(json_t *j, const char *key) {
  const char *v = json_string_value(json_object_get(j, key));
  cr_assert_not_null(v, "no string \"%s\"", key);
  return v;
}

/* A MessagePack map of string pairs. */
static size_t pack(char *out, size_t cap, const char *const *kv, size_t pairs) {
  msgpack_sbuffer sb;
  msgpack_sbuffer_init(&sb);
  msgpack_packer pk;
  msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
  msgpack_pack_map(&pk, pairs);
  for (size_t i = 0; i < 2 * pairs; i++) {
    msgpack_pack_str(&pk, strlen(kv[i]));
    msgpack_pack_str_body(&pk, kv[i], strlen(kv[i]));
  }
  cr_assert_leq(sb.size, cap);
  memcpy(out, sb.data, sb.size);
  size_t n = sb.size;
  msgpack_sbuffer_destroy(&sb);
  return n;
}

/* A frame of either encoding as a JSON object (a MessagePack map of str, int and bool values);
 * *binary says which it was. Caller decrefs. */
static json_t *recv_any(ws_client *c, bool *binary) {
  ws_message m;
  itest_recv(c, &m, RECV_MS);
  *binary = m.opcode == WS_OP_BINARY;
  if (!*binary) {
    json_t *j = json_loadb((const char *)m.data, m.len, 0, NULL);
    cr_assert_not_null(j, "not JSON: %.*s", (int)m.len, (const char *)m.data);
    return j;
  }
  msgpack_unpacked up;
  msgpack_unpacked_init(&up);
  cr_assert_eq(msgpack_unpack_next(&up, (const char *)m.data, m.len, NULL), MSGPACK_UNPACK_SUCCESS);
  cr_assert_eq(up.data.type, MSGPACK_OBJECT_MAP);
  json_t *j = json_object();
  for (uint32_t i = 0; i < up.data.via.map.size; i++) {
    msgpack_object k = up.data.via.map.ptr[i].key, v = up.data.via.map.ptr[i].val;
    cr_assert_eq(k.type, MSGPACK_OBJECT_STR);
    char key[64];
    snprintf(key, sizeof key, "%.*s", (int)k.via.str.size, k.via.str.ptr);
    if (v.type == MSGPACK_OBJECT_STR)
      json_object_set_new(j, key, json_stringn(v.via.str.ptr, v.via.str.size));
    else if (v.type == MSGPACK_OBJECT_POSITIVE_INTEGER)
      json_object_set_new(j, key, json_integer((json_int_t)v.via.u64));
    else if (v.type == MSGPACK_OBJECT_BOOLEAN)
      json_object_set_new(j, key, json_boolean(v.via.boolean));
  }
  msgpack_unpacked_destroy(&up);
  return j;
}

/*
 * The chat handler's next frame (docs/HANDLERS.md): the gateway's `subscribed`/`unsubscribed`
 * notices of server subscriptions are skipped, and a room message, a publication of channel
 * room:<room> whose data is the message as JSON text, is unwrapped (its channel kept in
 * "channel"). *binary: the encoding the frame came in. Caller decrefs.
 */
static json_t *recv_chat(ws_client *c, bool *binary) {
  for (;;) {
    json_t *j = recv_any(c, binary);
    const char *w = json_string_value(json_object_get(j, "wsgate"));
    if (!w)
      return j;
    if (strcmp(w, "pub") == 0) {
      json_t *inner = json_loads(jstr(j, "data"), 0, NULL);
      cr_assert_not_null(inner, "a publication whose data is not JSON");
      json_object_set(inner, "channel", json_object_get(j, "channel"));
      json_decref(j);
      return inner;
    }
    cr_assert(strcmp(w, "subscribed") == 0 || strcmp(w, "unsubscribed") == 0, "frame %s", w);
    cr_assert(json_is_true(json_object_get(j, "server")), "the handler subscribed it");
    json_decref(j);
  }
}

Test(processor_gateway, echo_round_trip, .timeout = 120, .fini = itest_fini) {
  itest_cluster c;
  itest_cluster_init(&c, 4, 4, false);
  itest_gateway g;
  itest_gateway_start(&g, &c, "gw-echo", NULL);
  itest_processor p;
  itest_processor_start(&p, &c, "echo", "echo", NULL);

  ws_client *alice = itest_connect(&g, "alice");
  send_text(alice, "hello through Kafka");
  ws_message m;
  itest_recv(alice, &m, RECV_MS);
  cr_assert_eq(m.opcode, WS_OP_TEXT);
  cr_assert_eq(m.len, strlen("hello through Kafka"));
  cr_assert_eq(memcmp(m.data, "hello through Kafka", m.len), 0);
  const uint8_t bin[] = {0x00, 0xff, 0x10, 0x80};
  cr_assert_eq(ws_client_send(alice, WS_OP_BINARY, bin, sizeof(bin)), WS_CLIENT_OK);
  itest_recv(alice, &m, RECV_MS);
  cr_assert_eq(m.opcode, WS_OP_BINARY, "a binary frame comes back binary");
  cr_assert_eq(m.len, sizeof(bin));
  cr_assert_eq(memcmp(m.data, bin, sizeof(bin)), 0);
  /* Many in a row keep their order. */
  char buf[32];
  for (int i = 0; i < 50; i++) {
    snprintf(buf, sizeof(buf), "n%d", i);
    send_text(alice, buf);
  }
  for (int i = 0; i < 50; i++) {
    itest_recv(alice, &m, RECV_MS);
    snprintf(buf, sizeof(buf), "n%d", i);
    cr_assert_eq(m.len, strlen(buf));
    cr_assert_eq(memcmp(m.data, buf, m.len), 0, "echo %d out of order", i);
  }
  ws_client_destroy(alice);
  cr_assert_geq(itest_metric(p.http_port, "wsgate_processor_envelopes_total{type=\"connect\"}"), 1);
  int status = itest_processor_stop(&p, SIGTERM, 30000);
  cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  itest_processor_cleanup(&p);
  itest_gateway_cleanup(&g);
}

/* The hop histograms (docs/GATEWAY.md "Where the time goes") over a few round trips. */
typedef struct {
  int port;
  const char *series;
  double at_least;
} metric_at_least;

static bool reached(void *arg) {
  const metric_at_least *m = arg;
  return itest_metric(m->port, m->series) >= m->at_least;
}

static void expect_hop(int port, const char *name, double n) {
  char series[160];
  snprintf(series, sizeof series, "%s_count", name);
  /* Acknowledgements may be reported after the reply arrived: wait for them. */
  metric_at_least m = {port, series, n};
  cr_assert(itest_wait_until(reached, &m, 10000), "%s: %.0f observations, expected %.0f", name,
            itest_metric(port, series), n);
  snprintf(series, sizeof series, "%s_sum", name);
  double sum = itest_metric(port, series);
  /* Each took some time and none took seconds on an idle test cluster (mean under 2 s). */
  cr_assert(sum > 0 && sum / n < 2.0, "%s: sum %f s over %.0f", name, sum, n);
}

static bool log_has(const char *path, const char *needle) {
  FILE *f = fopen(path, "r");
  if (!f)
    return false;
  char line[4096];
  bool found = false;
  while (!found && fgets(line, sizeof line, f))
    found = strstr(line, needle) != NULL;
  fclose(f);
  return found;
}

static void hops_round_trips(const char *const *gw_extra) {
  itest_cluster c;
  itest_cluster_init(&c, 2, 2, false);
  itest_gateway g;
  itest_daemon_opts go = {.extra = gw_extra};
  itest_gateway_start(&g, &c, "gw-hops", &go);
  itest_processor p;
  itest_processor_start(&p, &c, "hops", "echo", NULL);
  ws_client *alice = itest_connect(&g, "alice");
  enum { N = 20 };
  ws_message m;
  for (int i = 0; i < N; i++) {
    send_text(alice, "hop");
    itest_recv(alice, &m, RECV_MS);
  }
  /* Inbound: every frame (and the connect) acknowledged, every record handed to the handler. */
  expect_hop(g.http_port, "wsgate_gateway_hop_inbound_acked_seconds", N + 1);
  expect_hop(p.http_port, "wsgate_processor_hop_handler_start_seconds", N + 1);
  /* Outbound: every echo acknowledged and written (the connect caused no reply). */
  expect_hop(p.http_port, "wsgate_processor_hop_outbound_acked_seconds", N);
  expect_hop(g.http_port, "wsgate_gateway_hop_outbound_written_seconds", N);
  /* A burst comes back whole and in order, whoever reads the outbound partition. */
  char buf[32];
  for (int i = 0; i < 50; i++) {
    snprintf(buf, sizeof buf, "b%d", i);
    send_text(alice, buf);
  }
  for (int i = 0; i < 50; i++) {
    itest_recv(alice, &m, RECV_MS);
    snprintf(buf, sizeof buf, "b%d", i);
    cr_assert(m.len == strlen(buf) && memcmp(m.data, buf, m.len) == 0, "echo %d out of order", i);
  }
  bool on_loop = false;
  for (const char *const *a = gw_extra; a && *a; a++)
    on_loop |= strcmp(*a, "loop") == 0;
  cr_assert_eq(log_has(g.log, "outbound records are read on the WebSocket thread"), on_loop);
  ws_client_destroy(alice);
  itest_processor_stop(&p, SIGTERM, 30000);
  itest_processor_cleanup(&p);
  /* A clean drain and exit in either mode (the loop's watchers go before the server does). */
  int status = itest_gateway_stop(&g, SIGTERM, 30000);
  cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0, "gateway exit status %d", status);
  itest_gateway_cleanup(&g);
}

Test(processor_gateway, hop_histograms_see_every_round_trip, .timeout = 120, .fini = itest_fini) {
  hops_round_trips(NULL);
}

Test(processor_gateway, hop_histograms_with_the_loop_clock, .timeout = 120, .fini = itest_fini) {
  static const char *const extra[] = {"--loop-clock", NULL};
  hops_round_trips(extra);
}

/* --outbound-consume loop: the loop thread reads the outbound partition itself (gw_kafka_ev.c). */
Test(processor_gateway, outbound_consumed_on_the_loop, .timeout = 120, .fini = itest_fini) {
  static const char *const extra[] = {"--outbound-consume", "loop", NULL};
  hops_round_trips(extra);
}

typedef struct {
  const itest_cluster *c;
  const char *user;
} user_gone;

static bool no_connections(void *arg) {
  user_gone *g = arg;
  redisReply *r = itest_redis_key_command(0, "HLEN %suser:%s", g->c->prefix, g->user);
  bool none = r && r->type == REDIS_REPLY_INTEGER && r->integer == 0;
  freeReplyObject(r);
  return none;
}

/* The namespace of the chat handler's rooms, as scripts/cluster and k8s/base configure it. */
static const char *const room_ns[] = {
    "--channel-namespace", "room=history_size=1000,history_ttl=10m,presence=true,subscribe=handler",
    NULL};

Test(processor_gateway, chat_between_two_gateways, .timeout = 120, .fini = itest_fini) {
  itest_cluster c;
  itest_cluster_init(&c, 4, 4, false);
  itest_gateway g1, g2;
  itest_daemon_opts o = {.extra = room_ns};
  itest_gateway_start(&g1, &c, "gw-one", &o);
  itest_gateway_start(&g2, &c, "gw-two", &o);
  cr_assert_neq(g1.slot, g2.slot, "two gateways, two slots");
  const char *pextra[] = {"--channel-namespace", room_ns[1], "--handler-arg", "dm_offline=tell",
                          NULL};
  itest_processor p;
  itest_processor_start(&p, &c, "chat", "chat", &(itest_daemon_opts){.extra = pextra});

  ws_client *alice = itest_connect(&g1, "alice"); /* speaks JSON */
  ws_client *bob = itest_connect(&g2, "bob");     /* speaks MessagePack */
  bool bin;
  send_text(alice, "{\"op\":\"join\",\"room\":\"lobby\",\"id\":1}");
  json_t *j = recv_chat(alice, &bin);
  cr_assert_str_eq(jstr(j, "type"), "joined");
  cr_assert_not(bin);
  json_decref(j);
  char frame[256];
  const char *join[] = {"op", "join", "room", "lobby"};
  size_t n = pack(frame, sizeof(frame), join, 2);
  cr_assert_eq(ws_client_send(bob, WS_OP_BINARY, frame, n), WS_CLIENT_OK);
  j = recv_chat(bob, &bin);
  cr_assert(bin, "bob spoke MessagePack and hears MessagePack");
  cr_assert_str_eq(jstr(j, "type"), "joined");
  json_decref(j);

  send_text(alice, "{\"op\":\"say\",\"room\":\"lobby\",\"text\":\"hi bob\"}");
  j = recv_chat(bob, &bin);
  cr_assert_str_eq(jstr(j, "type"), "message");
  cr_assert_str_eq(jstr(j, "channel"), "room:lobby");
  cr_assert_str_eq(jstr(j, "from"), "alice");
  cr_assert_str_eq(jstr(j, "text"), "hi bob");
  json_decref(j);
  j = recv_chat(alice, &bin);
  cr_assert_str_eq(jstr(j, "type"), "message", "the sender is a member too");
  cr_assert_str_eq(jstr(j, "text"), "hi bob");
  json_decref(j);

  const char *dm[] = {"op", "dm", "to", "alice", "text", "hi alice"};
  n = pack(frame, sizeof(frame), dm, 3);
  cr_assert_eq(ws_client_send(bob, WS_OP_BINARY, frame, n), WS_CLIENT_OK);
  j = recv_json(alice);
  cr_assert_str_eq(jstr(j, "type"), "dm");
  cr_assert_str_eq(jstr(j, "from"), "bob");
  cr_assert_str_eq(jstr(j, "text"), "hi alice");
  json_decref(j);

  send_text(alice, "{\"op\":\"dm\",\"to\":\"carol\",\"text\":\"there?\"}");
  j = recv_json(alice);
  cr_assert_str_eq(jstr(j, "code"), "offline");
  json_decref(j);

  /* Bob leaves: his gateway removes his connection's entry, and a dm to him is answered
   * "offline". */
  ws_message closed;
  ws_client_close(bob, 1000, "bye", &closed, RECV_MS);
  ws_client_destroy(bob);
  user_gone gone = {.c = &c, .user = "bob"};
  cr_assert(itest_wait_until(no_connections, &gone, ITEST_TIMEOUT_MS), "bob's entry is removed");
  send_text(alice, "{\"op\":\"dm\",\"to\":\"bob\",\"text\":\"still there?\"}");
  j = recv_json(alice);
  cr_assert_str_eq(jstr(j, "code"), "offline");
  json_decref(j);
  ws_client_destroy(alice);
  itest_processor_stop(&p, SIGTERM, 30000);
  itest_processor_cleanup(&p);
  itest_gateway_cleanup(&g1);
  itest_gateway_cleanup(&g2);
}

#define ROOM 100

Test(processor_gateway, room_of_100_over_two_gateways, .timeout = 240, .fini = itest_fini) {
  itest_cluster c;
  itest_cluster_init(&c, 4, 4, false);
  itest_gateway g[2];
  itest_daemon_opts o = {.extra = room_ns};
  itest_gateway_start(&g[0], &c, "gw-a", &o);
  itest_gateway_start(&g[1], &c, "gw-b", &o);
  itest_processor p;
  itest_processor_start(&p, &c, "chat", "chat", &o);

  static ws_client *cl[ROOM];
  bool bin;
  char user[16];
  for (int i = 0; i < ROOM; i++) {
    snprintf(user, sizeof(user), "member%03d", i);
    cl[i] = itest_connect(&g[i % 2], user);
    send_text(cl[i], "{\"op\":\"join\",\"room\":\"arena\"}");
  }
  /* Each member hears `joined` and, once its gateway applied the join's subscription, the
   * gateway's `subscribed` notice, in either order: a say after both reaches everyone. */
  for (int i = 0; i < ROOM; i++)
    for (bool joined = false, sub = false; !joined || !sub;) {
      json_t *j = recv_any(cl[i], &bin);
      const char *w = json_string_value(json_object_get(j, "wsgate"));
      if (w) {
        cr_assert_str_eq(w, "subscribed", "member %d", i);
        sub = true;
      } else {
        cr_assert_str_eq(jstr(j, "type"), "joined", "member %d", i);
        joined = true;
      }
      json_decref(j);
    }

  itest_reader rd;
  itest_reader_open(&rd, c.out_topic, c.out_partitions);
  send_text(cl[0], "{\"op\":\"say\",\"room\":\"arena\",\"text\":\"one message to all\"}");
  for (int i = 0; i < ROOM; i++) {
    json_t *j = recv_chat(cl[i], &bin);
    cr_assert_str_eq(jstr(j, "type"), "message", "member %d", i);
    cr_assert_str_eq(jstr(j, "text"), "one message to all");
    json_decref(j);
  }
  /* Once per user: nothing else arrives for anyone. */
  for (int i = 0; i < ROOM; i++) {
    ws_message m;
    int rc = ws_client_recv(cl[i], &m, i == 0 ? 1000 : 20);
    cr_assert_eq(rc, WS_CLIENT_TIMEOUT, "member %d got a second frame", i);
  }
  /* Exactly one outbound record per gateway carried it: one publication, not one per member. */
  int per_slot[64] = {0};
  int total = 0;
  rd_kafka_message_t *m;
  while ((m = itest_reader_next(&rd, 2000)) != NULL) {
    wsg_envelope e;
    cr_assert_eq(wsg_envelope_decode(&e, m->payload, m->len, NULL), WSG_ENV_OK);
    if (e.data_len > 0 && memmem(e.data, e.data_len, "one message to all", 18) != NULL) {
      cr_assert_eq(e.kind, WSG_ENV_PUBLISH, "a publication, not a per-member delivery");
      cr_assert_eq(e.channel_len, 10);
      cr_assert_eq(memcmp(e.channel, "room:arena", 10), 0);
      cr_assert_lt(m->partition, 64);
      per_slot[m->partition]++;
      total++;
    }
    rd_kafka_message_destroy(m);
  }
  cr_assert_eq(total, 2);
  cr_assert_eq(per_slot[g[0].slot], 1);
  cr_assert_eq(per_slot[g[1].slot], 1);

  for (int i = 0; i < ROOM; i++)
    ws_client_destroy(cl[i]);
  itest_reader_close(&rd);
  itest_processor_stop(&p, SIGTERM, 30000);
  itest_processor_cleanup(&p);
  itest_gateway_cleanup(&g[0]);
  itest_gateway_cleanup(&g[1]);
}
