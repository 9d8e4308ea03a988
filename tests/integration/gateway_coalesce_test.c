/*
 * --coalesce-writes against the real binary (gw_outbound.c coalesce_write): several whole
 * messages at a send queue's head go to libwebsockets as one raw write, framed by the gateway.
 * A client that reads late gets every message whole and in order, text and binary, at each
 * length encoding's edges (125/126, 65535/65536, two messages filling 64 KiB exactly), with a
 * resumable connection's "<q>\n" headers; off coalesces nothing; a compressed connection never
 * coalesces; a client that never reads is still closed with 4001; a client's close while lws
 * holds part of a coalesced write ends cleanly after whole frames.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <jansson.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "harness_kafka.h"
#include "harness.h"

static itest_gateway gw;
static itest_reader rd;

static void teardown(void) {
  itest_reader_close(&rd);
  itest_gateway_cleanup(&gw);
}

TestSuite(gateway_coalesce, .fini = teardown, .timeout = 180);

#define COALESCED "wsgate_gateway_coalesced_writes_total"
#define CO_MSGS   "wsgate_gateway_coalesced_messages_total"
#define OUT       "wsgate_gateway_messages_out_total"
#define QUEUED    "wsgate_gateway_outbound_records_total{result=\"queued\"}"
#define SENDQ     "wsgate_gateway_sendq_bytes"

/* Sizes cycled through by message number: the 7/16/64-bit length edges, empty messages, and
 * 32766 + 32762, whose frames (4-byte headers) fill a 64 KiB coalesced write exactly. */
static const size_t SIZES[] = {0,   1,     125,  126,   127,   300,  2, 65535,
                               124, 65536, 1000, 32766, 32762, 4000, 3};
#define NSIZES (sizeof SIZES / sizeof SIZES[0])
#define SERIES (NSIZES * 40) /* 600 messages, about 8 MiB */

static size_t size_of(size_t i) {
  return SIZES[i % NSIZES];
}
static bool binary_of(size_t i) {
  return i % 2 == 1;
}
/* Message i: "%08d" of i when it has room, the rest one letter chosen by i. */
static void fill(uint8_t *p, size_t i) {
  size_t len = size_of(i);
  memset(p, 'a' + (int)(i % 26), len);
  if (len >= 8) {
    char num[16];
    snprintf(num, sizeof num, "%08zu", i);
    memcpy(p, num, 8);
  }
}
static void check(const uint8_t *data, size_t len, bool binary, size_t i, uint8_t *want) {
  cr_assert_eq(len, size_of(i), "message %zu: %zu bytes, want %zu (cut, merged or out of order)", i,
               len, size_of(i));
  cr_assert_eq(binary, binary_of(i), "message %zu: wrong opcode", i);
  fill(want, i);
  cr_assert(memcmp(data, want, len) == 0, "message %zu: corrupt (starts %.8s)", i,
            (const char *)data);
}

/* The series to `conn` in one producer batch, so it is dispatched within a few wake-ups. With
 * q_base, message i carries sequence number q_base + 1 + (i - i / 5) and every fifth message is
 * an unsequenced reply (q 0): a resumable connection's "<q>\n" and "\n" headers. */
static void deliver_series(uint64_t conn, size_t n, uint64_t q_base) {
  uint8_t *payload = malloc(65536);
  cr_assert_not_null(payload);
  rd_kafka_t *rk = itest_kafka_client(WSG_KAFKA_PRODUCER, NULL);
  wsg_buf b;
  wsg_buf_init(&b, 0);
  uint64_t q = q_base;
  for (size_t i = 0; i < n; i++) {
    fill(payload, i);
    wsg_envelope e = {.kind = WSG_ENV_DELIVER,
                      .version = WSG_ENVELOPE_VERSION,
                      .fields = WSG_F_GATEWAY | WSG_F_CONN | WSG_F_DATA | WSG_F_BINARY,
                      .gateway = gw.id,
                      .gateway_len = strlen(gw.id),
                      .conn = conn,
                      .data = payload,
                      .data_len = size_of(i),
                      .binary = binary_of(i)};
    if (q_base && i % 5 != 4) {
      e.fields |= WSG_F_USEQ;
      e.user_seq = ++q;
    }
    int rc = wsg_envelope_encode(&e, &b);
    cr_assert_eq(rc, WSG_ENV_OK, "encode: %s", wsg_env_strerror(rc));
    itest_outbound_produce(rk, &gw, itest_gateway_slot(&gw), b.data, b.len);
  }
  cr_assert_eq(rd_kafka_flush(rk, 30000), RD_KAFKA_RESP_ERR_NO_ERROR);
  rd_kafka_destroy(rk);
  wsg_buf_finish(&b);
  free(payload);
}

