/*
 * Self-test of ws_client against an independent implementation: a small libwebsockets echo
 * server running on its own thread in this process (loopback, kernel-chosen port). Needs no Kafka
 * or Redis, so it always runs.
 *
 * Server behaviour, by the text a client sends:
 *   anything        echoed back with the same opcode (reassembled first, up to 1 MiB)
 *   "ping-me"       the server sends a ping, then reports "pong:<payload>" when the pong arrives
 *   "frag-me"       the server answers "abc"+"def"+"ghi" as three fragments of one message
 *   "close-me"      the server closes with 4001 "bye"
 * The path "/deny" is refused at the upgrade with 401, a JSON body and WWW-Authenticate.
 */
#include <criterion/criterion.h>
#include <libwebsockets.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "ws_client.h"

#define MAX_MSG (1u << 20)
#define T_MS    5000

typedef enum {
  SEND_NONE,
  SEND_ECHO,
  SEND_PING,
  SEND_FRAG1,
  SEND_FRAG2,
  SEND_FRAG3,
  SEND_PONG
} step;

typedef struct {
  uint8_t *buf; /* LWS_PRE + message */
  size_t len;
  bool binary;
  step next;
  char pong[64];
} session;

static struct lws_context *ctx;
static pthread_t thread;
static atomic_bool stopping;
static int port;

static int deny(struct lws *wsi) {
  static const char body[] = "{\"error\":\"unauthorized\"}";
  uint8_t buf[LWS_PRE + 512];
  uint8_t *start = buf + LWS_PRE, *p = start, *end = buf + sizeof(buf) - 1;
  if (lws_add_http_common_headers(wsi, 401, "application/json", sizeof(body) - 1, &p, end) ||
      lws_add_http_header_by_token(wsi, WSI_TOKEN_HTTP_WWW_AUTHENTICATE,
                                   (const unsigned char *)"Bearer", 6, &p, end) ||
      lws_finalize_http_header(wsi, &p, end))
    return -1;
  memcpy(p, body, sizeof(body) - 1);
  p += sizeof(body) - 1;
  lws_write(wsi, start, (size_t)(p - start), LWS_WRITE_HTTP);
  return 1;
}

static int write_text(struct lws *wsi, const char *s, enum lws_write_protocol flags) {
  uint8_t buf[LWS_PRE + 128];
  size_t n = strlen(s);
  memcpy(buf + LWS_PRE, s, n);
  return lws_write(wsi, buf + LWS_PRE, n, flags) < (int)n ? -1 : 0;
}

static int callback(struct lws *wsi, enum lws_callback_reasons reason, void *user, void *in,
                    size_t len) {
  session *s = user;
  switch (reason) {
  case LWS_CALLBACK_HTTP_CONFIRM_UPGRADE: {
    char uri[64] = "";
    lws_hdr_copy(wsi, uri, sizeof(uri), WSI_TOKEN_GET_URI);
    return strcmp(uri, "/deny") == 0 ? deny(wsi) : 0;
  }
  case LWS_CALLBACK_ESTABLISHED:
    s->buf = malloc(LWS_PRE + MAX_MSG);
    return s->buf == NULL ? -1 : 0;
  case LWS_CALLBACK_RECEIVE:
    if (s->next != SEND_NONE)
      return -1; /* the tests wait for each answer */
    if (lws_is_first_fragment(wsi))
      s->len = 0;
    if (s->len + len > MAX_MSG)
      return -1;
    memcpy(s->buf + LWS_PRE + s->len, in, len);
    s->len += len;
    s->binary = lws_frame_is_binary(wsi);
    if (!lws_is_final_fragment(wsi))
      return 0;
    if (s->len == 8 && memcmp(s->buf + LWS_PRE, "close-me", 8) == 0) {
      lws_close_reason(wsi, 4001, (unsigned char *)"bye", 3);
      return -1;
    }
    if (s->len == 7 && memcmp(s->buf + LWS_PRE, "ping-me", 7) == 0)
      s->next = SEND_PING;
    else if (s->len == 7 && memcmp(s->buf + LWS_PRE, "frag-me", 7) == 0)
      s->next = SEND_FRAG1;
    else
      s->next = SEND_ECHO;
    lws_callback_on_writable(wsi);
    return 0;
  case LWS_CALLBACK_RECEIVE_PONG:
    snprintf(s->pong, sizeof(s->pong), "pong:%.*s", (int)len, (const char *)in);
    s->next = SEND_PONG;
    lws_callback_on_writable(wsi);
    return 0;
  case LWS_CALLBACK_SERVER_WRITEABLE: {
    step now = s->next;
    s->next = SEND_NONE;
    switch (now) {
    case SEND_ECHO:
      return lws_write(wsi, s->buf + LWS_PRE, s->len,
                       s->binary ? LWS_WRITE_BINARY : LWS_WRITE_TEXT) < (int)s->len
                 ? -1
                 : 0;
    case SEND_PING:
      return write_text(wsi, "are-you-there", LWS_WRITE_PING);
    case SEND_PONG:
      return write_text(wsi, s->pong, LWS_WRITE_TEXT);
    case SEND_FRAG1:
    case SEND_FRAG2:
    case SEND_FRAG3: {
      /* One write per WRITEABLE: the next fragment asks for another callback. */
      static const char *parts[] = {"abc", "def", "ghi"};
      int i = (int)(now - SEND_FRAG1);
      enum lws_write_protocol f =
          (enum lws_write_protocol)lws_write_ws_flags(LWS_WRITE_TEXT, i == 0, i == 2);
      if (write_text(wsi, parts[i], f) < 0)
        return -1;
      if (i < 2) {
        s->next = (step)(now + 1);
        lws_callback_on_writable(wsi);
      }
      return 0;
    }
    case SEND_NONE:
      return 0;
    }
    return 0;
  }
  case LWS_CALLBACK_CLOSED:
    free(s->buf);
    s->buf = NULL;
    return 0;
  default:
    return 0;
  }
}

