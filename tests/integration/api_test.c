/*
 * wsgate-api end to end (docs/API.md): a real wsgate-api, wsgate-processor and wsgate-gateway on
 * the shared Kafka and Redis, WebSocket clients receiving what HTTP requests asked: every
 * command; a retried request with the same Idempotency-Key delivered once; hostile bodies
 * answered 400/413 with the service still up; a bad key 401; an API whose Kafka is unreachable,
 * or whose Redis stalls, answering 503 with the reason; and, on a Redis Cluster
 * (WSGATE_TEST_REDIS_CLUSTER), its cluster metrics following a failover.
 */
#include <criterion/criterion.h>
#include <criterion/logging.h>
#include <arpa/inet.h>
#include <errno.h>
#include <hiredis.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "harness.h"
#include "harness_kafka.h"
#include "wsg_redis_slots.h"

#define RECV_MS 20000
#define SECRET  "itest-secret-0123456789abcdef"
#define AUTH    "Authorization: Bearer " SECRET "\r\n"

typedef struct {
  pid_t pid;
  int port, ops_port;
  char log[512];
  char keys[600];
} api_proc;

static itest_cluster cl;
static itest_gateway gw;
static itest_processor proc;
static api_proc api;

/* Starts wsgate-api on `brokers` with the cluster's commands topic and prefix, on the test's
 * Redis (redis_port 0: the shared node or WSGATE_TEST_REDIS_CLUSTER, else a private server),
 * with `extra` flags after the standard ones (NULL-terminated, may be NULL). */
static void api_start_with(api_proc *a, const char *brokers, bool wait_ready, int redis_port,
                           const char *const *extra) {
  memset(a, 0, sizeof *a);
  char *name = itest_unique("api");
  char *log = itest_log_path(name);
  snprintf(a->log, sizeof a->log, "%s", log);
  free(log);
  free(name);
  snprintf(a->keys, sizeof a->keys, "%s.keys", a->log);
  FILE *f = fopen(a->keys, "w");
  cr_assert_not_null(f);
  fprintf(f, "# test keys\nitest %s\n", SECRET);
  fclose(f);
  a->port = itest_free_port();
  a->ops_port = itest_free_port();
  char port[16], ops[16], redis[16];
  snprintf(port, sizeof port, "%d", a->port);
  snprintf(ops, sizeof ops, "%d", a->ops_port);
  snprintf(redis, sizeof redis, "%d", redis_port ? redis_port : itest_redis_port());
  /* WSGATE_TEST_REDIS_CLUSTER (scripts/redis start --cluster): the API on the Redis Cluster, as
   * the harness starts the gateways and processors. */
  const char *seed = redis_port ? NULL : itest_redis_cluster_seed();
  bool cluster = seed != NULL;
  const char *argv[] = {itest_bin("WSGATE_API_BIN"),
                        "--kafka-brokers",
                        brokers,
                        "--commands-topic",
                        cl.cmd_topic,
                        "--outbound-topic",
                        cl.out_topic,
                        "--keys-file",
                        a->keys,
                        "--listen-addr",
                        "127.0.0.1",
                        "--listen-port",
                        port,
                        "--http-addr",
                        "127.0.0.1",
                        "--http-port",
                        ops,
                        cluster ? "--redis-cluster" : "--redis-port",
                        cluster ? seed : redis,
                        "--redis-prefix",
                        cl.prefix,
                        "--max-body",
                        "64k",
                        "--max-payload",
                        "16k",
                        "--log-level",
                        "debug",
                        NULL};
  const char *all[64];
  size_t n = 0;
  for (size_t i = 0; argv[i]; i++)
    all[n++] = argv[i];
  for (size_t i = 0; extra && extra[i]; i++) {
    cr_assert_lt(n + 1, sizeof all / sizeof all[0], "too many flags");
    all[n++] = extra[i];
  }
  all[n] = NULL;
  a->pid = itest_spawn(all, NULL, a->log);
  itest_track(a->pid, a->log);
  int want = wait_ready ? 200 : 503;
  if (itest_wait_http(a->ops_port, "/readyz", want, ITEST_TIMEOUT_MS) != 0) {
    itest_dump_log(a->log, 40);
    cr_assert_fail("wsgate-api did not answer /readyz %d", want);
  }
}

static void api_start(api_proc *a, const char *brokers, bool wait_ready) {
  api_start_with(a, brokers, wait_ready, 0, NULL);
}

static void api_stop(api_proc *a) {
  if (a->pid > 0) {
    int st;
    itest_stop(a->pid, SIGTERM, 15000, &st);
    itest_untrack(a->pid);
    a->pid = 0;
  }
}

/* The namespace of the channel tests: history and presence kept (gateways and processors). */
static const char *const chan_opts[] = {"--channel-namespace",
                                        "news=history_size=100,presence=true", NULL};

static void setup(void) {
  itest_cluster_init(&cl, 2, 2, true);
  itest_cluster_add_commands(&cl, 4);
  itest_gateway_start(&gw, &cl, "api-gw", &(itest_daemon_opts){.extra = chan_opts});
  itest_processor_start(&proc, &cl, "api-proc", "echo", &(itest_daemon_opts){.extra = chan_opts});
  api_start(&api, itest_kafka_bootstrap(), true);
}

/* A Redis Cluster node a test stopped (SIGSTOP), resumed by teardown if the test failed first:
 * the cluster outlives the test. */
static pid_t stopped_node;

static void teardown(void) {
  if (stopped_node > 0)
    kill(stopped_node, SIGCONT);
  stopped_node = 0;
  api_stop(&api);
  itest_processor_cleanup(&proc);
  itest_gateway_cleanup(&gw);
  itest_fini();
}

TestSuite(api, .init = setup, .fini = teardown, .timeout = 240);

