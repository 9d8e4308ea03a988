/*
 * Tokens expiring on live connections (gw_expiry, docs/PROTOCOL.md "Token refresh"): a
 * connection whose 3-second token expires gets {"wsgate":"refresh_required"}; a refresh op with a
 * token of another user is refused with an error answer, one with a new token of the same user
 * (JSON, then MessagePack) is answered "refreshed" and the connection stays open past the grace;
 * a connection that does not refresh is closed with 4003. A refresh also replaces the
 * connection's channel permissions with the new token's.
 */
#include <criterion/criterion.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "gw_jwt.h"

#include "harness.h"
#include "harness_daemons.h"

#define GRACE_S 3

static itest_gateway gw;

static void teardown(void) {
  itest_gateway_cleanup(&gw);
}

TestSuite(gateway_expiry, .fini = teardown, .timeout = 120);

static ws_client *connect_with(const char *token) {
  char auth[4200];
  snprintf(auth, sizeof auth, "Authorization: Bearer %s", token);
  const char *headers[] = {auth, NULL};
  ws_client *c = NULL;
  ws_http_response resp;
  int rc = itest_connect_raw(&gw, "/", headers, "wsgate.v1", &c, &resp);
  cr_assert_eq(rc, WS_CLIENT_OK, "upgrade: %s (%d %s)", ws_client_strerror(rc), resp.status,
               resp.body);
  return c;
}

/* The next message's text (NUL-terminated copy) within timeout_ms. */
static void recv_text(ws_client *c, char *out, size_t cap, int timeout_ms) {
  ws_message m;
  itest_recv(c, &m, timeout_ms);
  snprintf(out, cap, "%.*s", (int)m.len, (const char *)m.data);
}

static void send_refresh(ws_client *c, const char *token) {
  char op[4200];
  int n = snprintf(op, sizeof op, "{\"wsgate\":\"refresh\",\"id\":7,\"token\":\"%s\"}", token);
  cr_assert_eq(ws_client_send_text(c, op, (size_t)n), 0);
}

/* The same op in MessagePack: {"wsgate":"refresh","token":<token>}. */
static void send_refresh_msgpack(ws_client *c, const char *token) {
  uint8_t op[4200];
  size_t tl = strlen(token), n = 0;
  cr_assert(tl < 65536);
  op[n++] = 0x82;
  memcpy(op + n, "\xa6wsgate\xa7refresh\xa5token\xda", 22);
  n += 22;
  op[n++] = (uint8_t)(tl >> 8);
  op[n++] = (uint8_t)tl;
  memcpy(op + n, token, tl);
  n += tl;
  cr_assert_eq(ws_client_send(c, WS_OP_BINARY, op, n), 0);
}