static const struct lws_protocols protocols[] = {
    {"echo.v1", callback, sizeof(session), 4096, 0, NULL, 0},
    {NULL, NULL, 0, 0, 0, NULL, 0},
};

static void *serve(void *arg) {
  while (!atomic_load(&stopping))
    lws_service(ctx, 0);
  return NULL;
}

static void server_start(void) {
  lws_set_log_level(LLL_ERR, NULL);
  struct lws_context_creation_info info;
  memset(&info, 0, sizeof(info));
  info.port = 0;
  info.iface = "127.0.0.1";
  info.protocols = protocols;
  info.max_http_header_data = 8192;
  ctx = lws_create_context(&info);
  cr_assert_not_null(ctx, "lws_create_context failed");
  port = lws_get_vhost_listen_port(lws_get_vhost_by_name(ctx, "default"));
  cr_assert_gt(port, 0);
  atomic_store(&stopping, false);
  cr_assert_eq(pthread_create(&thread, NULL, serve, NULL), 0);
}

static void server_stop(void) {
  if (ctx == NULL)
    return;
  atomic_store(&stopping, true);
  lws_cancel_service(ctx);
  pthread_join(thread, NULL);
  lws_context_destroy(ctx);
  ctx = NULL;
}

TestSuite(ws_client, .init = server_start, .fini = server_stop, .timeout = 60);

static ws_client *open_client(const char *path) {
  ws_client_options o = {.port = port, .path = path, .subprotocol = "echo.v1"};
  ws_http_response resp;
  ws_client *c = NULL;
  char err[256] = "";
  int rc = ws_client_connect(&c, &o, &resp, err, sizeof(err));
  cr_assert_eq(rc, WS_CLIENT_OK, "connect: %s (%s)", ws_client_strerror(rc), err);
  cr_assert_eq(resp.status, 101);
  cr_assert_str_eq(resp.protocol, "echo.v1");
  return c;
}

static void expect_echo(ws_client *c, ws_opcode op, const uint8_t *data, size_t len) {
  ws_message m;
  int rc = ws_client_recv(c, &m, T_MS);
  cr_assert_eq(rc, WS_CLIENT_OK, "recv: %s", ws_client_strerror(rc));
  cr_assert_eq(m.opcode, op);
  cr_assert_eq(m.len, len);
  cr_assert_eq(memcmp(m.data, data, len), 0, "payload of %zu bytes differs", len);
  cr_assert_eq(m.data[len], 0, "NUL-terminated");
}

Test(ws_client, echo_every_length_encoding) {
  ws_client *c = open_client("/");
  /* 7-bit, both 16-bit edges, and 64-bit lengths. */
  const size_t sizes[] = {0, 1, 125, 126, 65535, 65536, 300000};
  uint8_t *buf = malloc(300000);
  for (size_t i = 0; i < 300000; i++)
    buf[i] = (uint8_t)(i * 31 + 7);
  for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
    cr_assert_eq(ws_client_send(c, WS_OP_BINARY, buf, sizes[i]), WS_CLIENT_OK);
    expect_echo(c, WS_OP_BINARY, buf, sizes[i]);
  }
  const char *t = "h\xc3\xa9llo";
  cr_assert_eq(ws_client_send_text(c, t, strlen(t)), WS_CLIENT_OK);
  expect_echo(c, WS_OP_TEXT, (const uint8_t *)t, strlen(t));
  free(buf);
  ws_message m;
  cr_assert_eq(ws_client_close(c, 1000, "done", &m, T_MS), WS_CLIENT_OK);
  cr_assert_eq(m.opcode, WS_OP_CLOSE);
  cr_assert_eq(m.close_code, 1000);
  cr_assert_eq(ws_client_recv(c, &m, 10), WS_CLIENT_CLOSED);
  ws_client_destroy(c);
  ws_client_destroy(NULL);
}

Test(ws_client, fragmented_both_ways) {
  ws_client *c = open_client("/");
  const char *msg = "the quick brown fox jumps over the lazy dog";
  cr_assert_eq(ws_client_send_fragmented(c, WS_OP_TEXT, msg, strlen(msg), 5), WS_CLIENT_OK);
  expect_echo(c, WS_OP_TEXT, (const uint8_t *)msg, strlen(msg));
  cr_assert_eq(ws_client_send_text(c, "frag-me", 7), WS_CLIENT_OK);
  expect_echo(c, WS_OP_TEXT, (const uint8_t *)"abcdefghi", 9);
  ws_client_destroy(c);
}