/* One HTTP/1.1 request on a new connection; returns the status, the body in `body`. */
static int http(int port, const char *method, const char *path, const char *headers,
                const void *body, size_t len, char *out, size_t outlen) {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  cr_assert_eq(connect(fd, (struct sockaddr *)&sa, sizeof sa), 0, "connect: %s", strerror(errno));
  char head[1024];
  int n =
      snprintf(head, sizeof head,
               "%s %s HTTP/1.1\r\nHost: x\r\nConnection: close\r\n%sContent-Length: %zu\r\n\r\n",
               method, path, headers, len);
  cr_assert_eq(send(fd, head, (size_t)n, MSG_NOSIGNAL), n);
  /* The server may answer (413) before the body is sent: a failed send is fine then. */
  for (size_t off = 0; off < len;) {
    ssize_t k = send(fd, (const char *)body + off, len - off, MSG_NOSIGNAL);
    if (k <= 0)
      break;
    off += (size_t)k;
  }
  static char buf[1 << 16];
  size_t got = 0;
  for (;;) {
    struct pollfd p = {.fd = fd, .events = POLLIN};
    if (poll(&p, 1, RECV_MS) <= 0)
      break;
    ssize_t k = recv(fd, buf + got, sizeof buf - 1 - got, 0);
    if (k <= 0)
      break;
    got += (size_t)k;
  }
  close(fd);
  buf[got] = '\0';
  int status = 0;
  cr_assert_eq(sscanf(buf, "HTTP/1.1 %d", &status), 1, "no response: %s", buf);
  const char *b = strstr(buf, "\r\n\r\n");
  snprintf(out, outlen, "%s", b ? b + 4 : "");
  return status;
}

static int post(const char *path, const char *extra, const char *json, char *out, size_t len) {
  char headers[512];
  snprintf(headers, sizeof headers, AUTH "Content-Type: application/json\r\n%s", extra);
  return http(api.port, "POST", path, headers, json, strlen(json), out, len);
}

/* The one connection id of `user` in Redis (the shared node or the cluster's), once registered. */
static uint64_t conn_of(const char *user) {
  uint64_t id = 0;
  for (int i = 0; i < 200 && !id; i++) {
    redisReply *r = itest_redis_key_command(0, "HKEYS %suser:%s", cl.prefix, user);
    if (r && r->elements == 1)
      id = strtoull(r->element[0]->str, NULL, 10);
    freeReplyObject(r);
    if (!id)
      usleep(50000);
  }
  cr_assert_neq(id, 0, "%s is not registered", user);
  return id;
}

Test(api, every_command_end_to_end) {
  char out[4096], body[512];
  ws_client *a = itest_connect(&gw, "alice");
  ws_client *b = itest_connect(&gw, "bob");
  ws_client *c = itest_connect(&gw, "carol");
  uint64_t bob_conn = conn_of("bob");
  conn_of("alice");
  conn_of("carol");

  cr_assert_eq(
      post("/v1/send", "", "{\"user\":\"alice\",\"data\":\"order shipped\"}", out, sizeof out), 202,
      "%s", out);
  cr_assert(strstr(out, "\"accepted\":1"), "%s", out);
  itest_expect_text(a, "order shipped", RECV_MS);

  cr_assert_eq(post("/v1/send", "", "{\"users\":[\"alice\",\"bob\",\"carol\"],\"data\":\"all\"}",
                    out, sizeof out),
               202, "%s", out);
  itest_expect_text(a, "all", RECV_MS);
  itest_expect_text(b, "all", RECV_MS);
  itest_expect_text(c, "all", RECV_MS);

  snprintf(body, sizeof body, "{\"user\":\"bob\",\"conn\":\"%llu\",\"data\":\"only bob's tab\"}",
           (unsigned long long)bob_conn);
  cr_assert_eq(post("/v1/send", "", body, out, sizeof out), 202, "%s", out);
  itest_expect_text(b, "only bob's tab", RECV_MS);

  cr_assert_eq(post("/v1/batch", "",
                    "{\"commands\":[{\"command\":\"send\",\"user\":\"carol\",\"data\":\"1\"},"
                    "{\"command\":\"send\",\"user\":\"carol\",\"data\":\"2\"}]}",
                    out, sizeof out),
               202, "%s", out);
  cr_assert(strstr(out, "\"accepted\":2"), "%s", out);
  itest_expect_text(c, "1", RECV_MS);
  itest_expect_text(c, "2", RECV_MS);

  /* conn as a string: ids use 64 bits, beyond a JSON number's exact range (docs/API.md) */
  snprintf(body, sizeof body,
           "{\"user\":\"bob\",\"conn\":\"%llu\",\"code\":4100,\"reason\":\"bye\"}",
           (unsigned long long)bob_conn);
  cr_assert_eq(post("/v1/disconnect", "", body, out, sizeof out), 202, "%s", out);
  itest_expect_close(b, 4100, RECV_MS);
  cr_assert_eq(post("/v1/disconnect", "", "{\"user\":\"carol\"}", out, sizeof out), 202, "%s", out);
  itest_expect_close(c, 1000, RECV_MS);

  /* info: the gateway, its slot and its connections */
  cr_assert_eq(http(api.port, "GET", "/v1/info", AUTH, "", 0, out, sizeof out), 200, "%s", out);
  char want[256];
  snprintf(want, sizeof want, "{\"id\":\"%s\",\"slot\":%d", gw.id, (int)gw.slot);
  cr_assert(strstr(out, want), "no %s in %s", want, out);
  cr_assert(strstr(out, "\"slots\":2"), "%s", out);

  ws_client_destroy(a);
  ws_client_destroy(b);
  ws_client_destroy(c);
}

static void subscribe(ws_client *c, const char *channel) {
  char op[256], want[256];
  snprintf(op, sizeof op, "{\"wsgate\":\"subscribe\",\"channel\":\"%s\"}", channel);
  /* Before any publication: the position is epoch 0, offset 0. */
  snprintf(want, sizeof want,
           "{\"wsgate\":\"subscribed\",\"channel\":\"%s\",\"epoch\":0,\"offset\":0}", channel);
  cr_assert_eq(ws_client_send_text(c, op, strlen(op)), WS_CLIENT_OK);
  itest_expect_text(c, want, RECV_MS);
}