/* Starts the gateway with flags and queue limits far above the series (this is about framing,
 * not 4001), and a reader of its inbound topic. */
static void start(const char *prefix, const char *const *flags) {
  const char *extra[16] = {"--sendq-hard",      "128m", "--sendq-soft", "128m",
                           "--sendq-soft-time", "1h"};
  size_t n = 6;
  for (size_t i = 0; flags && flags[i]; i++)
    extra[n++] = flags[i];
  extra[n] = NULL;
  itest_gateway_start(&gw, NULL, prefix, &(itest_daemon_opts){.extra = extra});
  itest_reader_open(&rd, gw.cluster.in_topic, gw.cluster.in_partitions);
}

static uint64_t connected(const char *user) {
  wsg_envelope e;
  itest_reader_expect(&rd, WSG_ENV_CONNECT, user, &e, ITEST_TIMEOUT_MS);
  return e.conn;
}

/* Reads the series late (after it was all queued) and checks each message. */
static void read_series(ws_client *c) {
  itest_wait_metric_eq(gw.http_port, QUEUED, SERIES, ITEST_TIMEOUT_MS);
  usleep(200 * 1000);
  uint8_t *want = malloc(65536);
  cr_assert_not_null(want);
  for (size_t i = 0; i < SERIES; i++) {
    ws_message m;
    int rc = ws_client_recv(c, &m, ITEST_TIMEOUT_MS);
    cr_assert_eq(rc, WS_CLIENT_OK, "message %zu: %s", i, ws_client_strerror(rc));
    check(m.data, m.len, m.opcode == WS_OP_BINARY, i, want);
  }
  free(want);
  ws_message m;
  cr_assert_eq(ws_client_recv(c, &m, 300), WS_CLIENT_TIMEOUT, "a message after the series");
  cr_assert_eq(itest_metric(gw.http_port, OUT), SERIES);
  cr_assert_eq(itest_metric(gw.http_port, SENDQ), 0);
}

static void series_arrives_whole(const char *prefix, const char *eager) {
  const char *flags[] = {eager, NULL};
  start(prefix, flags);
  ws_client *c = itest_connect(&gw, "owl");
  deliver_series(connected("owl"), SERIES, 0);
  read_series(c);
  double writes = itest_metric(gw.http_port, COALESCED);
  double msgs = itest_metric(gw.http_port, CO_MSGS);
  cr_log_info("%s: %.0f coalesced writes carried %.0f of %zu messages", eager, writes, msgs,
              (size_t)SERIES);
  cr_assert_gt(writes, 0, "nothing was coalesced");
  cr_assert_geq(msgs, 2 * writes, "a coalesced write carries at least two messages");
  cr_assert_leq(msgs, SERIES);
  ws_client_destroy(c);
}

Test(gateway_coalesce, queued_messages_arrive_whole_and_in_order) {
  series_arrives_whole("cwq", "--eager-write=off");
}

/* With eager writes the first messages go straight to the socket; once it is full, the rest
 * queue and go out coalesced behind them. */
Test(gateway_coalesce, with_eager_writes_too) {
  series_arrives_whole("cwe", "--eager-write=on");
}

Test(gateway_coalesce, off_coalesces_nothing) {
  const char *flags[] = {"--eager-write=off", "--coalesce-writes=off", NULL};
  start("cwoff", flags);
  ws_client *c = itest_connect(&gw, "owl");
  deliver_series(connected("owl"), SERIES, 0);
  read_series(c);
  cr_assert_eq(itest_metric(gw.http_port, COALESCED), 0);
  ws_client_destroy(c);
}

#define EAGER   "wsgate_gateway_eager_writes_total"
#define BATCHED "wsgate_gateway_eager_batched_messages_total"

/* --eager-write under load (docs/notes/libwebsockets-4.1.6.md#eager-write): a burst of small
 * messages to one connection, read at once, so the socket always has room. Dispatched several
 * records to a wake-up, they are held to its end and go out coalesced; without that rule each
 * would be written eagerly on its own and none coalesced. A message alone in its wake-up is
 * still written at once. */
