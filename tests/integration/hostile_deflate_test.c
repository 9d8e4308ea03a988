/*
 * A decompression bomb over permessage-deflate (issue 16 item 11, docs/RELIABILITY.md "Hostile
 * input"): a frame of about 100 KiB that inflates to 16 MiB, against a gateway with --deflate and
 * --max-message 1 MiB. The gateway must stop inflating at the limit and close with 1009, and its
 * memory must not follow the inflated size.
 *
 * The test client speaks no permessage-deflate (ws_client.h), so the frame is built here: the
 * upgrade asks for the extension, and the message is a hand-written DEFLATE stream (RFC 1951,
 * fixed Huffman codes): one literal 0, then copies of 258 bytes at distance 1, 13 bits each, ended
 * as a sync flush is (RFC 7692: the trailing 00 00 ff ff left out).
 */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"
#include "harness_daemons.h"

#define INFLATED (16u << 20)

static itest_gateway gw;

static void teardown(void) {
  itest_gateway_cleanup(&gw);
  itest_fini();
}

TestSuite(hostile_deflate, .fini = teardown, .timeout = 120);

typedef struct {
  uint8_t *p;
  size_t len;
  uint32_t acc;
  int nacc;
} bits;

/* Appends n bits of v, least significant first (how DEFLATE packs everything but codes). */
static void put(bits *b, uint32_t v, int n) {
  for (int i = 0; i < n; i++) {
    b->acc |= ((v >> i) & 1u) << b->nacc++;
    if (b->nacc == 8) {
      b->p[b->len++] = (uint8_t)b->acc;
      b->acc = 0;
      b->nacc = 0;
    }
  }
}

/* Appends a Huffman code of n bits, most significant first. */
static void code(bits *b, uint32_t c, int n) {
  for (int i = n - 1; i >= 0; i--)
    put(b, (c >> i) & 1u, 1);
}

/* A raw DEFLATE stream inflating to at least `size` zero bytes; *len set. Caller frees. */
static uint8_t *bomb(size_t size, size_t *len) {
  size_t copies = (size - 1) / 258 + 1;
  bits b = {malloc(copies * 2 + 16), 0, 0, 0};
  cr_assert_not_null(b.p);
  put(&b, 0, 1);         /* BFINAL 0 */
  put(&b, 1, 2);         /* BTYPE 01: fixed codes */
  code(&b, 0x30 + 0, 8); /* literal 0 */
  for (size_t i = 0; i < copies; i++) {
    code(&b, 0xC0 + 5, 8); /* length symbol 285: 258 bytes, no extra bits */
    code(&b, 0, 5);        /* distance code 0: distance 1 */
  }
  code(&b, 0, 7); /* end of block (256) */
  put(&b, 0, 3);  /* the sync flush's empty stored block, its header only */
  if (b.nacc)
    put(&b, 0, 8 - b.nacc);
  *len = b.len;
  return b.p;
}

Test(hostile_deflate, a_decompression_bomb_gets_1009_and_memory_stays_bounded) {
  const char *extra[] = {"--deflate", "--max-message", "1m", NULL};
  itest_gateway_start(&gw, NULL, "deflate-bomb", &(itest_daemon_opts){.extra = extra});
  ws_client *c = itest_connect_deflate(&gw, "bomber");

  size_t plen = 0;
  uint8_t *payload = bomb(INFLATED, &plen);
  /* FIN, RSV1 (compressed), binary; masked with the key 0 (any key is valid). */
  size_t flen = 2 + 8 + 4 + plen;
  uint8_t *frame = calloc(1, flen);
  cr_assert_not_null(frame);
  frame[0] = 0x80 | 0x40 | 0x2;
  frame[1] = 0x80 | 127;
  for (int i = 0; i < 8; i++)
    frame[2 + i] = (uint8_t)((uint64_t)plen >> (8 * (7 - i)));
  memcpy(frame + 14, payload, plen);

  double rx_before = itest_metric(gw.http_port, "wsgate_gateway_rx_buffer_bytes");
  uint64_t t0 = itest_now_ms();
  cr_assert_eq(ws_client_send_raw(c, frame, flen), WS_CLIENT_OK);
  ws_message m;
  int rc;
  while ((rc = ws_client_recv(c, &m, ITEST_TIMEOUT_MS)) == WS_CLIENT_OK && m.opcode != WS_OP_CLOSE)
    ;
  uint64_t took = itest_now_ms() - t0;
  cr_assert_eq(rc, WS_CLIENT_OK, "no close frame: %s", ws_client_strerror(rc));
  char path[64], status[4096];
  snprintf(path, sizeof path, "/proc/%d/status", (int)gw.pid);
  const char *hwm = itest_read_file(path, status, sizeof status) ? strstr(status, "VmHWM:") : NULL;
  long peak_kib = hwm ? atol(hwm + 6) : -1;
  cr_log_info("a %zu-byte frame inflating to %u bytes: close %u \"%s\" after %llu ms; rx buffers "
              "%.0f before; gateway peak RSS %ld KiB",
              plen, INFLATED, m.close_code, m.close_reason, (unsigned long long)took, rx_before,
              peak_kib);
  cr_assert_eq(m.close_code, 1009, "closed with %u \"%s\"", m.close_code, m.close_reason);
  cr_assert(peak_kib > 0 && peak_kib < 64 * 1024, "the gateway's peak RSS reached %ld KiB",
            peak_kib);
  cr_assert_eq(itest_metric(gw.http_port, "wsgate_gateway_closes_total{code=\"1009\"}"), 1);
  free(frame);
  free(payload);
  ws_client_destroy(c);
}