/* The next frame of c must be publication `offset` of `channel` with text `data`; its epoch. */
static unsigned long long expect_pub(ws_client *c, const char *channel, unsigned offset,
                                     const char *data) {
  ws_message m;
  itest_recv(c, &m, RECV_MS);
  char head[256], tail[256];
  snprintf(head, sizeof head,
           "{\"wsgate\":\"pub\",\"channel\":\"%s\",\"offset\":%u,\"epoch\":", channel, offset);
  snprintf(tail, sizeof tail, ",\"data\":\"%s\"}", data);
  cr_assert(m.len > strlen(head) + strlen(tail) && memcmp(m.data, head, strlen(head)) == 0 &&
                memcmp(m.data + m.len - strlen(tail), tail, strlen(tail)) == 0,
            "want publication %u of %s, got %.*s", offset, channel, (int)m.len, m.data);
  return strtoull((const char *)m.data + strlen(head), NULL, 10);
}

static int get(const char *path, char *out, size_t len) {
  return http(api.port, "GET", path, AUTH, "", 0, out, len);
}

/* publish reaches the subscribers of two gateways once (numbered, stored once, one record per
 * gateway, as a handler's wsgate_publish()); presence lists them; history pages by offset. */
Test(api, publish_presence_and_history) {
  char out[8192], want[512];
  itest_gateway gw2;
  itest_gateway_start(&gw2, &cl, "api-gw2", &(itest_daemon_opts){.extra = chan_opts});
  ws_client *a = itest_connect_channels(&gw, "hana", "[\"*\"]");
  ws_client *b = itest_connect_channels(&gw2, "ivan", "[\"*\"]");
  subscribe(a, "news:api");
  subscribe(b, "news:api");

  cr_assert_eq(get("/v1/presence?channel=news%3Aapi", out, sizeof out), 200, "%s", out);
  snprintf(want, sizeof want, "\"user\":\"hana\",\"conn\":\"%llu\",\"gateway\":\"%s\"",
           (unsigned long long)conn_of("hana"), gw.id);
  cr_assert(strstr(out, want), "no %s in %s", want, out);
  snprintf(want, sizeof want, "\"user\":\"ivan\",\"conn\":\"%llu\",\"gateway\":\"%s\"",
           (unsigned long long)conn_of("ivan"), gw2.id);
  cr_assert(strstr(out, want), "no %s in %s", want, out);
  cr_assert(strstr(out, "\"more\":false"), "%s", out);
  cr_assert(strstr(out, "\"connections\":2,"), "%s", out);
  cr_assert_eq(get("/v1/presence?channel=news:api&limit=1", out, sizeof out), 200, "%s", out);
  cr_assert(strstr(out, "\"more\":true"), "limit 1 of 2: %s", out);
  cr_assert(strstr(out, "\"connections\":2,"), "connections stays exact: %s", out);

  /* A crashed gateway's entry and count (no gw:<id> record), and one of gw2's previous life (its
   * record names another boot): left out, then deleted. */
  char ghost[256], zombie[300];
  snprintf(ghost, sizeof ghost, "%sch:{c:news:api}", cl.prefix);
  snprintf(zombie, sizeof zombie, "%s#00000000000000ff", gw2.id);
  freeReplyObject(
      itest_redis_key_command(0, "HSET %s:p:gw-gone#0000000000000001 777 ghost%s", ghost, ""));
  freeReplyObject(itest_redis_key_command(0, "HSET %s:pc gw-gone#0000000000000001 1%s", ghost, ""));
  char kz[600];
  snprintf(kz, sizeof kz, "%s:p:%s", ghost, zombie);
  freeReplyObject(itest_redis_key_command(0, "HSET %s 778 zombie%s", kz, ""));
  freeReplyObject(itest_redis_key_command(0, "HSET %s:pc %s 1", ghost, zombie));
  cr_assert_eq(get("/v1/presence?channel=news:api", out, sizeof out), 200, "%s", out);
  cr_assert(strstr(out, "\"connections\":2,") && !strstr(out, "ghost") && !strstr(out, "zombie"),
            "%s", out);
  redisReply *rep = itest_redis_key_command(0, "HLEN %s:pc%s", ghost, "");
  cr_expect(rep && rep->type == REDIS_REPLY_INTEGER && rep->integer == 2, "the counts deleted");
  freeReplyObject(rep);
  rep = itest_redis_key_command(0, "EXISTS %s:p:gw-gone#0000000000000001 %s", ghost, kz);
  cr_expect(rep && rep->type == REDIS_REPLY_INTEGER && rep->integer == 0, "the entries deleted");
  freeReplyObject(rep);
  cr_expect_eq(itest_metric(api.ops_port, "wsgate_api_presence_drops_total{result=\"ok\"}"), 1,
               "one DROP for both dead lives");
  /* 300 dead lives, more than one read takes (256): every request answers, the first deletes
   * the dead it read, the second reads the rest (once they made every request fail for good).
   * Seeded one command at a time through the MOVED-following helper: on a Redis Cluster the
   * channel's slot need not be on the node a plain connection reaches. */
  char pc[300], life[64], pk[700], field[16];
  snprintf(pc, sizeof pc, "%s:pc", ghost);
  for (int i = 0; i < 300; i++) {
    snprintf(life, sizeof life, "gone-%d#%016x", i, i);
    snprintf(pk, sizeof pk, "%s:p:%s", ghost, life);
    snprintf(field, sizeof field, "%d", 9000 + i);
    redisReply *x = itest_redis_key_command(0, "HSET %s %s 1", pc, life);
    cr_assert(x && x->type == REDIS_REPLY_INTEGER, "seeding a dead life failed");
    freeReplyObject(x);
    x = itest_redis_key_command(0, "HSET %s %s ghost", pk, field);
    cr_assert(x && x->type == REDIS_REPLY_INTEGER, "seeding a dead life's entry failed");
    freeReplyObject(x);
  }
  cr_assert_eq(get("/v1/presence?channel=news:api", out, sizeof out), 200, "%s", out);
  cr_expect(!strstr(out, "ghost") && strstr(out, "\"more\":true"), "%s", out);
  cr_assert_eq(get("/v1/presence?channel=news:api", out, sizeof out), 200, "%s", out);
  cr_expect(strstr(out, "\"connections\":2,") && strstr(out, "\"more\":false") &&
                strstr(out, "hana") && strstr(out, "ivan") && !strstr(out, "ghost"),
            "the second read is exact: %s", out);
  rep = itest_redis_key_command(0, "HLEN %s:pc%s", ghost, "");
  cr_expect(rep && rep->type == REDIS_REPLY_INTEGER && rep->integer == 2, "the dead deleted");
  freeReplyObject(rep);

  cr_assert_eq(
      post("/v1/publish", "", "{\"channel\":\"news:api\",\"data\":\"one\"}", out, sizeof out), 202,
      "%s", out);
  unsigned long long e1 = expect_pub(a, "news:api", 1, "one");
  cr_assert_eq(expect_pub(b, "news:api", 1, "one"), e1, "one epoch on both gateways");
  cr_assert_eq(post("/v1/batch", "",
                    "{\"commands\":[{\"command\":\"publish\",\"channel\":\"news:api\","
                    "\"data\":\"two\"},{\"command\":\"publish\",\"channel\":\"news:api\","
                    "\"data_base64\":\"AAEC\"}]}",
                    out, sizeof out),
               202, "%s", out);
  expect_pub(a, "news:api", 2, "two");
  expect_pub(b, "news:api", 2, "two");
  ws_message m;
  itest_recv(a, &m, RECV_MS);
  cr_assert(m.len > 20 && strstr((const char *)m.data, "\"offset\":3,"), "%.*s", (int)m.len,
            m.data);
  itest_recv(b, &m, RECV_MS);
  /* once: the next frames are the next publication, nothing repeated in between */
  cr_assert_eq(
      post("/v1/publish", "", "{\"channel\":\"news:api\",\"data\":\"four\"}", out, sizeof out), 202,
      "%s", out);
  expect_pub(a, "news:api", 4, "four");
  expect_pub(b, "news:api", 4, "four");
  cr_assert_eq(itest_metric(proc.http_port, "wsgate_processor_channel_publish_records_total"), 8,
               "one record per gateway per publication");

  cr_assert_eq(get("/v1/history?channel=news:api", out, sizeof out), 200, "%s", out);
  snprintf(want, sizeof want, "{\"channel\":\"news:api\",\"epoch\":%llu,\"last\":4,", e1);
  cr_assert(strstr(out, want), "no %s in %s", want, out);
  cr_assert(strstr(out, "{\"offset\":1,\"data\":\"one\"},{\"offset\":2,\"data\":\"two\"},"
                        "{\"offset\":3,\"data_base64\":\"AAEC\"},{\"offset\":4,\"data\":\"four\"}"),
            "%s", out);
  cr_assert(strstr(out, "\"more\":false") && strstr(out, "\"gap\":false"), "%s", out);
  cr_assert_eq(get("/v1/history?channel=news:api&since=1&limit=2", out, sizeof out), 200, "%s",
               out);
  cr_assert(strstr(out, "\"publications\":[{\"offset\":2,\"data\":\"two\"},{\"offset\":3,"), "%s",
            out);
  cr_assert(strstr(out, "\"more\":true"), "%s", out);
  /* a channel never published: epoch 0, nothing */
  cr_assert_eq(get("/v1/history?channel=news:none", out, sizeof out), 200, "%s", out);
  cr_assert(strstr(out, "\"epoch\":0,\"last\":0,") && strstr(out, "\"publications\":[]"), "%s",
            out);

  /* bad channel names and arguments: 400 with the field at fault */
  static const struct {
    const char *path, *field;
  } bad[] = {
      {"/v1/history", "channel"},
      {"/v1/history?channel=", "channel"},
      {"/v1/history?channel=news%01x", "channel"},
      {"/v1/presence?channel=news%C2%85x", "channel"},
      {"/v1/presence?channel=a%00b", "channel"},
      {"/v1/history?channel=news:api&limit=0", "limit"},
      {"/v1/history?channel=news:api&limit=1001", "limit"},
      {"/v1/presence?channel=news:api&limit=10001", "limit"},
      {"/v1/history?channel=news:api&since=-1", "since"},
      {"/v1/history?channel=news:api&since=1x", "since"},
      {"/v1/history?channel=news:api&from=1", "from"},
      {"/v1/info?x=1", "x"},
  };
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    cr_assert_eq(get(bad[i].path, out, sizeof out), 400, "%s: %s", bad[i].path, out);
    snprintf(want, sizeof want, "\"field\":\"%s\"", bad[i].field);
    cr_assert(strstr(out, want), "%s: %s", bad[i].path, out);
  }
  char big[400] = "{\"channel\":\"";
  memset(big + strlen(big), 'c', 201);
  strcat(big, "\",\"data\":\"x\"}");
  const char *bad_pub[] = {"{\"channel\":\"news\\u0001\",\"data\":\"x\"}",
                           "{\"channel\":\"news\\u0085\",\"data\":\"x\"}",
                           "{\"channel\":\"\",\"data\":\"x\"}",
                           big,
                           "{\"channel\":7,\"data\":\"x\"}",
                           "{\"data\":\"x\"}"};
  for (size_t i = 0; i < sizeof bad_pub / sizeof bad_pub[0]; i++) {
    cr_assert_eq(post("/v1/publish", "", bad_pub[i], out, sizeof out), 400, "%s: %s", bad_pub[i],
                 out);
    cr_assert(strstr(out, "\"field\":\"channel\""), "%s: %s", bad_pub[i], out);
  }
  ws_client_destroy(a);
  ws_client_destroy(b);
  itest_gateway_cleanup(&gw2);
}

