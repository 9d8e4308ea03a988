/*
 * The gateway's upgrade checks against the real binary: a valid token (header or query) is
 * accepted; a missing, malformed, badly signed, expired or alg=none token gets 401 with a JSON
 * body and WWW-Authenticate; a foreign Origin 403; an unknown subprotocol 400; and none of the
 * refused attempts writes to Redis or produces to Kafka. Also: plain HTTP on the WebSocket port,
 * h2c and non-websocket upgrades (the CVE-2025-11677 path) and --insecure-dev-user.
 */
#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "harness_kafka.h"
#include "gw_jwt.h"
#include "harness.h"

static itest_gateway gw;
static itest_reader rd;

static void teardown(void) {
  itest_reader_close(&rd);
  itest_gateway_cleanup(&gw);
}

TestSuite(gateway_auth, .fini = teardown, .timeout = 120);

/* Attempts an upgrade with one extra header line (or none) and a path; returns the HTTP status. */
static int try_upgrade(const char *path, const char *header, ws_http_response *resp) {
  const char *headers[] = {header, NULL};
  ws_client *c = NULL;
  int rc = itest_connect_raw(&gw, path, header ? headers : NULL, "wsgate.v1", &c, resp);
  ws_client_destroy(c);
  if (rc == WS_CLIENT_OK)
    return 101;
  cr_assert_eq(rc, WS_CLIENT_REFUSED, "upgrade neither accepted nor refused: %s",
               ws_client_strerror(rc));
  return resp->status;
}

static void expect_401(const char *what, const char *path, const char *header, const char *error) {
  ws_http_response resp;
  int st = try_upgrade(path, header, &resp);
  cr_assert_eq(st, 401, "%s: status %d, expected 401", what, st);
  /* libwebsockets alone would answer "HTTP/1.0" here, which strict clients reject outright. */
  cr_assert(strncmp(resp.headers, "HTTP/1.1 401 Unauthorized\r\n", 27) == 0,
            "%s: status line is not HTTP/1.1: %.40s", what, resp.headers);
  cr_assert(strcasestr(resp.headers, "\r\nconnection: close\r\n"), "%s: no Connection: close: %s",
            what, resp.headers);
  cr_assert(strstr(resp.body, error), "%s: body %s lacks %s", what, resp.body, error);
  cr_assert(strstr(resp.headers, "Bearer realm=\"wsgate\"") ||
                strstr(resp.headers, "bearer realm=\"wsgate\""),
            "%s: no WWW-Authenticate: %s", what, resp.headers);
}

static char *bearer(const char *token) {
  static char buf[9000];
  snprintf(buf, sizeof buf, "Authorization: Bearer %s", token);
  return buf;
}

