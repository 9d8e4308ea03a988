/*
 * wss:// against the real gateway (--tls-cert / --tls-key): frames in and deliveries out over TLS
 * with a certificate the client verifies; ALPN stays http/1.1 when a client offers h2 (WebSocket
 * over HTTP/2 would bypass the upgrade's authentication); plaintext, garbage and distrusting
 * clients are turned away without disturbing the others; unusable TLS files stop the gateway at
 * start with an error naming them.
 *
 * The certificates are made here, with OpenSSL, for 127.0.0.1: nothing is read from the machine.
 *
 * Threads: the test's own thread.
 */
#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <errno.h>
#include <netinet/in.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "harness_kafka.h"
#include "harness.h"
#include "harness_tls.h"

static itest_gateway gw;
static itest_reader rd;
static char dir[64];
static char cert[128], key[128];             /* the gateway's */
static char other_cert[128], other_key[128]; /* a stranger's: another self-signed pair */

static void setup(void) {
  snprintf(dir, sizeof dir, "/tmp/wsgate-tls.XXXXXX");
  cr_assert_not_null(mkdtemp(dir));
  snprintf(cert, sizeof cert, "%s/cert.pem", dir);
  snprintf(key, sizeof key, "%s/key.pem", dir);
  snprintf(other_cert, sizeof other_cert, "%s/other-cert.pem", dir);
  snprintf(other_key, sizeof other_key, "%s/other-key.pem", dir);
  itest_make_cert(cert, key, "wsgate test gateway");
  itest_make_cert(other_cert, other_key, "somebody else");
}

static void teardown(void) {
  itest_reader_close(&rd);
  itest_gateway_cleanup(&gw);
  const char *files[] = {cert, key, other_cert, other_key};
  for (size_t i = 0; i < 4; i++)
    unlink(files[i]);
  rmdir(dir);
}

TestSuite(gateway_tls, .init = setup, .fini = teardown, .timeout = 120);

static void start_tls_gateway(const char *name) {
  const char *extra[] = {"--tls-cert", cert, "--tls-key", key, NULL};
  itest_gateway_start(&gw, NULL, name, &(itest_daemon_opts){.extra = extra});
}

/* A wss:// connection for user, trusting ca; returns ws_client_connect's result. */
static int connect_wss(const char *user, const char *ca, const char *alpn, ws_client **out,
                       char *err, size_t errlen) {
  char auth[2048];
  snprintf(auth, sizeof auth, "Authorization: Bearer %s", itest_token(user, 300));
  const char *headers[] = {auth, NULL};
  ws_client_options o = {.port = gw.port,
                         .headers = headers,
                         .subprotocol = "wsgate.v1",
                         .tls_ca_file = ca,
                         .tls_alpn = alpn};
  return ws_client_connect(out, &o, NULL, err, errlen);
}

Test(gateway_tls, frames_and_deliveries_cross_tls_with_alpn_pinned_to_http1) {
  start_tls_gateway("tls-flow");
  itest_reader_open(&rd, gw.cluster.in_topic, gw.cluster.in_partitions);
  int32_t slot = itest_gateway_slot(&gw);

  /* Offering h2 first: the gateway must still choose http/1.1. */
  ws_client *c = NULL;
  char err[256] = "";
  int rc = connect_wss("tina", cert, "h2,http/1.1", &c, err, sizeof err);
  cr_assert_eq(rc, WS_CLIENT_OK, "wss:// upgrade failed: %s", err);
  cr_assert_str_eq(ws_client_tls_alpn(c), "http/1.1");
  const char *version = ws_client_tls_version(c);
  cr_assert(strcmp(version, "TLSv1.3") == 0 || strcmp(version, "TLSv1.2") == 0, "TLS version %s",
            version);

  wsg_envelope e;
  itest_reader_expect(&rd, WSG_ENV_CONNECT, "tina", &e, ITEST_TIMEOUT_MS);
  uint64_t conn = e.conn;
  cr_assert_eq(ws_client_send_text(c, "over tls", 8), WS_CLIENT_OK);
  itest_reader_expect(&rd, WSG_ENV_MSG, "tina", &e, ITEST_TIMEOUT_MS);
  cr_assert(e.data_len == 8 && memcmp(e.data, "over tls", 8) == 0);
  cr_assert_eq(e.conn, conn);

  /* A delivery large enough to span several TLS records. */
  size_t big_len = 200 * 1024;
  char *big = malloc(big_len + 1);
  cr_assert_not_null(big);
  for (size_t i = 0; i < big_len; i++)
    big[i] = (char)('a' + i % 26);
  big[big_len] = '\0';
  itest_deliver(&gw, slot, NULL, conn, big);
  ws_message m;
  itest_expect_msg(c, WS_OP_TEXT, &m, ITEST_TIMEOUT_MS);
  cr_assert_eq(m.len, big_len);
  cr_assert(memcmp(m.data, big, big_len) == 0, "the delivery arrived altered");
  free(big);

  cr_assert_eq(ws_client_close(c, 1000, "bye", &m, 5000), WS_CLIENT_OK);
  cr_assert_eq(m.close_code, 1000);
  ws_client_destroy(c);
  itest_reader_expect(&rd, WSG_ENV_DISCONNECT, "tina", &e, ITEST_TIMEOUT_MS);
  cr_assert_eq(itest_gateway_stop(&gw, SIGTERM, 20000), 0, "the TLS gateway did not exit cleanly");
}