Test(api, retried_request_is_delivered_once) {
  char out[4096];
  ws_client *a = itest_connect(&gw, "dave");
  conn_of("dave");
  const char *req = "{\"user\":\"dave\",\"data\":\"once\"}";
  for (int i = 0; i < 3; i++) {
    cr_assert_eq(post("/v1/send", "Idempotency-Key: order-7-shipped\r\n", req, out, sizeof out),
                 202, "%s", out);
    cr_assert(strstr(out, i ? "\"duplicate\":true" : "\"duplicate\":false"), "%s", out);
  }
  /* the same key with another body is refused */
  cr_assert_eq(post("/v1/send", "Idempotency-Key: order-7-shipped\r\n",
                    "{\"user\":\"dave\",\"data\":\"twice\"}", out, sizeof out),
               422, "%s", out);
  cr_assert_eq(post("/v1/send", "", "{\"user\":\"dave\",\"data\":\"marker\"}", out, sizeof out),
               202);
  itest_expect_text(a, "once", RECV_MS);
  itest_expect_text(a, "marker", RECV_MS); /* nothing in between: the retries produced nothing */
  ws_client_destroy(a);
}

Test(api, hostile_bodies_get_400_or_413_and_never_a_crash) {
  char out[4096];
  static const struct {
    const char *body;
    int status;
    const char *field;
  } cases[] = {
      {"{\"user\":\"a\",\"data\":\"x\"", 400, NULL},
      {"{\"user\":\"a\",\"data\":\"x\",\"admin\":true}", 400, "\"field\":\"admin\""},
      {"{\"user\":[\"a\"],\"data\":\"x\"}", 400, "\"field\":\"user\""},
      {"{\"user\":\"a\",\"data\":7}", 400, "\"field\":\"data\""},
      {"{\"user\":\"a\",\"data\":\"\\u0000\"}", 400, NULL},
      {"\xff\xfe", 400, NULL},
      {"", 400, NULL},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    int st = post("/v1/send", "", cases[i].body, out, sizeof out);
    cr_assert_eq(st, cases[i].status, "case %zu: %d %s", i, st, out);
    if (cases[i].field)
      cr_assert(strstr(out, cases[i].field), "case %zu: %s", i, out);
  }
  /* deeply nested */
  size_t depth = 50000;
  char *deep = malloc(depth + 1);
  memset(deep, '[', depth);
  deep[depth] = '\0';
  cr_assert_eq(post("/v1/send", "", deep, out, sizeof out), 400, "%s", out);
  free(deep);
  /* huge: over --max-body (64k) */
  size_t big = 200000;
  char *huge = malloc(big + 1);
  memset(huge, 'a', big);
  huge[big] = '\0';
  cr_assert_eq(post("/v1/send", "", huge, out, sizeof out), 413, "%s", out);
  free(huge);
  /* a payload over --max-payload (16k) inside a small enough body */
  char *payload = malloc(20000 + 64);
  int n = snprintf(payload, 64, "{\"user\":\"a\",\"data\":\"");
  memset(payload + n, 'b', 20000);
  strcpy(payload + n + 20000, "\"}");
  cr_assert_eq(post("/v1/send", "", payload, out, sizeof out), 413, "%s", out);
  free(payload);
  /* MessagePack garbage */
  cr_assert_eq(http(api.port, "POST", "/v1/send", AUTH "Content-Type: application/msgpack\r\n",
                    "\xdd\xff\xff\xff\xff", 5, out, sizeof out),
               400, "%s", out);
  /* no key, a wrong key */
  cr_assert_eq(http(api.port, "POST", "/v1/send", "Content-Type: application/json\r\n", "{}", 2,
                    out, sizeof out),
               401);
  cr_assert_eq(http(api.port, "POST", "/v1/send",
                    "Authorization: Bearer itest-secret-0123456789abcdeX\r\n", "{}", 2, out,
                    sizeof out),
               401);
  /* still serving */
  cr_assert_eq(itest_wait_http(api.ops_port, "/readyz", 200, 5000), 0);
  cr_assert_eq(post("/v1/send", "", "{\"user\":\"nobody\",\"data\":\"x\"}", out, sizeof out), 202,
               "%s", out);
}