Test(gateway_auth, bad_tokens_get_401_and_leave_no_trace) {
  itest_gateway_start(&gw, NULL, "auth", NULL);
  char tok[2048];
  char claims[256];

  expect_401("no token", "/", NULL, "missing_token");
  expect_401("garbage", "/", bearer("not.a.token"), "invalid_token");
  expect_401("basic auth", "/", "Authorization: Basic dXNlcjpwYXNz", "invalid_token");

  snprintf(claims, sizeof claims, "{\"sub\":\"mallory\",\"exp\":%lld}",
           (long long)time(NULL) + 300);
  const char *wrong = "another-secret-that-is-long-enough-0123456789";
  cr_assert(gw_jwt_sign((const uint8_t *)wrong, strlen(wrong), claims, tok, sizeof tok) > 0);
  expect_401("wrong secret", "/", bearer(tok), "signature");

  expect_401("expired", "/", bearer(itest_token("mallory", -3600)), "expired");

  cr_assert(gw_jwt_sign_with_header((const uint8_t *)ITEST_JWT_SECRET, strlen(ITEST_JWT_SECRET),
                                    "{\"alg\":\"none\",\"typ\":\"JWT\"}", claims, tok,
                                    sizeof tok) > 0);
  expect_401("alg none", "/", bearer(tok), "HS256");
  /* The same token without its signature, as an alg=none token is usually sent. */
  char *last_dot = strrchr(tok, '.');
  last_dot[1] = '\0';
  expect_401("alg none unsigned", "/", bearer(tok), "invalid_token");

  snprintf(claims, sizeof claims, "{\"exp\":%lld}", (long long)time(NULL) + 300);
  cr_assert(gw_jwt_sign((const uint8_t *)ITEST_JWT_SECRET, strlen(ITEST_JWT_SECRET), claims, tok,
                        sizeof tok) > 0);
  expect_401("no user claim", "/", bearer(tok), "user claim");

  char path[2100];
  snprintf(path, sizeof path, "/?token=%s", itest_token("mallory", -10000));
  expect_401("expired in query", path, NULL, "expired");
  cr_assert_eq(itest_metric(gw.http_port, "wsgate_gateway_upgrades_total{result=\"unauthorized\"}"),
               9);

  /* Nothing of mallory reached Redis. */
  redisContext *r = itest_redis_connect();
  redisReply *rep = redisCommand(r, "EXISTS %suser:mallory", gw.cluster.prefix);
  cr_assert(rep && rep->type == REDIS_REPLY_INTEGER && rep->integer == 0);
  freeReplyObject(rep);
  redisFree(r);

  /* Nor Kafka: the first envelope on the inbound topic is the next accepted client's. */
  snprintf(path, sizeof path, "/?token=%s", itest_token("zed", 300));
  ws_client *c = NULL;
  ws_http_response resp;
  cr_assert_eq(itest_connect_raw(&gw, path, NULL, NULL, &c, &resp), WS_CLIENT_OK,
               "a valid token in the query was refused: %d %s", resp.status, resp.body);
  itest_reader_open(&rd, gw.cluster.in_topic, gw.cluster.in_partitions);
  wsg_envelope e;
  cr_assert(itest_reader_next_envelope(&rd, &e, ITEST_TIMEOUT_MS, NULL), "no envelope for zed");
  cr_assert_eq(e.kind, WSG_ENV_CONNECT);
  cr_assert(e.user_len == 3 && memcmp(e.user, "zed", 3) == 0, "first envelope is not zed's");
  ws_client_destroy(c);
  cr_assert_eq(itest_metric(gw.http_port, "wsgate_gateway_upgrades_total{result=\"ok\"}"), 1);
}

Test(gateway_auth, origin_and_subprotocol) {
  const char *extra[] = {"--allowed-origins", "https://app.example.com, https://admin.example.com",
                         NULL};
  itest_gateway_start(&gw, NULL, "origin", &(itest_daemon_opts){.extra = extra});
  char auth[2100];
  snprintf(auth, sizeof auth, "Authorization: Bearer %s", itest_token("olga", 300));
  ws_http_response resp;
  ws_client *c = NULL;

  const char *evil[] = {auth, "Origin: https://evil.example.com", NULL};
  cr_assert_eq(itest_connect_raw(&gw, "/", evil, "wsgate.v1", &c, &resp), WS_CLIENT_REFUSED);
  cr_assert_eq(resp.status, 403);
  cr_assert(strstr(resp.body, "forbidden_origin"), "%s", resp.body);

  const char *good[] = {auth, "Origin: https://APP.example.com", NULL};
  cr_assert_eq(itest_connect_raw(&gw, "/", good, "wsgate.v1", &c, &resp), WS_CLIENT_OK,
               "allowed origin refused: %d %s", resp.status, resp.body);
  ws_client_destroy(c);

  const char *none[] = {auth, NULL}; /* not a browser: judged by its token */
  cr_assert_eq(itest_connect_raw(&gw, "/", none, "wsgate.v1", &c, &resp), WS_CLIENT_OK);
  ws_client_destroy(c);

  cr_assert_eq(itest_connect_raw(&gw, "/", none, "chat.v2", &c, &resp), WS_CLIENT_REFUSED);
  cr_assert_eq(resp.status, 400);
  cr_assert(strstr(resp.body, "wsgate.v1"), "%s", resp.body);

  cr_assert_eq(itest_connect_raw(&gw, "/", none, "chat.v2, wsgate.v1", &c, &resp), WS_CLIENT_OK);
  cr_assert_str_eq(resp.protocol, "wsgate.v1");
  ws_client_destroy(c);

  cr_assert_eq(itest_connect_raw(&gw, "/", none, NULL, &c, &resp), WS_CLIENT_OK,
               "no subprotocol at all must be accepted");
  ws_client_destroy(c);
  cr_assert_eq(
      itest_metric(gw.http_port, "wsgate_gateway_upgrades_total{result=\"forbidden_origin\"}"), 1);
}