Test(gateway_tls, plaintext_garbage_and_distrusting_clients_are_turned_away_harmlessly) {
  start_tls_gateway("tls-refuse");
  char err[256] = "";

  /* ws:// to a wss:// port: no 101, whatever the TLS layer answers. */
  ws_client *c = NULL;
  ws_client_options plain = {.port = gw.port, .timeout_ms = 3000};
  int rc = ws_client_connect(&c, &plain, NULL, err, sizeof err);
  cr_assert_neq(rc, WS_CLIENT_OK, "a plaintext upgrade succeeded on the TLS port");

  /* Random bytes instead of a ClientHello: the gateway hangs up. */
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)gw.port)};
  sa.sin_addr.s_addr = htonl(0x7f000001);
  cr_assert_eq(connect(fd, (struct sockaddr *)&sa, sizeof sa), 0);
  char junk[4096];
  for (size_t i = 0; i < sizeof junk; i++)
    junk[i] = (char)(rand() & 0xff);
  cr_assert_eq(send(fd, junk, sizeof junk, MSG_NOSIGNAL), (ssize_t)sizeof junk);
  struct timeval tv = {.tv_sec = 10};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  char buf[512];
  ssize_t n;
  int reads = 0;
  while ((n = recv(fd, buf, sizeof buf, 0)) > 0 && ++reads < 100) {
  }
  cr_assert(n == 0 || (n < 0 && errno == ECONNRESET), "the gateway kept a garbage connection open");
  close(fd);

  /* A client that trusts another CA refuses the gateway's certificate. */
  rc = connect_wss("una", other_cert, NULL, &c, err, sizeof err);
  cr_assert_eq(rc, WS_CLIENT_TLS, "expected a certificate failure, got %s: %s",
               ws_client_strerror(rc), err);

  /* None of that disturbed the gateway: a proper client gets in, and it is still ready. */
  rc = connect_wss("vera", cert, NULL, &c, err, sizeof err);
  cr_assert_eq(rc, WS_CLIENT_OK, "wss:// upgrade failed after the bad clients: %s", err);
  cr_assert_eq(itest_wait_http(gw.http_port, "/readyz", 200, 5000), 0);
  ws_client_destroy(c);
  cr_assert_eq(itest_gateway_stop(&gw, SIGTERM, 20000), 0);
}

/* Starts the gateway with these TLS files; it must exit non-zero within 20 s, before it waits for
 * Kafka, with `expect` in its log. */
static void expect_start_failure(const char *name, const char *tls_cert, const char *tls_key,
                                 const char *expect) {
  const char *extra[] = {"--tls-cert", tls_cert, "--tls-key", tls_key, NULL};
  itest_gateway_start(&gw, NULL, name, &(itest_daemon_opts){.extra = extra, .no_wait = true});
  int status = 0;
  uint64_t deadline = itest_now_ms() + 20000;
  bool exited = false;
  while (!(exited = !itest_alive(gw.pid, &status)) && itest_now_ms() < deadline)
    usleep(50 * 1000);
  if (exited) { /* reaped: itest_gateway_cleanup must not signal a pid that may be reused */
    itest_untrack(gw.pid);
    gw.pid = 0;
  }
  char text[16384];
  itest_read_file(gw.log, text, sizeof text);
  if (!exited || !WIFEXITED(status) || WEXITSTATUS(status) == 0 || !strstr(text, expect))
    itest_dump_log(gw.log, 40);
  cr_assert(exited, "the gateway kept running with unusable TLS files (%s)", name);
  cr_assert(WIFEXITED(status) && WEXITSTATUS(status) != 0, "exit status %d", status);
  cr_assert(strstr(text, expect) != NULL, "the log does not say \"%s\"", expect);
  cr_assert(strstr(text, "waiting for Kafka") == NULL, "the TLS files were checked too late");
}

Test(gateway_tls, unusable_tls_files_stop_the_gateway_with_a_clear_error) {
  char missing[160];
  snprintf(missing, sizeof missing, "%s/no-such-cert.pem", dir);
  char text[400];
  snprintf(text, sizeof text, "--tls-cert %s: No such file or directory", missing);
  expect_start_failure("tls-missing", missing, key, text);
  /* A key that is not the certificate's: refused at start, not at the first client. */
  snprintf(text, sizeof text,
           "--tls-key %s is not the private key of the certificate in --tls-cert %s", other_key,
           cert);
  expect_start_failure("tls-mismatch", cert, other_key, text);
  /* A certificate where the key should be. */
  snprintf(text, sizeof text, "--tls-key %s: not a readable, unencrypted PEM private key", cert);
  expect_start_failure("tls-not-a-key", cert, cert, text);
}
