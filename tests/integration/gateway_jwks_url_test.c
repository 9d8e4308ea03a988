/*
 * The real gateway with --jwt-jwks-url: a JWKS served over HTTPS by a test server (Python's
 * http.server with ssl) whose certificate is signed by a throwaway CA the gateway trusts through
 * --jwt-jwks-ca-file. Tokens of the served key are accepted; the document is rotated during the
 * test and a token of the new kid is accepted once its first (refused) upgrade made the gateway
 * fetch again; with the server down, the last good keys still work and the failure is counted.
 */
#include <criterion/criterion.h>
#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/wait.h>
#include <unistd.h>

#include "gw_b64url.h"
#include "gw_jwt.h"
#include "harness.h"
#include "harness_daemons.h"

static itest_gateway gw;
static pid_t server_pid;
static EVP_PKEY *k1, *k2, *k3;
static char dir[] = "/tmp/wsgate-jwksurl-XXXXXX";

static void teardown(void) {
  if (server_pid > 0)
    itest_stop(server_pid, SIGTERM, 3000, NULL);
  itest_gateway_cleanup(&gw);
  EVP_PKEY_free(k1);
  EVP_PKEY_free(k2);
  EVP_PKEY_free(k3);
  char cmd[256];
  snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
  if (system(cmd) != 0)
    fprintf(stderr, "cannot remove %s\n", dir);
}

TestSuite(gateway_jwks_url, .fini = teardown, .timeout = 120);

/* Runs a shell command in dir. */
static void sh(const char *what) {
  char cmd[2048];
  snprintf(cmd, sizeof cmd, "cd %s && %s", dir, what);
  cr_assert_eq(system(cmd), 0, "failed: %s", cmd);
}

/* A CA, and a certificate for 127.0.0.1 signed by it, in dir. */
static void make_certs(void) {
  sh("openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.pem -days 1 "
     "-subj /CN=wsgate-test-ca 2>/dev/null");
  sh("openssl req -newkey rsa:2048 -nodes -keyout srv.key -out srv.csr "
     "-subj /CN=127.0.0.1 2>/dev/null && printf 'subjectAltName=IP:127.0.0.1\\n' > ext.cnf && "
     "openssl x509 -req -in srv.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out srv.pem -days 1 "
     "-extfile ext.cnf 2>/dev/null");
}

/* One JWK of an EC P-256 key. */
static void jwk(EVP_PKEY *k, const char *kid, char *out, size_t cap) {
  uint8_t pt[65];
  size_t n = 0;
  cr_assert(EVP_PKEY_get_octet_string_param(k, OSSL_PKEY_PARAM_PUB_KEY, pt, sizeof pt, &n) == 1 &&
            n == 65);
  char x[64] = {0}, y[64] = {0};
  gw_b64url_encode(pt + 1, 32, x);
  gw_b64url_encode(pt + 33, 32, y);
  snprintf(out, cap,
           "{\"kty\":\"EC\",\"crv\":\"P-256\",\"kid\":\"%s\",\"use\":\"sig\",\"x\":\"%s\","
           "\"y\":\"%s\"}",
           kid, x, y);
}

/* Replaces jwks.json atomically (a reader never sees half a document). */
static void serve_keys(EVP_PKEY *a, const char *akid, EVP_PKEY *b, const char *bkid) {
  char ja[512], jb[512] = "", path[128], tmp[128];
  jwk(a, akid, ja, sizeof ja);
  if (b) {
    jb[0] = ',';
    jwk(b, bkid, jb + 1, sizeof jb - 1);
  }
  snprintf(tmp, sizeof tmp, "%s/jwks.tmp", dir);
  snprintf(path, sizeof path, "%s/jwks.json", dir);
  FILE *f = fopen(tmp, "w");
  cr_assert(f);
  fprintf(f, "{\"keys\":[%s%s]}", ja, jb);
  fclose(f);
  cr_assert_eq(rename(tmp, path), 0);
}

static const char *mint(EVP_PKEY *key, const char *kid) {
  static char tok[4096];
  char claims[256];
  snprintf(claims, sizeof claims, "{\"sub\":\"alice\",\"exp\":%lld}", (long long)time(NULL) + 300);
  gw_jwt_signer s = {.alg = GW_JWT_ALG_ES256, .pkey = key, .kid = kid};
  int n = gw_jwt_sign_as(&s, NULL, claims, tok, sizeof tok);
  cr_assert_gt(n, 0, "sign: %s", gw_jwt_strerror(n));
  return tok;
}

static int upgrade(const char *token) {
  return itest_upgrade_status(&gw, token, NULL, 0);
}