Test(api, kafka_unavailable_is_503_with_a_reason) {
  api_proc down;
  api_start(&down, "127.0.0.1:1", false); /* nothing listens on port 1 */
  char out[4096], headers[256];
  snprintf(headers, sizeof headers, AUTH "Content-Type: application/json\r\n");
  const char *req = "{\"commands\":[{\"command\":\"send\",\"user\":\"a\",\"data\":\"1\"},"
                    "{\"command\":\"send\",\"user\":\"b\",\"data\":\"2\"}]}";
  int st = http(down.port, "POST", "/v1/batch", headers, req, strlen(req), out, sizeof out);
  cr_assert_eq(st, 503, "%s", out);
  cr_assert(strstr(out, "kafka: "), "the reason names Kafka: %s", out);
  cr_assert(strstr(out, "nothing of this request was accepted"), "%s", out);
  char ready[512];
  cr_assert_eq(itest_http_get(down.ops_port, "/readyz", ready, sizeof ready), 503);
  cr_assert(strstr(ready, "not ready: kafka: "), "%s", ready);
  api_stop(&down);
}

/* The Python example (api/examples/backend.py, standard library only) as a backend would run it. */
Test(api, python_backend_example) {
  ws_client *a = itest_connect(&gw, "erin");
  ws_client *b = itest_connect(&gw, "frank");
  conn_of("erin");
  conn_of("frank");
  char cmd[2048];
  const char *script = WSG_SOURCE_ROOT "/api/examples/backend.py";
  snprintf(cmd, sizeof cmd,
           "python3 %s --url http://127.0.0.1:%d --key %s --idempotency-key py-1 send erin "
           "'hello from python' >/dev/null && "
           "python3 %s --url http://127.0.0.1:%d --key %s --idempotency-key py-1 send erin "
           "'hello from python' >/dev/null && "
           "python3 %s --url http://127.0.0.1:%d --key %s send-users erin,frank both >/dev/null && "
           "python3 %s --url http://127.0.0.1:%d --key %s disconnect frank --code 4100 "
           "--reason done >/dev/null",
           script, api.port, SECRET, script, api.port, SECRET, script, api.port, SECRET, script,
           api.port, SECRET);
  cr_assert_eq(system(cmd), 0, "the example failed: %s", cmd);
  itest_expect_text(a, "hello from python", RECV_MS);
  itest_expect_text(a, "both", RECV_MS); /* the retry with the same key produced nothing */
  itest_expect_text(b, "both", RECV_MS);
  itest_expect_close(b, 4100, RECV_MS);
  /* a bad key: exit status 1 and the API's reason on stderr */
  snprintf(cmd, sizeof cmd,
           "python3 %s --url http://127.0.0.1:%d --key wrong-key-0123456789 send erin x "
           "2>/dev/null",
           script, api.port);
  cr_assert_neq(system(cmd), 0);
  ws_client_destroy(a);
  ws_client_destroy(b);
}