static void burst_is_batched(const char *prefix, const char *consume) {
  const char *flags[] = {"--eager-write=on", "--outbound-consume", consume, NULL};
  start(prefix, flags);
  ws_client *c = itest_connect(&gw, "owl");
  uint64_t conn = connected("owl");
  enum { N = 400, SIZE = 64 };
  itest_deliver_numbered(&gw, itest_gateway_slot(&gw), conn, SIZE, N);
  for (int i = 0; i < N; i++) {
    ws_message m;
    cr_assert_eq(ws_client_recv(c, &m, ITEST_TIMEOUT_MS), WS_CLIENT_OK, "message %d", i);
    cr_assert(itest_numbered_ok(m.data, m.len, SIZE, i), "message %d: wrong or out of order", i);
  }
  double batched = itest_metric(gw.http_port, BATCHED), eager = itest_metric(gw.http_port, EAGER);
  double writes = itest_metric(gw.http_port, COALESCED);
  cr_log_info("%s: %.0f of %d batched, %.0f eager, %.0f coalesced writes carried %.0f", consume,
              batched, N, eager, writes, itest_metric(gw.http_port, CO_MSGS));
  cr_assert_gt(batched, 0, "no message was held to the end of its wake-up");
  cr_assert_gt(writes, 0, "nothing was coalesced");
  cr_assert_leq(batched, eager, "batched messages are eager writes too");
  cr_assert_eq(itest_metric(gw.http_port, SENDQ), 0);
  /* Alone in its wake-up: written at once, not batched. */
  itest_deliver(&gw, itest_gateway_slot(&gw), NULL, conn, "after");
  ws_message m;
  itest_expect_msg(c, WS_OP_TEXT, &m, ITEST_TIMEOUT_MS);
  cr_assert_str_eq((const char *)m.data, "after");
  itest_wait_metric_eq(gw.http_port, EAGER, eager + 1, ITEST_TIMEOUT_MS);
  cr_assert_eq(itest_metric(gw.http_port, BATCHED), batched);
  ws_client_destroy(c);
}

Test(gateway_coalesce, a_burst_read_at_once_is_batched_with_eager_writes) {
  burst_is_batched("cwb", "loop");
}

Test(gateway_coalesce, a_burst_is_batched_from_the_consumer_thread_too) {
  burst_is_batched("cwbt", "thread");
}

/* A resumable connection's headers ("<q>\n", "\n") inside coalesced writes. */
Test(gateway_coalesce, resumable_headers_survive) {
  const char *flags[] = {"--eager-write=off", NULL};
  start("cwseq", flags);
  char auth[2100];
  snprintf(auth, sizeof auth, "Authorization: Bearer %s", itest_token("heron", 600));
  const char *headers[] = {auth, NULL};
  ws_client *c = NULL;
  ws_http_response resp;
  int rc = itest_connect_raw(&gw, "/", headers, "wsgate.v1+seq", &c, &resp);
  cr_assert_eq(rc, WS_CLIENT_OK, "upgrade: %s (%d)", ws_client_strerror(rc), resp.status);
  ws_message m;
  itest_recv(c, &m, ITEST_TIMEOUT_MS);
  cr_assert(m.len > 7 && memcmp(m.data, "wsgate\n", 7) == 0, "no sync frame: %.*s", (int)m.len,
            (const char *)m.data);
  json_t *sync = json_loadb((const char *)m.data + 7, m.len - 7, 0, NULL);
  cr_assert(json_is_integer(json_object_get(sync, "last")), "sync without last");
  uint64_t last = (uint64_t)json_integer_value(json_object_get(sync, "last"));
  json_decref(sync);
  uint64_t conn = connected("heron");
  itest_wait_metric_eq(gw.http_port, OUT, 1, ITEST_TIMEOUT_MS); /* the sync frame */
  deliver_series(conn, SERIES, last);

  itest_wait_metric_eq(gw.http_port, QUEUED, SERIES, ITEST_TIMEOUT_MS);
  usleep(200 * 1000);
  uint8_t *want = malloc(65536);
  cr_assert_not_null(want);
  uint64_t q = last;
  for (size_t i = 0; i < SERIES; i++) {
    rc = ws_client_recv(c, &m, ITEST_TIMEOUT_MS);
    cr_assert_eq(rc, WS_CLIENT_OK, "message %zu: %s", i, ws_client_strerror(rc));
    const uint8_t *nl = memchr(m.data, '\n', m.len);
    cr_assert_not_null(nl, "message %zu without a header", i);
    char hdr[32] = "";
    if (i % 5 != 4)
      snprintf(hdr, sizeof hdr, "%llu", (unsigned long long)++q);
    size_t hl = (size_t)(nl - m.data);
    cr_assert(hl == strlen(hdr) && memcmp(m.data, hdr, hl) == 0,
              "message %zu: header \"%.*s\", want \"%s\"", i, (int)hl, (const char *)m.data, hdr);
    check(nl + 1, m.len - hl - 1, m.opcode == WS_OP_BINARY, i, want);
  }
  free(want);
  cr_assert_gt(itest_metric(gw.http_port, COALESCED), 0, "nothing was coalesced");
  cr_assert_eq(itest_metric(gw.http_port, OUT), SERIES + 1);
  ws_client_destroy(c);
}