Test(ws_client, ping_pong) {
  ws_client *c = open_client("/");
  /* Our ping: lws answers with a pong carrying the same payload. */
  cr_assert_eq(ws_client_send(c, WS_OP_PING, "p1", 2), WS_CLIENT_OK);
  expect_echo(c, WS_OP_PONG, (const uint8_t *)"p1", 2);
  /* The server's ping is answered automatically and not returned. */
  cr_assert_eq(ws_client_send_text(c, "ping-me", 7), WS_CLIENT_OK);
  expect_echo(c, WS_OP_TEXT, (const uint8_t *)"pong:are-you-there", 18);
  cr_assert_eq(ws_client_pings_received(c), 1);
  ws_client_destroy(c);
}

Test(ws_client, server_close_code_and_reason) {
  ws_client *c = open_client("/");
  cr_assert_eq(ws_client_send_text(c, "close-me", 8), WS_CLIENT_OK);
  ws_message m;
  cr_assert_eq(ws_client_recv(c, &m, T_MS), WS_CLIENT_OK);
  cr_assert_eq(m.opcode, WS_OP_CLOSE);
  cr_assert_eq(m.close_code, 4001);
  cr_assert_str_eq(m.close_reason, "bye");
  cr_assert_eq(ws_client_wait_eof(c, T_MS), WS_CLIENT_OK, "server did not close TCP");
  cr_assert_eq(ws_client_send_text(c, "x", 1), WS_CLIENT_CLOSED);
  ws_client_destroy(c);
}

Test(ws_client, refused_upgrade_returns_status_headers_body) {
  ws_client_options o = {.port = port,
                         .path = "/deny",
                         .subprotocol = "echo.v1",
                         .headers = (const char *const[]){"Authorization: Bearer nope", NULL}};
  ws_http_response resp;
  ws_client *c = (ws_client *)&resp;
  char err[256] = "";
  cr_assert_eq(ws_client_connect(&c, &o, &resp, err, sizeof(err)), WS_CLIENT_REFUSED, "%s", err);
  cr_assert_null(c);
  cr_assert_eq(resp.status, 401);
  cr_assert_str_eq(resp.body, "{\"error\":\"unauthorized\"}");
  cr_assert_eq(resp.body_len, strlen(resp.body));
  cr_assert_not_null(strcasestr(resp.headers, "www-authenticate: Bearer"), "%s", resp.headers);
  cr_assert_not_null(strstr(err, "401"), "%s", err);
}

Test(ws_client, protocol_errors_and_limits) {
  /* Nothing listens on a port just released: connect fails with a message, not a hang. */
  ws_client_options o = {.port = 1, .timeout_ms = 2000};
  ws_client *c = NULL;
  char err[256] = "";
  int rc = ws_client_connect(&c, &o, NULL, err, sizeof(err));
  cr_assert(rc == WS_CLIENT_CONNECT || rc == WS_CLIENT_TIMEOUT, "%s", ws_client_strerror(rc));
  cr_assert_neq(err[0], '\0');

  /* A message over max_message is refused by the client. */
  ws_client_options small = {.port = port, .subprotocol = "echo.v1", .max_message = 100};
  cr_assert_eq(ws_client_connect(&c, &small, NULL, err, sizeof(err)), WS_CLIENT_OK, "%s", err);
  uint8_t big[200] = {0};
  cr_assert_eq(ws_client_send(c, WS_OP_BINARY, big, sizeof(big)), WS_CLIENT_OK);
  ws_message m;
  cr_assert_eq(ws_client_recv(c, &m, T_MS), WS_CLIENT_TOO_BIG);
  ws_client_destroy(c);

  /* Nothing arrives: a timeout, quickly. */
  c = open_client("/");
  cr_assert_eq(ws_client_recv(c, &m, 50), WS_CLIENT_TIMEOUT);
  /* An unmasked frame is well-formed and decoded. NOTE: libwebsockets 4.1.6 does not enforce
   * RFC 6455 §5.1 (a server must fail the connection on an unmasked client frame): ops-ws.c
   * reads the mask bit and nothing rejects it. This pins that behaviour; the gateway cannot
   * refuse unmasked frames through lws' public API. */
  cr_assert_eq(ws_client_send_frame(c, WS_OP_TEXT, true, false, "x", 1), WS_CLIENT_OK);
  expect_echo(c, WS_OP_TEXT, (const uint8_t *)"x", 1);
  /* A reserved opcode is refused: the server fails the connection. */
  cr_assert_eq(ws_client_send_frame(c, 3, true, true, "y", 1), WS_CLIENT_OK);
  rc = ws_client_recv(c, &m, T_MS);
  cr_assert(rc == WS_CLIENT_CLOSED || (rc == WS_CLIENT_OK && m.opcode == WS_OP_CLOSE),
            "rc %s opcode %d", ws_client_strerror(rc), m.opcode);
  ws_client_destroy(c);
}
