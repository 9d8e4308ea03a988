/*
 * Unit tests of wsgate-load's wire code and histogram: the handshake check against RFC 6455's
 * own example, frames split at every byte, the marker scanner across chunk boundaries, the
 * histogram's bucket bounds and percentiles, the per-hop breakdown read from /metrics text, and
 * HS256 tokens against a known vector, and the channel each connection subscribes to.
 *
 * Threads: Criterion's worker.
 */
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "load_engine.h"
#include "load_hist.h"
#include "load_hops.h"
#include "load_token.h"
#include "load_ws.h"

Test(load_ws, accept_matches_rfc6455_example) {
  char acc[LOAD_WS_ACCEPT_LEN + 1];
  cr_assert_eq(load_ws_accept("dGhlIHNhbXBsZSBub25jZQ==", acc), 0);
  cr_assert_str_eq(acc, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
}

Test(load_ws, key_is_deterministic_base64_of_16_bytes) {
  char a[LOAD_WS_KEY_LEN + 1], b[LOAD_WS_KEY_LEN + 1], c[LOAD_WS_KEY_LEN + 1];
  load_ws_key(42, a);
  load_ws_key(42, b);
  load_ws_key(43, c);
  cr_assert_str_eq(a, b);
  cr_assert_str_neq(a, c);
  cr_assert_eq(strlen(a), 24);
  cr_assert_eq(a[22], '=');
  cr_assert_eq(a[23], '=');
}

static const char OK_ANSWER[] = "HTTP/1.1 101 Switching Protocols\r\n"
                                "upgrade: WebSocket\r\n"
                                "Connection: keep-alive, Upgrade\r\n"
                                "Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"
                                "\r\n"
                                "\x81\x02hi";

Test(load_ws, response_accepted_and_frames_after_it_left_alone) {
  int status;
  char err[128];
  int h = load_ws_response(OK_ANSWER, sizeof OK_ANSWER - 1, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=", &status,
                           err, sizeof err);
  cr_assert_eq(h, (int)(sizeof OK_ANSWER - 1 - 4), "%s", err);
  cr_assert_eq(status, 101);
}

Test(load_ws, response_incomplete_wrong_accept_and_refusal) {
  int status;
  char err[128];
  cr_assert_eq(
      load_ws_response(OK_ANSWER, 40, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=", &status, err, sizeof err), 0);
  cr_assert_eq(load_ws_response(OK_ANSWER, sizeof OK_ANSWER - 1,
                                "AAAAAAAAAAAAAAAAAAAAAAAAAAA=", &status, err, sizeof err),
               -1);
  cr_assert(strstr(err, "Accept"), "%s", err);
  const char refused[] = "HTTP/1.1 503 Service Unavailable\r\nRetry-After: 1\r\n\r\n{}";
  cr_assert_eq(load_ws_response(refused, sizeof refused - 1, "x", &status, err, sizeof err), -1);
  cr_assert_eq(status, 503);
  cr_assert(strstr(err, "503"), "%s", err);
}

Test(load_ws, request_has_the_upgrade_headers) {
  char buf[512];
  int n = load_ws_request(buf, sizeof buf, "127.0.0.1:8080", "/ws?user=a", "KEY",
                          "Authorization: Bearer t\r\n");
  cr_assert_gt(n, 0);
  cr_assert(strstr(buf, "GET /ws?user=a HTTP/1.1\r\n"));
  cr_assert(strstr(buf, "Sec-WebSocket-Key: KEY\r\n"));
  cr_assert(strstr(buf, "Authorization: Bearer t\r\n\r\n"));
  cr_assert_eq(load_ws_request(buf, 20, "h", "/", "k", NULL), -1);
}

/* Unmasks a client frame and checks its header. */
static void check_client_frame(const uint8_t *f, size_t flen, const char *payload, size_t plen) {
  cr_assert_eq(f[0], 0x81);
  cr_assert(f[1] & 0x80, "client frames are masked");
  size_t h = plen < 126 ? 2 : plen <= 0xFFFF ? 4 : 10;
  cr_assert_eq(flen, h + 4 + plen);
  const uint8_t *m = f + h;
  for (size_t i = 0; i < plen; i++)
    cr_assert_eq((uint8_t)(f[h + 4 + i] ^ m[i & 3]), (uint8_t)payload[i]);
}

Test(load_ws, client_frames_every_length_encoding) {
  static uint8_t out[70000 + 14];
  static char pl[70000];
  memset(pl, 'a', sizeof pl);
  size_t lens[] = {0, 1, 125, 126, 65535, 65536, 70000};
  for (size_t i = 0; i < sizeof lens / sizeof lens[0]; i++) {
    size_t n = load_ws_frame(out, sizeof out, LOAD_WS_OP_TEXT, pl, lens[i], 0xA1B2C3D4u);
    cr_assert_eq(n, load_ws_frame_size(lens[i]));
    check_client_frame(out, n, pl, lens[i]);
  }
  cr_assert_eq(load_ws_frame(out, 5, LOAD_WS_OP_TEXT, pl, 10, 1), 0);
}

typedef struct {
  char data[512];
  size_t len;
  int frames;
  uint8_t last_op;
} collected;

static void collect(collected *c, const load_ws_chunk *ch) {
  memcpy(c->data + c->len, ch->data, ch->len);
  c->len += ch->len;
  if (ch->last) {
    c->frames++;
    c->last_op = ch->msg_opcode;
  }
}

/* Feeds `in` in pieces of `step` bytes. */
static int parse_all(const uint8_t *in, size_t len, size_t step, collected *c) {
  load_ws_parser p;
  memset(&p, 0, sizeof p);
  memset(c, 0, sizeof *c);
  size_t off = 0;
  while (off < len) {
    size_t piece = len - off < step ? len - off : step;
    size_t done = 0;
    while (done < piece) {
      load_ws_chunk ch;
      bool got;
      const char *err;
      long r = load_ws_parse(&p, in + off + done, piece - done, &ch, &got, &err);
      if (r < 0)
        return -1;
      done += (size_t)r;
      if (got)
        collect(c, &ch);
    }
    off += piece;
  }
  return 0;
}

Test(load_ws, server_frames_split_at_every_byte) {
  /* "hel" (text, no FIN) + ping "p" + continuation "lo" (FIN) + 200-byte binary + empty text */
  uint8_t in[400];
  size_t n = 0;
  const uint8_t a[] = {0x01, 3, 'h', 'e', 'l', 0x89, 1, 'p', 0x80, 2, 'l', 'o'};
  memcpy(in, a, sizeof a);
  n = sizeof a;
  in[n++] = 0x82;
  in[n++] = 126;
  in[n++] = 0;
  in[n++] = 200;
  memset(in + n, 'z', 200);
  n += 200;
  in[n++] = 0x81;
  in[n++] = 0;
  for (size_t step = 1; step <= n; step++) {
    collected c;
    cr_assert_eq(parse_all(in, n, step, &c), 0, "step %zu", step);
    cr_assert_eq(c.frames, 5, "step %zu", step);
    cr_assert_eq(c.len, 3 + 1 + 2 + 200, "step %zu", step);
    cr_assert_eq(memcmp(c.data, "help", 4), 0);
    cr_assert_eq(memcmp(c.data + 4, "lo", 2), 0);
    cr_assert_eq(c.last_op, LOAD_WS_OP_TEXT);
  }
}

Test(load_ws, server_protocol_violations_rejected) {
  const uint8_t masked[] = {0x81, 0x81, 1, 2, 3, 4, 'x'};
  const uint8_t rsv[] = {0xC1, 0x00};
  const uint8_t long_ping[] = {0x89, 126, 0, 200};
  const uint8_t frag_ping[] = {0x09, 0};
  const uint8_t lone_cont[] = {0x80, 0};
  const uint8_t bad_op[] = {0x83, 0};
  const uint8_t nested[] = {0x01, 1, 'a', 0x81, 1, 'b'};
  const struct {
    const uint8_t *b;
    size_t n;
  } cases[] = {{masked, sizeof masked},       {rsv, sizeof rsv},
               {long_ping, sizeof long_ping}, {frag_ping, sizeof frag_ping},
               {lone_cont, sizeof lone_cont}, {bad_op, sizeof bad_op},
               {nested, sizeof nested}};
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    collected c;
    cr_assert_eq(parse_all(cases[i].b, cases[i].n, cases[i].n, &c), -1, "case %zu", i);
  }
}

static void add_value(void *arg, uint64_t v) {
  uint64_t *vals = arg;
  vals[++vals[0]] = v;
}

Test(load_marker, found_across_chunks_and_noise) {
  char text[256];
  size_t n = 0;
  n += (size_t)snprintf(text, sizeof text, "{\"text\":\"~~w~wl~wlx");
  n += load_marker_write(text + n, sizeof text - n, 1234567890123ull);
  n += (size_t)snprintf(text + n, sizeof text - n, "xxxx\"} ~wl~ ");
  n += load_marker_write(text + n, sizeof text - n, 7);
  for (size_t step = 1; step <= n; step++) {
    load_marker_scan s;
    memset(&s, 0, sizeof s);
    uint64_t vals[8] = {0};
    for (size_t off = 0; off < n; off += step)
      load_marker_feed(&s, (const uint8_t *)text + off, n - off < step ? n - off : step, add_value,
                       vals);
    cr_assert_eq(vals[0], 2, "step %zu", step);
    cr_assert_eq(vals[1], 1234567890123ull);
    cr_assert_eq(vals[2], 7);
  }
}

Test(load_hist, bucket_bounds_contain_their_values_within_one_percent) {
  uint64_t vals[] = {0, 1, 255, 256, 257, 383, 384, 1000, 123456, 999999999, LOAD_HIST_MAX};
  for (size_t i = 0; i < sizeof vals / sizeof vals[0]; i++) {
    size_t ix = load_hist_index(vals[i]);
    cr_assert_lt(ix, LOAD_HIST_BUCKETS);
    cr_assert_leq(load_hist_lowest(ix), vals[i]);
    cr_assert_geq(load_hist_highest(ix), vals[i]);
    cr_assert_leq((double)(load_hist_highest(ix) - load_hist_lowest(ix)),
                  (double)vals[i] / 128.0 + 1.0, "value %llu", (unsigned long long)vals[i]);
  }
  for (size_t ix = 1; ix < LOAD_HIST_BUCKETS; ix++)
    cr_assert_eq(load_hist_lowest(ix), load_hist_highest(ix - 1) + 1, "bucket %zu", ix);
  cr_assert_eq(load_hist_index(LOAD_HIST_MAX + 1000), LOAD_HIST_BUCKETS - 1);
}

Test(load_hist, percentiles_of_one_to_a_million_microseconds) {
  static load_hist h, a, b;
  load_hist_init(&h);
  load_hist_init(&a);
  load_hist_init(&b);
  for (uint64_t v = 1; v <= 1000000; v++)
    load_hist_record(v % 2 ? &a : &b, v * 1000);
  load_hist_merge(&h, &a);
  load_hist_merge(&h, &b);
  cr_assert_eq(h.count, 1000000);
  cr_assert_eq(h.min, 1000);
  cr_assert_eq(h.max, 1000000000ull);
  double qs[] = {50, 90, 99, 99.9};
  for (size_t i = 0; i < 4; i++) {
    double want = qs[i] / 100.0 * 1e9;
    double got = (double)load_hist_percentile(&h, qs[i]);
    cr_assert(got >= want && got <= want * 1.008, "p%g = %.0f, want %.0f", qs[i], got, want);
  }
  cr_assert_eq(load_hist_percentile(&h, 100), h.max);
  cr_assert_float_eq(load_hist_mean(&h), 500000500.0, 1.0);
  load_hist empty;
  load_hist_init(&empty);
  cr_assert_eq(load_hist_percentile(&empty, 99), 0);
}

Test(load_token, hs256_known_vector) {
  /* Computed independently: python3 -c "import hmac,hashlib,base64..." for this secret/claims. */
  const char secret[] = "0123456789abcdef0123456789abcdef";
  char tok[1024];
  int n = load_token_jwt((const uint8_t *)secret, strlen(secret), "alice", 1700000000, 3600, tok,
                         sizeof tok);
  cr_assert_gt(n, 0);
  cr_assert_str_eq(tok,
                   "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9."
                   "eyJzdWIiOiJhbGljZSIsImlhdCI6MTcwMDAwMDAwMCwiZXhwIjoxNzAwMDAzNjAwLCJjaGFubmVs"
                   "cyI6WyIqIl19."
                   "9Qz9z1hO-CWgrq4NZQFY82sTWqZPd1VS9GoAB-mFdM0");
}

Test(load_token, command_output_and_failures) {
  char out[64], err[256];
  cr_assert_eq(load_token_cmd("echo tok-for", "bob", out, sizeof out, err, sizeof err), 11);
  cr_assert_str_eq(out, "tok-for bob");
  cr_assert_eq(load_token_cmd("false", "bob", out, sizeof out, err, sizeof err), -1);
  cr_assert(strstr(err, "failed"), "%s", err);
  cr_assert_eq(load_token_cmd("true", "bob", out, sizeof out, err, sizeof err), -1);
  cr_assert(strstr(err, "no token"), "%s", err);
  cr_assert_eq(load_token_cmd("printf '%0100d'", "", out, sizeof out, err, sizeof err), -1);
}

Test(load_channel, one_room_or_n_rooms_by_connection_index) {
  load_plan p = {.room = "news:b"};
  char ch[16];
  cr_assert_eq(load_channel_of(&p, 123456, ch, sizeof ch), 6);
  cr_assert_str_eq(ch, "news:b");
  p.rooms = 3;
  const char *want[] = {"news:b-0", "news:b-1", "news:b-2", "news:b-0", "news:b-1"};
  for (uint32_t i = 0; i < 5; i++) {
    cr_assert_eq(load_channel_of(&p, i, ch, sizeof ch), 8);
    cr_assert_str_eq(ch, want[i]);
  }
  p.rooms = 50000;
  cr_assert_eq(load_channel_of(&p, 4294967295u, ch, sizeof ch), 12); /* 4294967295 % 50000 */
  cr_assert_str_eq(ch, "news:b-17295");
  cr_assert_eq(load_channel_of(&p, 0, ch, 8), -1, "does not fit: refused, not cut");
}

/* Two scrapes of a gateway's /metrics as wsg_metrics renders them, another family in between. */
static const char scrape_before[] =
    "# HELP wsgate_gateway_hop_inbound_acked_seconds Hop 1\n"
    "# TYPE wsgate_gateway_hop_inbound_acked_seconds histogram\n"
    "wsgate_gateway_hop_inbound_acked_seconds_bucket{le=\"0.001\"} 10\n"
    "wsgate_gateway_hop_inbound_acked_seconds_bucket{le=\"0.01\"} 20\n"
    "wsgate_gateway_hop_inbound_acked_seconds_bucket{le=\"+Inf\"} 20\n"
    "wsgate_gateway_hop_inbound_acked_seconds_sum 0.05\n"
    "wsgate_gateway_hop_inbound_acked_seconds_count 20\n"
    "wsgate_gateway_frames_in_total 99\n";
static const char scrape_after[] =
    "wsgate_gateway_hop_inbound_acked_seconds_bucket{le=\"0.001\"} 10\n"
    "wsgate_gateway_hop_inbound_acked_seconds_bucket{le=\"0.01\"} 120\n"
    "wsgate_gateway_hop_inbound_acked_seconds_bucket{le=\"+Inf\"} 130\n"
    "wsgate_gateway_hop_inbound_acked_seconds_sum 1.05\n"
    "wsgate_gateway_hop_inbound_acked_seconds_count 130\n"
    "wsgate_gateway_frames_in_total 199\n";

Test(load_hops, window_is_after_minus_before_and_quantiles_interpolate) {
  load_hops_snap before = {0}, after = {0}, d;
  cr_assert_eq(load_hops_parse(scrape_before, &before), 0);
  cr_assert_eq(load_hops_parse(scrape_after, &after), 0);
  load_hops_diff(&after, &before, &d);
  const load_hops_hist *h = &d.h[LOAD_HOP_GW_ACKED];
  cr_assert_eq(h->seen, 1);
  cr_assert_eq(h->nb, 2);
  cr_assert_float_eq(h->count, 110, 1e-9);
  cr_assert_float_eq(h->sum, 1.0, 1e-9);
  cr_assert_float_eq(h->cum[0], 0, 1e-9);
  cr_assert_float_eq(h->cum[1], 100, 1e-9);
  cr_assert_float_eq(h->cum[2], 110, 1e-9);
  /* rank 55 of the 100 in (1 ms, 10 ms]: 1 + 9 * 0.55 ms */
  cr_assert_float_eq(load_hops_quantile(h, 0.5), 0.001 + 0.009 * 0.55, 1e-12);
  /* beyond the last finite bound: that bound */
  cr_assert_float_eq(load_hops_quantile(h, 0.99), 0.01, 1e-12);
  cr_assert(isnan(load_hops_quantile(&d.h[LOAD_HOP_PROC_ACKED], 0.5)));
  cr_assert_eq(d.h[LOAD_HOP_PROC_ACKED].seen, 0);
}

Test(load_hops, endpoints_add_up_and_must_agree_on_bounds) {
  load_hops_snap s = {0};
  cr_assert_eq(load_hops_parse(scrape_after, &s), 0);
  cr_assert_eq(load_hops_parse(scrape_after, &s), 0);
  cr_assert_eq(s.h[LOAD_HOP_GW_ACKED].seen, 2);
  cr_assert_float_eq(s.h[LOAD_HOP_GW_ACKED].cum[2], 260, 1e-9);
  static const char other_bounds[] =
      "wsgate_gateway_hop_inbound_acked_seconds_bucket{le=\"0.002\"} 1\n";
  cr_assert_eq(load_hops_parse(other_bounds, &s), -1);
}

Test(load_hops, only_loopback_http_endpoints) {
  char err[256];
  load_hops *h =
      load_hops_create("http://127.0.0.1:9090,http://localhost:9091/metrics", err, sizeof err);
  cr_assert_not_null(h, "%s", err);
  load_hops_destroy(h);
  cr_assert_null(load_hops_create("http://10.0.0.1:9090", err, sizeof err));
  cr_assert_null(load_hops_create("https://127.0.0.1:9090", err, sizeof err));
  cr_assert_null(load_hops_create("http://127.0.0.1", err, sizeof err));
  load_hops_destroy(NULL);
}