/* Retries an upgrade until it is accepted (each refusal asks for a fetch). */
static bool accepted_within(EVP_PKEY *key, const char *kid, int timeout_ms) {
  uint64_t end = itest_now_ms() + (uint64_t)timeout_ms;
  while (itest_now_ms() < end) {
    if (upgrade(mint(key, kid)) == 101)
      return true;
    usleep(200 * 1000);
  }
  return false;
}

static double fetches(const char *result) {
  char series[128];
  snprintf(series, sizeof series, "wsgate_gateway_jwks_fetches_total{result=\"%s\"}", result);
  return itest_metric(gw.http_port, series);
}

static void start_server(int port) {
  char p[16], script[512], cert[128], key[128], *log = itest_log_path("jwks_https_server.log");
  snprintf(p, sizeof p, "%d", port);
  snprintf(script, sizeof script, "%s", WSG_TEST_JWKS_SERVER);
  snprintf(cert, sizeof cert, "%s/srv.pem", dir);
  snprintf(key, sizeof key, "%s/srv.key", dir);
  const char *argv[] = {"python3", script, p, dir, cert, key, NULL};
  server_pid = itest_spawn(argv, NULL, log);
  /* Listening once a TLS handshake works: poll with openssl's client. */
  char cmd[512];
  snprintf(cmd, sizeof cmd,
           "curl -sf --cacert %s/ca.pem https://127.0.0.1:%d/jwks.json >/dev/null 2>&1", dir, port);
  uint64_t end = itest_now_ms() + 10000;
  while (system(cmd) != 0) {
    cr_assert(itest_now_ms() < end, "the JWKS server did not come up (log %s)", log);
    usleep(100 * 1000);
  }
  free(log);
}

Test(gateway_jwks_url, rotation_unknown_kid_and_outage) {
  itest_require_servers();
  cr_assert(mkdtemp(dir));
  make_certs();
  k1 = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
  k2 = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
  k3 = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
  cr_assert(k1 && k2 && k3);
  serve_keys(k1, "k1", NULL, NULL);
  int port = itest_free_port();
  start_server(port);

  char url[128], ca[128];
  snprintf(url, sizeof url, "https://127.0.0.1:%d/jwks.json", port);
  snprintf(ca, sizeof ca, "%s/ca.pem", dir);
  const char *extra[] = {"--jwt-algorithms",
                         "ES256",
                         "--jwt-jwks-url",
                         url,
                         "--jwt-jwks-ca-file",
                         ca,
                         "--jwt-jwks-refresh",
                         "1h",
                         "--jwt-jwks-min-interval",
                         "1s",
                         NULL};
  itest_gateway_start(&gw, NULL, "jwksurl", &(itest_daemon_opts){.extra = extra});
  cr_assert_eq(fetches("ok"), 1, "the first fetch happens at start");
  cr_assert_eq(itest_metric(gw.http_port, "wsgate_gateway_jwks_keys"), 1);
  cr_assert_eq(upgrade(mint(k1, "k1")), 101, "a token of the served key");
  cr_assert_eq(upgrade(mint(k2, "k2")), 401, "k2 is not served yet");

  /* The provider rotates: k2 is added. The next unknown-kid refusal fetches again. */
  serve_keys(k2, "k2", k1, "k1");
  cr_assert(accepted_within(k2, "k2", 15000), "the new kid was never picked up");
  cr_assert_geq(fetches("ok"), 2);
  cr_assert_eq(itest_metric(gw.http_port, "wsgate_gateway_jwks_keys"), 2);
  cr_assert_gt(itest_metric(gw.http_port, "wsgate_gateway_jwks_last_success_seconds"), 0);

  /* The provider goes down: an unknown kid makes the gateway try, fail, and keep k1 and k2. */
  cr_assert_eq(itest_stop(server_pid, SIGTERM, 5000, NULL), 0);
  server_pid = 0;
  cr_assert_eq(upgrade(mint(k3, "k3")), 401);
  uint64_t end = itest_now_ms() + 15000;
  while (fetches("network") < 1) {
    cr_assert(itest_now_ms() < end, "the failed fetch was never counted");
    usleep(200 * 1000);
    upgrade(mint(k3, "k3"));
  }
  cr_assert_eq(upgrade(mint(k1, "k1")), 101, "the last good keys stay in use");
  cr_assert_eq(upgrade(mint(k2, "k2")), 101, "the last good keys stay in use");
  /* k1, k2 and the harness' --jwt-secret */
  cr_assert_eq(itest_metric(gw.http_port, "wsgate_gateway_jwt_keys"), 3);
  /* The drain joins the fetch thread (its provider is down) and exits cleanly, quickly. */
  uint64_t t0 = itest_now_ms();
  int status = itest_gateway_stop(&gw, SIGTERM, 15000);
  cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0, "exit status %d", status);
  cr_assert_lt(itest_now_ms() - t0, 8000);
}
