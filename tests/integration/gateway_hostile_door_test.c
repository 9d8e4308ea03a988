/*
 * Sockets that stall before their upgrade, against the real wsgate-gateway, on a plain and on a
 * TLS port: each must be closed --handshake-timeout after it was accepted (docs/GATEWAY.md "Limits
 * and memory"), however it stalls: silent from the start, half a request line, a request head cut
 * off, half a ClientHello, a TLS handshake completed and then nothing. Each socket is alone on a
 * quiet gateway, the case in which libwebsockets' own timeouts fire late on libev
 * (docs/notes/libwebsockets-4.1.6.md#timers): measured before the gateway kept these deadlines
 * itself, such sockets stayed open 10 to 20 s past a 2 s timeout.
 *
 * Threads: the test's own thread.
 */
#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <errno.h>
#include <netinet/in.h>
#include <openssl/ssl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "harness_kafka.h"
#include "harness.h"
#include "harness_tls.h"

/* --handshake-timeout, and how late the close may come on a loaded test box. */
#define TIMEOUT_MS 2000
#define SLACK_MS   1000
/* How long a socket is watched: long enough to measure lws' late timeouts. */
#define WATCH_MS 25000

static itest_gateway gw;
static itest_reader rd;
static char dir[64];
static char cert[128], key[128];

static void teardown(void) {
  itest_reader_close(&rd);
  itest_gateway_cleanup(&gw);
  if (dir[0]) {
    unlink(cert);
    unlink(key);
    rmdir(dir);
    dir[0] = '\0';
  }
}

TestSuite(gateway_hostile_door, .fini = teardown, .timeout = 240);

static void start(const char *name, bool tls) {
  const char *plain[] = {"--handshake-timeout", "2s", NULL};
  const char *with_tls[] = {"--handshake-timeout", "2s", "--tls-cert", cert,
                            "--tls-key",           key,  NULL};
  if (tls) {
    snprintf(dir, sizeof dir, "/tmp/wsgate-door.XXXXXX");
    cr_assert_not_null(mkdtemp(dir));
    snprintf(cert, sizeof cert, "%s/cert.pem", dir);
    snprintf(key, sizeof key, "%s/key.pem", dir);
    itest_make_cert(cert, key, "wsgate door test");
  }
  itest_gateway_start(&gw, NULL, name, &(itest_daemon_opts){.extra = tls ? with_tls : plain});
  if (!tls)
    itest_reader_open(&rd, gw.cluster.in_topic, gw.cluster.in_partitions);
}

static int tcp_connect(void) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  cr_assert(fd >= 0);
  struct sockaddr_in dst = {.sin_family = AF_INET, .sin_port = htons((uint16_t)gw.port)};
  inet_pton(AF_INET, "127.0.0.1", &dst.sin_addr);
  cr_assert_eq(connect(fd, (struct sockaddr *)&dst, sizeof dst), 0, "connect: %s", strerror(errno));
  return fd;
}

/* Milliseconds from t0 until the gateway ends the connection (EOF or reset), or -1 if it is still
 * open WATCH_MS after t0. What arrives meanwhile is read and dropped. */
static long ms_until_closed(int fd, uint64_t t0) {
  for (;;) {
    long left = (long)WATCH_MS - (long)(itest_now_ms() - t0);
    if (left <= 0)
      return -1;
    struct pollfd p = {.fd = fd, .events = POLLIN};
    if (poll(&p, 1, (int)left) <= 0)
      continue;
    char tmp[4096];
    if (recv(fd, tmp, sizeof tmp, 0) <= 0)
      return (long)(itest_now_ms() - t0);
  }
}

/* Checks one stalled socket's close (ms after just before its connect) against the timeout. */
static void expect_cut(const char *what, long ms) {
  cr_assert_geq(ms, 0, "%s: still open %d ms after it was accepted (--handshake-timeout %d ms)",
                what, WATCH_MS, TIMEOUT_MS);
  cr_assert_geq(ms, TIMEOUT_MS - 100, "%s: closed after %ld ms, before the timeout", what, ms);
  cr_assert_leq(ms, TIMEOUT_MS + SLACK_MS, "%s: closed after %ld ms (--handshake-timeout %d ms)",
                what, ms, TIMEOUT_MS);
}