/* Reads exactly n bytes from fd (the client's buffer is empty: checked by the caller). */
static void read_exact(int fd, uint8_t *p, size_t n) {
  while (n > 0) {
    struct pollfd pfd = {.fd = fd, .events = POLLIN};
    cr_assert_eq(poll(&pfd, 1, ITEST_TIMEOUT_MS), 1, "no bytes within %d ms", ITEST_TIMEOUT_MS);
    ssize_t r = recv(fd, p, n, 0);
    cr_assert_gt(r, 0, "recv: %s", r < 0 ? strerror(errno) : "EOF");
    p += r;
    n -= (size_t)r;
  }
}

/* permessage-deflate: lws' compressor frames the messages; the gateway never coalesces them. The
 * test client does not inflate, so the frames are counted from the socket: every message ends in
 * a FIN frame, and the first frame of each is compressed (RSV1) unless the message is empty. */
Test(gateway_coalesce, a_compressed_connection_never_coalesces) {
  const char *flags[] = {"--eager-write=off", "--deflate", NULL};
  start("cwdefl", flags);
  ws_client *c = itest_connect_deflate(&gw, "otter");
  deliver_series(connected("otter"), SERIES, 0);
  itest_wait_metric_eq(gw.http_port, QUEUED, SERIES, ITEST_TIMEOUT_MS);
  cr_assert_eq(ws_client_buffered(c), 0);
  int fd = ws_client_fd(c);
  uint8_t *payload = malloc(1 << 20);
  cr_assert_not_null(payload);
  size_t messages = 0, compressed = 0;
  bool first = true;
  while (messages < SERIES) {
    uint8_t h[10];
    read_exact(fd, h, 2);
    cr_assert_eq(h[1] & 0x80, 0, "a masked server frame");
    uint64_t len = h[1] & 0x7F;
    if (len >= 126) {
      size_t extra = len == 126 ? 2 : 8;
      read_exact(fd, h + 2, extra);
      len = 0;
      for (size_t i = 0; i < extra; i++)
        len = len << 8 | h[2 + i];
    }
    cr_assert_leq(len, 1 << 20, "message %zu: a %llu-byte frame", messages,
                  (unsigned long long)len);
    read_exact(fd, payload, (size_t)len);
    int op = h[0] & 0x0F;
    cr_assert(op == 0 || op == 1 || op == 2, "message %zu: opcode %d", messages, op);
    if (first) {
      /* An empty message goes uncompressed: lws' compressor aborts on one (gw_outbound.c). */
      bool empty = size_of(messages) == 0;
      cr_assert_eq((h[0] & 0x40) != 0, !empty, "message %zu: RSV1 %s", messages,
                   empty ? "set on an empty message" : "clear: not compressed");
      cr_assert(!empty || len == 0, "message %zu: empty, got %llu bytes", messages,
                (unsigned long long)len);
      compressed += !empty;
    }
    first = (h[0] & 0x80) != 0;
    if (first)
      messages++;
  }
  free(payload);
  cr_assert_eq(compressed, SERIES - SERIES / NSIZES);
  cr_assert_eq(itest_metric(gw.http_port, OUT), SERIES);
  cr_assert_eq(itest_metric(gw.http_port, COALESCED), 0, "a compressed connection coalesced");
  ws_client_destroy(c);
}

Test(gateway_coalesce, a_client_that_never_reads_is_still_closed_with_4001) {
  const char *extra[] = {"--eager-write=off", "--sendq-hard", "256k", "--sendq-soft", "128k",
                         "--sendq-soft-time", "1s",           NULL};
  itest_gateway_start(&gw, NULL, "cwslow", &(itest_daemon_opts){.extra = extra});
  itest_reader_open(&rd, gw.cluster.in_topic, gw.cluster.in_partitions);
  ws_client *c = itest_connect(&gw, "sloth");
  itest_stop_reading(c);
  uint64_t conn = connected("sloth");
  /* 1 KiB messages, about 60 to a coalesced write. First a few, under the limits, so writes
   * start (a batch of thousands would exceed the hard limit before the first WRITEABLE); then
   * enough that only the queue growing can close the connection. */
  itest_deliver_many(&gw, itest_gateway_slot(&gw), conn, 1024, 100);
  itest_wait_metric(gw.http_port, COALESCED, 1, ITEST_TIMEOUT_MS);
  itest_deliver_many(&gw, itest_gateway_slot(&gw), conn, 1024, 20000);
  itest_wait_metric_eq(gw.http_port, "wsgate_gateway_closes_total{code=\"4001\"}", 1,
                       ITEST_TIMEOUT_MS);
  itest_wait_metric_eq(gw.http_port, SENDQ, 0, ITEST_TIMEOUT_MS);
  wsg_envelope e;
  itest_reader_expect(&rd, WSG_ENV_DISCONNECT, "sloth", &e, ITEST_TIMEOUT_MS);
  cr_assert_eq(e.close_code, 4001);
  ws_client_destroy(c);
}