/* Writes a raw request and returns what the server sent until it closed (or 3 s passed). */
static size_t raw_exchange(int port, const char *req, char *out, size_t cap) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  cr_assert(fd >= 0);
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  cr_assert_eq(connect(fd, (struct sockaddr *)&a, sizeof a), 0);
  cr_assert_eq(write(fd, req, strlen(req)), (ssize_t)strlen(req));
  size_t n = 0;
  uint64_t deadline = itest_now_ms() + 3000;
  while (n + 1 < cap && itest_now_ms() < deadline) {
    struct pollfd p = {.fd = fd, .events = POLLIN};
    if (poll(&p, 1, 100) <= 0)
      continue;
    ssize_t r = read(fd, out + n, cap - 1 - n);
    if (r <= 0)
      break;
    n += (size_t)r;
  }
  out[n] = '\0';
  close(fd);
  return n;
}

Test(gateway_auth, plain_http_h2c_and_odd_upgrades_are_refused) {
  itest_gateway_start(&gw, NULL, "odd", NULL);
  char buf[4096];
  raw_exchange(gw.port, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n", buf, sizeof buf);
  cr_assert(strstr(buf, " 426"), "plain GET: %s", buf);

  raw_exchange(gw.port,
               "GET / HTTP/1.1\r\nHost: x\r\nConnection: Upgrade, HTTP2-Settings\r\n"
               "Upgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n",
               buf, sizeof buf);
  cr_assert(!strstr(buf, " 101"), "h2c upgrade accepted: %s", buf);

  /* CVE-2025-11677's trigger: a second, pipelined request on the same connection with an
   * Upgrade that is not websocket. The gateway closes after the first answer; under ASan a
   * use-after-free here would kill it. */
  raw_exchange(gw.port,
               "GET / HTTP/1.1\r\nHost: x\r\n\r\n"
               "GET / HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: foo\r\n\r\n",
               buf, sizeof buf);
  raw_exchange(gw.port,
               "GET / HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: foo\r\n"
               "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
               buf, sizeof buf);
  cr_assert(!strstr(buf, " 101"), "Upgrade: foo accepted: %s", buf);
  cr_assert_eq(itest_http_get(gw.http_port, "/healthz", NULL, 0), 200, "the gateway died");
  cr_assert(itest_alive(gw.pid, NULL));
}

Test(gateway_auth, insecure_dev_user) {
  /* Without a token ?user= names the user; a token that is sent is still verified. */
  const char *extra[] = {"--insecure-dev-user", NULL};
  itest_gateway_start(&gw, NULL, "dev", &(itest_daemon_opts){.extra = extra});
  itest_reader_open(&rd, gw.cluster.in_topic, gw.cluster.in_partitions);
  ws_client *c = NULL;
  ws_http_response resp;
  cr_assert_eq(itest_connect_raw(&gw, "/?user=dev-1", NULL, "wsgate.v1", &c, &resp), WS_CLIENT_OK,
               "%d %s", resp.status, resp.body);
  wsg_envelope e;
  itest_reader_expect(&rd, WSG_ENV_CONNECT, "dev-1", &e, ITEST_TIMEOUT_MS);
  ws_client_destroy(c);
  expect_401("dev mode without user", "/", NULL, "missing_token");
  expect_401("dev mode, bad token", "/?user=dev-2", bearer("x.y.z"), "invalid_token");
  char log[65536];
  cr_assert(itest_read_file(gw.log, log, sizeof log), "cannot read %s", gw.log);
  cr_assert(strstr(log, "INSECURE"), "no warning for the insecure upgrade in the log");
}