/* wsgate-admin's API commands call the API. */
Test(api, admin_tool_calls_the_api) {
  ws_client *a = itest_connect(&gw, "gina");
  conn_of("gina");
  char cmd[2048];
  const char *admin = itest_bin("WSGATE_ADMIN_BIN");
  snprintf(cmd, sizeof cmd,
           "WSGATE_API_KEY=%s %s --api-url http://127.0.0.1:%d send gina 'from the shell' "
           ">/dev/null && "
           "%s --api-url http://127.0.0.1:%d --api-key %s disconnect gina --code 4100 "
           "--reason bye >/dev/null",
           SECRET, admin, api.port, admin, api.port, SECRET);
  cr_assert_eq(system(cmd), 0, "%s", cmd);
  itest_expect_text(a, "from the shell", RECV_MS);
  itest_expect_close(a, 4100, RECV_MS);
  /* info lists the test's gateway */
  snprintf(cmd, sizeof cmd,
           "%s --api-url http://127.0.0.1:%d --api-key %s info | grep -q '\"id\":\"%s\"'", admin,
           api.port, SECRET, gw.id);
  cr_assert_eq(system(cmd), 0, "%s", cmd);
  /* publish, presence and history */
  ws_client *j = itest_connect_channels(&gw, "jill", "[\"*\"]");
  subscribe(j, "news:admin");
  snprintf(cmd, sizeof cmd,
           "%s --api-url http://127.0.0.1:%d --api-key %s publish news:admin 'to all' >/dev/null",
           admin, api.port, SECRET);
  cr_assert_eq(system(cmd), 0, "%s", cmd);
  expect_pub(j, "news:admin", 1, "to all");
  snprintf(cmd, sizeof cmd,
           "%s --api-url http://127.0.0.1:%d --api-key %s presence news:admin --limit 5 | "
           "grep -q '\"user\":\"jill\"'",
           admin, api.port, SECRET);
  cr_assert_eq(system(cmd), 0, "%s", cmd);
  snprintf(cmd, sizeof cmd,
           "%s --api-url http://127.0.0.1:%d --api-key %s history news:admin --since 0 --limit 5 "
           "| grep -q '\"publications\":\\[{\"offset\":1,\"data\":\"to all\"}\\]'",
           admin, api.port, SECRET);
  cr_assert_eq(system(cmd), 0, "%s", cmd);
  snprintf(cmd, sizeof cmd,
           "%s --api-url http://127.0.0.1:%d --api-key %s history news:admin --limit 0 "
           ">/dev/null 2>&1",
           admin, api.port, SECRET);
  cr_assert_eq(WEXITSTATUS(system(cmd)), 1, "a 400 is a failure");
  ws_client_destroy(j);
  /* an error answer: exit status 1 */
  snprintf(cmd, sizeof cmd,
           "%s --api-url http://127.0.0.1:%d --api-key wrong-key-0123456789 info >/dev/null 2>&1",
           admin, api.port);
  cr_assert_eq(WEXITSTATUS(system(cmd)), 1, "a 401 is a failure");
  ws_client_destroy(a);
}

/* A presence read whose DROP of dead gateway lives Redis refuses (here the API's ACL user may not
 * UNLINK) still answers without them; the failure is counted and logged, and the entries stay for
 * the next reader. On a private Redis: the ACL user is its own. */
Test(api, failed_presence_drop_is_counted_and_the_read_answers) {
  itest_redis_server srv = {0};
  itest_redis_server_start(&srv, 0);
  itest_track(srv.pid, srv.log);
  redisContext *r = itest_redis_connect_port(srv.port);
  cr_assert(r);
  redisReply *rep = itest_redis_cmd(r, "ACL SETUSER api-nodrop on >nodrop ~* +@all -unlink");
  cr_assert(rep && rep->type == REDIS_REPLY_STATUS, "ACL SETUSER failed");
  freeReplyObject(rep);
  char ch[256];
  snprintf(ch, sizeof ch, "%sch:{c:news:nodrop}", cl.prefix);
  freeReplyObject(itest_redis_cmd(r, "HSET %s:pc gw-gone#0000000000000001 1", ch));
  freeReplyObject(itest_redis_cmd(r, "HSET %s:p:gw-gone#0000000000000001 777 ghost", ch));
  api_proc st;
  api_start_with(
      &st, itest_kafka_bootstrap(), true, srv.port,
      (const char *const[]){"--redis-user", "api-nodrop", "--redis-password", "nodrop", NULL});
  char out[4096];
  for (int i = 0; i < 2; i++) { /* the second read finds the dead life again */
    cr_assert_eq(
        http(st.port, "GET", "/v1/presence?channel=news:nodrop", AUTH, "", 0, out, sizeof out), 200,
        "%s", out);
    cr_assert(strstr(out, "\"connections\":0,") && !strstr(out, "ghost"), "%s", out);
  }
  cr_expect_eq(itest_metric(st.ops_port, "wsgate_api_presence_drops_total{result=\"error\"}"), 2);
  cr_expect_eq(itest_metric(st.ops_port, "wsgate_api_presence_drops_total{result=\"ok\"}"), 0);
  rep = itest_redis_cmd(r, "EXISTS %s:p:gw-gone#0000000000000001", ch);
  cr_expect(rep && rep->type == REDIS_REPLY_INTEGER && rep->integer == 1,
            "left to the next reader");
  freeReplyObject(rep);
  static char log[4 << 20]; /* --log-level debug: room for the whole log */
  cr_expect(itest_read_file(st.log, log, sizeof log) &&
                strstr(log, "deleting dead gateways' entries failed"),
            "the failure is logged (%s)", st.log);
  api_stop(&st);
  redisFree(r);
  itest_untrack(srv.pid);
  itest_redis_server_stop(&srv, SIGKILL);
}

/* A Redis that stops answering (SIGSTOP: the socket stays open, only a deadline can tell):
 * every read answers 503 with the reason within about --redis-timeout, a request that needs an
 * Idempotency-Key too (nothing produced), the service stays up, and the next request after the
 * stall is served again. */