Test(gateway_expiry, refresh_keeps_the_connection_and_no_refresh_closes_it) {
  itest_require_servers();
  const char *extra[] = {"--token-refresh-grace", "3s", "--jwt-leeway", "0s", NULL};
  itest_gateway_start(&gw, NULL, "expiry", &(itest_daemon_opts){.extra = extra});
  ws_client *keeper = connect_with(itest_token("alice", 3));
  ws_client *idler = connect_with(itest_token("carol", 3));

  char text[1024];
  recv_text(keeper, text, sizeof text, 8000);
  cr_assert(strstr(text, "\"wsgate\":\"refresh_required\""), "not a refresh request: %s", text);
  cr_assert(strstr(text, "\"grace_s\":3"), "%s", text);

  send_refresh(keeper, itest_token("bob", 600));
  recv_text(keeper, text, sizeof text, 5000);
  cr_assert(strstr(text, "\"wsgate\":\"error\"") && strstr(text, "\"code\":\"wrong_user\"") &&
                strstr(text, "\"id\":7"),
            "another user's token: %s", text);
  send_refresh(keeper, itest_token("alice", -100));
  recv_text(keeper, text, sizeof text, 5000);
  cr_assert(strstr(text, "\"code\":\"invalid_token\""), "an expired token: %s", text);
  send_refresh(keeper, itest_token("alice", 600));
  recv_text(keeper, text, sizeof text, 5000);
  cr_assert(strstr(text, "\"wsgate\":\"refreshed\"") && strstr(text, "\"exp\":"), "%s", text);

  /* The idler never refreshes: closed with 4003 once the grace is over. */
  ws_message m;
  uint64_t start = itest_now_ms();
  int rc;
  do
    rc = ws_client_recv(idler, &m, 10000);
  while (rc == 0 && m.opcode != WS_OP_CLOSE);
  cr_assert_eq(rc, 0, "no close frame: %s", ws_client_strerror(rc));
  cr_assert_eq(m.close_code, 4003, "close code %u (%s)", m.close_code, m.close_reason);
  cr_assert_lt(itest_now_ms() - start, (GRACE_S + 4) * 1000);

  /* The keeper stays past its grace and can refresh again, in MessagePack. */
  cr_assert_eq(ws_client_recv(keeper, &m, (GRACE_S + 2) * 1000), WS_CLIENT_TIMEOUT,
               "the refreshed connection got something after its old grace");
  send_refresh_msgpack(keeper, itest_token("alice", 600));
  itest_recv(keeper, &m, 5000);
  cr_assert_eq(m.opcode, WS_OP_BINARY);
  cr_assert(m.len > 20 && memmem(m.data, m.len, "\xa9refreshed", 10), "msgpack answer");

  cr_assert_eq(itest_metric(gw.http_port, "wsgate_gateway_token_refresh_requests_total"), 2);
  cr_assert_eq(itest_metric(gw.http_port, "wsgate_gateway_token_expiry_closes_total"), 1);
  cr_assert_eq(itest_metric(gw.http_port, "wsgate_gateway_token_refreshes_total{result=\"ok\"}"),
               2);
  cr_assert_eq(
      itest_metric(gw.http_port, "wsgate_gateway_token_refreshes_total{result=\"wrong_user\"}"), 1);
  cr_assert_eq(itest_metric(gw.http_port, "wsgate_gateway_closes_total{code=\"4003\"}"), 1);
  ws_client_destroy(keeper);
  ws_client_destroy(idler);
}

/* An HS256 token for alice with a channels claim. */
static const char *token_with_channels(const char *claim_json) {
  static char tok[2048];
  char claims[256];
  snprintf(claims, sizeof claims, "{\"sub\":\"alice\",\"exp\":%ld,\"channels\":%s}",
           (long)time(NULL) + 300, claim_json);
  cr_assert_gt(gw_jwt_sign((const uint8_t *)ITEST_JWT_SECRET, strlen(ITEST_JWT_SECRET), claims, tok,
                           sizeof tok),
               0);
  return tok;
}

/* Subscribes and returns whether it was allowed. */
static bool subscribe(ws_client *c, const char *channel) {
  char op[256], text[1024];
  int n = snprintf(op, sizeof op, "{\"wsgate\":\"subscribe\",\"channel\":\"%s\"}", channel);
  cr_assert_eq(ws_client_send_text(c, op, (size_t)n), 0);
  recv_text(c, text, sizeof text, 5000);
  cr_assert(strstr(text, "\"subscribed\"") || strstr(text, "\"forbidden\""), "%s", text);
  return strstr(text, "\"subscribed\"") != NULL;
}

Test(gateway_expiry, refresh_replaces_channel_permissions) {
  itest_require_servers();
  itest_gateway_start(&gw, NULL, "expiry-chperm", NULL);
  ws_client *c = connect_with(token_with_channels("[\"news:*\"]"));
  cr_assert(subscribe(c, "news:eu"));
  cr_assert(!subscribe(c, "sports:eu"));

  char text[1024];
  send_refresh(c, token_with_channels("[\"sports:*\"]"));
  recv_text(c, text, sizeof text, 5000);
  cr_assert(strstr(text, "\"refreshed\""), "%s", text);
  cr_assert(subscribe(c, "sports:eu"), "the new token's channels are not allowed");
  cr_assert(!subscribe(c, "news:us"), "the old token's channels are still allowed");
  ws_client_destroy(c);
}