/* Logs every case's close first, then checks them: a failure shows all the measurements. */
static void expect_all_cut(const char *const *what, const long *ms, size_t n) {
  for (size_t i = 0; i < n; i++)
    cr_log_info("%s: closed after %ld ms (-1: still open at %d ms; --handshake-timeout %d ms)",
                what[i], ms[i], WATCH_MS, TIMEOUT_MS);
  for (size_t i = 0; i < n; i++)
    expect_cut(what[i], ms[i]);
}

/* A plain socket that sends `first` (maybe nothing) and then stalls: when it was closed. */
static long plain_stall(const char *first) {
  uint64_t t0 = itest_now_ms();
  int fd = tcp_connect();
  size_t n = strlen(first);
  if (n)
    cr_assert_eq(send(fd, first, n, MSG_NOSIGNAL), (ssize_t)n);
  long ms = ms_until_closed(fd, t0);
  close(fd);
  return ms;
}

#define PLAIN_CASES 3
static const char *const plain_what[PLAIN_CASES] = {"silent socket", "half a request line",
                                                    "request head cut off"};
static const char *const plain_first[PLAIN_CASES] = {
    "", "GET /?tok", "GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"};

Test(gateway_hostile_door, plain_sockets_stalled_before_the_upgrade_close_at_the_timeout) {
  start("door-plain", false);
  long ms[PLAIN_CASES];
  for (size_t i = 0; i < PLAIN_CASES; i++)
    ms[i] = plain_stall(plain_first[i]);
  expect_all_cut(plain_what, ms, PLAIN_CASES);
  cr_assert_eq(itest_metric(gw.http_port, "wsgate_gateway_handshake_timeouts_total"), PLAIN_CASES);
  cr_assert_eq(itest_metric(gw.http_port, "wsgate_gateway_handshakes"), 0);
  /* A well-behaved user still gets in. */
  ws_client *c = itest_connect(&gw, "after-stalls");
  wsg_envelope e;
  itest_reader_expect(&rd, WSG_ENV_CONNECT, "after-stalls", &e, ITEST_TIMEOUT_MS);
  ws_client_destroy(c);
}

/* A TLS client on fd, which trusts anything (the certificate is not the point here). */
static SSL *tls_handshake(SSL_CTX **ctx, int fd) {
  *ctx = SSL_CTX_new(TLS_client_method());
  cr_assert_not_null(*ctx);
  SSL_CTX_set_verify(*ctx, SSL_VERIFY_NONE, NULL);
  SSL *ssl = SSL_new(*ctx);
  cr_assert_not_null(ssl);
  SSL_set_fd(ssl, fd);
  cr_assert_eq(SSL_connect(ssl), 1, "TLS handshake with the gateway failed");
  return ssl;
}

/* The first bytes of a ClientHello: a record header announcing 512 bytes, and 11 of them. */
static const unsigned char half_hello[] = {0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01,
                                           0xfc, 0x03, 0x03, 0x00, 0x00, 0x00, 0x00, 0x00};

#define TLS_CASES 4
static const char *const tls_what[TLS_CASES] = {"TLS port, silent socket", "half a ClientHello",
                                                "TLS handshake done, then silent",
                                                "TLS, then a request head cut off"};

/* A socket to the TLS port stalled the way of case i: when it was closed. */
static long tls_stall(int i) {
  uint64_t t0 = itest_now_ms();
  int fd = tcp_connect();
  SSL_CTX *ctx = NULL;
  SSL *ssl = NULL;
  if (i == 1)
    cr_assert_eq(send(fd, half_hello, sizeof half_hello, MSG_NOSIGNAL), (ssize_t)sizeof half_hello);
  if (i >= 2)
    ssl = tls_handshake(&ctx, fd);
  if (i == 3) {
    static const char head[] = "GET / HTTP/1.1\r\nHost: x\r\n";
    cr_assert_eq(SSL_write(ssl, head, (int)sizeof head - 1), (int)sizeof head - 1);
  }
  long ms = ms_until_closed(fd, t0);
  SSL_free(ssl);
  SSL_CTX_free(ctx);
  close(fd);
  return ms;
}

Test(gateway_hostile_door, tls_sockets_stalled_before_the_upgrade_close_at_the_timeout) {
  start("door-tls", true);
  long ms[TLS_CASES];
  for (int i = 0; i < TLS_CASES; i++)
    ms[i] = tls_stall(i);
  expect_all_cut(tls_what, ms, TLS_CASES);
  cr_assert_eq(itest_metric(gw.http_port, "wsgate_gateway_handshake_timeouts_total"), TLS_CASES);
  cr_assert_eq(itest_metric(gw.http_port, "wsgate_gateway_handshakes"), 0);
}