Test(api, stalled_redis_is_503_with_a_reason_never_a_hang) {
  itest_redis_server srv = {0};
  itest_redis_server_start(&srv, 0);
  itest_track(srv.pid, srv.log);
  api_proc st;
  api_start_with(&st, itest_kafka_bootstrap(), true, srv.port,
                 (const char *const[]){"--redis-timeout", "500ms", NULL});
  char out[4096];
  cr_assert_eq(http(st.port, "GET", "/v1/history?channel=news:stall", AUTH, "", 0, out, sizeof out),
               200, "%s", out);
  cr_assert_eq(kill(srv.pid, SIGSTOP), 0);
  static const char *const paths[] = {"/v1/info", "/v1/presence?channel=news:stall",
                                      "/v1/history?channel=news:stall"};
  for (int round = 0; round < 2; round++) { /* the thread's connection, then a new one */
    for (size_t i = 0; i < sizeof paths / sizeof paths[0]; i++) {
      uint64_t t0 = itest_now_ms();
      int code = http(st.port, "GET", paths[i], AUTH, "", 0, out, sizeof out);
      uint64_t took = itest_now_ms() - t0;
      cr_assert_eq(code, 503, "%s: %d %s", paths[i], code, out);
      cr_assert(strstr(out, "\"error\":\"redis: "), "%s: the reason names Redis: %s", paths[i],
                out);
      cr_assert_lt(took, 3000, "%s answered after %llu ms (--redis-timeout 500ms)", paths[i],
                   (unsigned long long)took);
    }
  }
  char headers[256];
  snprintf(headers, sizeof headers,
           AUTH "Content-Type: application/json\r\nIdempotency-Key: stall-1\r\n");
  const char *req = "{\"user\":\"nobody\",\"data\":\"x\"}";
  cr_assert_eq(http(st.port, "POST", "/v1/send", headers, req, strlen(req), out, sizeof out), 503,
               "%s", out);
  cr_assert(strstr(out, "nothing accepted"), "%s", out);
  cr_assert_eq(itest_http_get(st.ops_port, "/healthz", NULL, 0), 200);
  cr_assert_eq(kill(srv.pid, SIGCONT), 0);
  cr_assert_eq(http(st.port, "GET", "/v1/history?channel=news:stall", AUTH, "", 0, out, sizeof out),
               200, "after the stall: %s", out);
  /* The claim written while Redis was stopped ran when it resumed: until it expires (60 s), a
   * retry is told to retry later, never produced twice. */
  int retry = http(st.port, "POST", "/v1/send", headers, req, strlen(req), out, sizeof out);
  cr_assert(retry == 409 || retry == 202, "retry after the stall: %d %s", retry, out);
  cr_log_info("a retry with the stalled request's Idempotency-Key: %d", retry);
  /* Redis gone (connection refused): at once. */
  itest_untrack(srv.pid);
  itest_redis_server_stop(&srv, SIGKILL);
  for (size_t i = 0; i < sizeof paths / sizeof paths[0]; i++) {
    uint64_t t0 = itest_now_ms();
    cr_assert_eq(http(st.port, "GET", paths[i], AUTH, "", 0, out, sizeof out), 503, "%s", out);
    cr_assert(strstr(out, "\"error\":\"redis: "), "%s: %s", paths[i], out);
    cr_assert_lt(itest_now_ms() - t0, 1000, "%s with Redis down", paths[i]);
  }
  api_stop(&st);
}

/* The primary (port) and its first replica serving `slot`, as the cluster's seed sees them. */
static void slot_nodes(uint16_t slot, int *primary, int *replica, int *primaries) {
  redisContext *c = itest_redis_connect();
  redisReply *r = redisCommand(c, "CLUSTER SLOTS");
  cr_assert(r && r->type == REDIS_REPLY_ARRAY, "CLUSTER SLOTS: %s", r ? r->str : c->errstr);
  int ports[64], n = 0;
  *primary = *replica = 0;
  for (size_t i = 0; i < r->elements; i++) {
    redisReply *e = r->element[i];
    int port = (int)e->element[2]->element[1]->integer;
    bool seen = false;
    for (int k = 0; k < n; k++)
      seen |= ports[k] == port;
    if (!seen && n < 64)
      ports[n++] = port;
    if (e->element[0]->integer <= slot && slot <= e->element[1]->integer) {
      *primary = port;
      *replica = e->elements > 3 ? (int)e->element[3]->element[1]->integer : 0;
    }
  }
  freeReplyObject(r);
  redisFree(c);
  *primaries = n;
}

/* On a Redis Cluster: wsgate-api exports the cluster series of the gateway and the processor
 * (wsgate_api_redis_*). A manual failover of the primary of a channel's slot: the API's next read
 * there is redirected (MOVED), counted, the map re-read, and the answer is still 200. */