/*
 * The client closes while the gateway is blocked on it with coalesced writes. Two endings, both
 * clean, depending on whether lws holds an unsent rest at that moment (ops-ws.c, a peer's close):
 * none, and lws' close answer goes behind the whole frames the socket took: the client reads
 * every message handed to lws, then the close; some, and lws drops the connection without an
 * answer, as on the one-frame path: the client reads whole messages and then EOF, losing at most
 * the one coalesced write lws held (64 KiB).
 */
/* 16 MB: more than both sockets take while the client does not read (tcp_wmem's 4 MiB and a
 * receive window that does not grow); not itest_stop_reading: reading through its 4 KiB window
 * afterwards takes a minute. */
#define CLOSE_N    16000
#define FRAG_BYTES 65536 /* a coalesced write's bound (FRAG_SIZE) */
Test(gateway_coalesce, a_close_during_a_partial_coalesced_write_is_clean) {
  const char *flags[] = {"--eager-write=off", NULL};
  start("cwclose", flags);
  ws_client *c = itest_connect(&gw, "mole");
  uint64_t conn = connected("mole");
  itest_deliver_numbered(&gw, itest_gateway_slot(&gw), conn, 1000, CLOSE_N);
  itest_wait_metric_eq(gw.http_port, QUEUED, CLOSE_N, ITEST_TIMEOUT_MS);
  itest_wait_metric(gw.http_port, COALESCED, 1, ITEST_TIMEOUT_MS);
  usleep(200 * 1000);
  double out = itest_metric(gw.http_port, OUT);
  cr_assert_lt(out, CLOSE_N, "the socket took everything: nothing is held back");
  cr_assert_gt(itest_metric(gw.http_port, SENDQ), 0);
  cr_assert_eq(ws_client_send_frame(c, 0x8, true, true, "\x03\xe8", 2), WS_CLIENT_OK);
  int i = 0;
  ws_message m;
  int rc;
  while ((rc = ws_client_recv(c, &m, ITEST_TIMEOUT_MS)) == WS_CLIENT_OK &&
         m.opcode != WS_OP_CLOSE) {
    cr_assert_eq(m.opcode, WS_OP_BINARY);
    cr_assert(itest_numbered_ok(m.data, m.len, 1000, i),
              "message %d: %zu bytes, %.8s: cut or "
              "out of order",
              i, m.len, (const char *)m.data);
    i++;
  }
  int held = (int)(FRAG_BYTES / 1006) + 1; /* messages of one coalesced write, at most */
  if (rc == WS_CLIENT_OK) {
    cr_assert_eq(m.close_code, 1000, "closed with %u \"%s\"", m.close_code, m.close_reason);
    cr_assert_geq(i, (int)out, "messages handed to lws before the close were lost");
    cr_assert_eq(ws_client_wait_eof(c, ITEST_TIMEOUT_MS), WS_CLIENT_OK);
  } else {
    cr_assert(rc == WS_CLIENT_CLOSED || rc == WS_CLIENT_IO, "after %d messages: %s", i,
              ws_client_strerror(rc));
    cr_assert_geq(i, (int)out - held, "more was lost than the one write lws held");
  }
  cr_log_info("%d of %d messages, then %s (%.0f handed to lws when the close was sent)", i, CLOSE_N,
              rc == WS_CLIENT_OK ? "the close" : "EOF", out);
  itest_wait_metric_eq(gw.http_port, "wsgate_gateway_connections", 0, ITEST_TIMEOUT_MS);
  itest_wait_metric_eq(gw.http_port, SENDQ, 0, ITEST_TIMEOUT_MS);
  wsg_envelope e;
  itest_reader_expect(&rd, WSG_ENV_DISCONNECT, "mole", &e, ITEST_TIMEOUT_MS);
  cr_assert(e.close_code == 1000 || e.close_code == 1006, "disconnect with %u", e.close_code);
  ws_client_destroy(c);
}