Test(api, cluster_metrics_follow_a_failover, .timeout = 120) {
  if (itest_redis_cluster_seed() == NULL)
    cr_skip_test("WSGATE_TEST_REDIS_CLUSTER is not set (scripts/redis start --cluster)");
  api_proc one; /* one request thread: its slot map is the one read before the failover */
  api_start_with(&one, itest_kafka_bootstrap(), true, 0,
                 (const char *const[]){"--threads", "1", NULL});
  char channel[64], key[256], path[128], out[4096];
  snprintf(channel, sizeof channel, "news:fo%d", (int)getpid());
  snprintf(key, sizeof key, "%sch:{c:%s}:h", cl.prefix, channel);
  snprintf(path, sizeof path, "/v1/history?channel=%s", channel);
  uint16_t slot = wsg_redis_key_slot(key, strlen(key));
  int primary, replica, primaries;
  slot_nodes(slot, &primary, &replica, &primaries);
  cr_assert(primary > 0 && replica > 0, "slot %u: primary :%d, replica :%d", slot, primary,
            replica);

  cr_assert_eq(http(one.port, "GET", path, AUTH, "", 0, out, sizeof out), 200, "%s", out);
  cr_assert_eq(itest_metric(one.ops_port, "wsgate_api_redis_primaries"), primaries);
  double reads0 = itest_metric(one.ops_port, "wsgate_api_redis_slot_map_reads_total");
  cr_assert_geq(reads0, 1);
  cr_assert_eq(itest_metric(one.ops_port, "wsgate_api_redis_redirects_total{kind=\"moved\"}"), 0);
  cr_assert_eq(itest_metric(one.ops_port, "wsgate_api_redis_redirects_total{kind=\"ask\"}"), 0);

  redisContext *rc = itest_redis_connect_port(replica);
  cr_assert_not_null(rc);
  redisReply *r = redisCommand(rc, "CLUSTER FAILOVER");
  cr_assert(r && r->type == REDIS_REPLY_STATUS, "CLUSTER FAILOVER on :%d: %s", replica,
            r ? r->str : rc->errstr);
  freeReplyObject(r);
  redisFree(rc);
  /* Done when the old primary itself names the new owner (it answers MOVED from then on). */
  int owner = 0;
  for (int i = 0; i < 300 && owner != replica; i++) {
    redisContext *old = itest_redis_connect_port(primary);
    r = old ? redisCommand(old, "CLUSTER SLOTS") : NULL;
    for (size_t k = 0; r && r->type == REDIS_REPLY_ARRAY && k < r->elements; k++)
      if (r->element[k]->element[0]->integer <= slot && slot <= r->element[k]->element[1]->integer)
        owner = (int)r->element[k]->element[2]->element[1]->integer;
    freeReplyObject(r);
    if (old)
      redisFree(old);
    if (owner != replica)
      usleep(50 * 1000);
  }
  cr_assert_eq(owner, replica, "slot %u still on :%d after CLUSTER FAILOVER", slot, owner);

  cr_assert_eq(http(one.port, "GET", path, AUTH, "", 0, out, sizeof out), 200, "%s", out);
  cr_assert_eq(itest_metric(one.ops_port, "wsgate_api_redis_redirects_total{kind=\"moved\"}"), 1,
               "the read went to the old primary and was redirected once");
  cr_assert_gt(itest_metric(one.ops_port, "wsgate_api_redis_slot_map_reads_total"), reads0,
               "a MOVED re-reads the map");
  cr_assert_eq(itest_metric(one.ops_port, "wsgate_api_redis_primaries"), primaries);
  api_stop(&one);
}

/* An INFO field of the node on `port` ("" if absent). */
static void node_info(int port, const char *field, char *out, size_t len) {
  redisContext *c = itest_redis_connect_port(port);
  cr_assert_not_null(c, "cannot connect to :%d", port);
  redisReply *r = redisCommand(c, "INFO");
  char want[64];
  snprintf(want, sizeof want, "\r\n%s:", field);
  const char *at = r && r->type == REDIS_REPLY_STRING ? strstr(r->str, want) : NULL;
  size_t n = at ? strcspn(at + strlen(want), "\r") : 0;
  snprintf(out, len, "%.*s", (int)n, at ? at + strlen(want) : "");
  freeReplyObject(r);
  redisFree(c);
}

/* On a Redis Cluster, the primary of a channel's slot stops answering (SIGSTOP: its socket stays
 * open) until its replica takes over (cluster-node-timeout): every read meanwhile answers 503
 * with the reason within a few --redis-timeout, never hangs, and reads answer 200 again once the
 * replica serves the slot. */
Test(api, cluster_primary_stalled_is_503_until_its_replica_serves, .timeout = 120) {
  if (itest_redis_cluster_seed() == NULL)
    cr_skip_test("WSGATE_TEST_REDIS_CLUSTER is not set (scripts/redis start --cluster)");
  api_proc one;
  api_start_with(&one, itest_kafka_bootstrap(), true, 0,
                 (const char *const[]){"--threads", "1", "--redis-timeout", "500ms", NULL});
  char channel[64], key[256], path[128], out[4096], pid[32];
  snprintf(channel, sizeof channel, "news:st%d", (int)getpid());
  snprintf(key, sizeof key, "%sch:{c:%s}:h", cl.prefix, channel);
  snprintf(path, sizeof path, "/v1/history?channel=%s", channel);
  int primary, replica, primaries;
  slot_nodes(wsg_redis_key_slot(key, strlen(key)), &primary, &replica, &primaries);
  cr_assert(primary > 0 && replica > 0, "primary :%d, replica :%d", primary, replica);
  cr_assert_eq(http(one.port, "GET", path, AUTH, "", 0, out, sizeof out), 200, "%s", out);
  node_info(primary, "process_id", pid, sizeof pid);
  cr_assert_gt(atoi(pid), 0, "no process_id from :%d", primary);

  cr_assert_eq(kill(atoi(pid), SIGSTOP), 0);
  stopped_node = atoi(pid);
  uint64_t t0 = itest_now_ms(), slowest = 0, back = 0;
  int refused = 0;
  while (back == 0 && itest_now_ms() - t0 < 30000) {
    uint64_t t = itest_now_ms();
    int code = http(one.port, "GET", path, AUTH, "", 0, out, sizeof out);
    uint64_t took = itest_now_ms() - t;
    slowest = took > slowest ? took : slowest;
    cr_assert(code == 200 || code == 503, "%d %s", code, out);
    if (code == 503) {
      cr_assert(strstr(out, "\"error\":\"redis: "), "the reason names Redis: %s", out);
      refused++;
    } else if (refused > 0) {
      back = itest_now_ms() - t0;
    }
    cr_assert_lt(took, 4000, "a read took %llu ms (--redis-timeout 500ms)",
                 (unsigned long long)took);
  }
  cr_assert_gt(refused, 0, "no read failed while the slot's primary was stopped");
  cr_assert_gt(back, 0, "reads still fail %llu ms after the primary stopped",
               (unsigned long long)(itest_now_ms() - t0));
  cr_log_info("primary :%d stopped: %d reads answered 503 (slowest %llu ms), 200 again after "
              "%llu ms",
              primary, refused, (unsigned long long)slowest, (unsigned long long)back);

  /* Resumed, it rejoins as a replica: the cluster is whole again for the next test. */
  kill(stopped_node, SIGCONT);
  stopped_node = 0;
  char role[32] = "";
  for (int i = 0; i < 200 && strcmp(role, "slave") != 0; i++) {
    usleep(100 * 1000);
    node_info(primary, "role", role, sizeof role);
  }
  cr_assert_str_eq(role, "slave", ":%d did not rejoin as a replica", primary);
  api_stop(&one);
}
