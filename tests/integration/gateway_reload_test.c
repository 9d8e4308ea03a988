/*
 * Rotation without restarts (gw_reload): the gateway's certificate and key are mounted the way a
 * Kubernetes Secret is (cert.pem -> ..data/cert.pem, ..data -> a versioned directory, swapped by
 * renaming a new symlink over ..data). With 100 wss:// clients connected, ..data is swapped to a
 * new certificate: every client stays connected, and new handshakes get the new certificate (a
 * client trusting only it succeeds, one trusting only the old one fails). A swap to an unusable
 * certificate is refused and the good one kept; SIGHUP reloads too. The same for a JWT public key
 * file (--jwt-key-file) replaced by a rename: tokens of the new key are accepted, the old key's
 * refused, and an unusable file is refused with the new key kept; and for the HS256 secret file
 * (--jwt-secret-file) rewritten in place.
 */
#include <criterion/criterion.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <time.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "gw_jwt.h"
#include "harness.h"
#include "harness_daemons.h"
#include "harness_tls.h"

#define CLIENTS 100

static itest_gateway gw;
static ws_client *clients[CLIENTS];
static char dir[] = "/tmp/wsgate-reload-XXXXXX";

static void teardown(void) {
  for (int i = 0; i < CLIENTS; i++)
    ws_client_destroy(clients[i]);
  itest_gateway_cleanup(&gw);
  char cmd[128];
  snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
  if (system(cmd) != 0)
    fprintf(stderr, "cannot remove %s\n", dir);
}

TestSuite(gateway_reload, .fini = teardown, .timeout = 180);

static void path(char *out, size_t cap, const char *name) {
  snprintf(out, cap, "%s/%s", dir, name);
}

/* A version directory with cert.pem and key.pem (cn NULL: an unusable certificate). */
static void make_version(const char *name, const char *cn) {
  char d[128], c[160], k[160];
  path(d, sizeof d, name);
  cr_assert_eq(mkdir(d, 0700), 0);
  snprintf(c, sizeof c, "%s/cert.pem", d);
  snprintf(k, sizeof k, "%s/key.pem", d);
  if (cn) {
    itest_make_cert(c, k, cn);
    return;
  }
  FILE *f = fopen(c, "w");
  cr_assert(f);
  fputs("-----BEGIN CERTIFICATE-----\nnot a certificate\n-----END CERTIFICATE-----\n", f);
  fclose(f);
  f = fopen(k, "w");
  cr_assert(f);
  fclose(f);
}

/* ..data -> version, atomically (a new symlink renamed over the old one, as kubelet does). */
static void point_data_at(const char *version) {
  char tmp[128], data[128];
  path(tmp, sizeof tmp, "..data_tmp");
  path(data, sizeof data, "..data");
  unlink(tmp);
  cr_assert_eq(symlink(version, tmp), 0);
  cr_assert_eq(rename(tmp, data), 0);
}

static int connect_wss(const char *user, const char *ca, ws_client **out) {
  char auth[2048], err[256];
  snprintf(auth, sizeof auth, "Authorization: Bearer %s", itest_token(user, 600));
  const char *headers[] = {auth, NULL};
  ws_client_options o = {
      .port = gw.port, .headers = headers, .subprotocol = "wsgate.v1", .tls_ca_file = ca};
  return ws_client_connect(out, &o, NULL, err, sizeof err);
}

/* Whether a fresh handshake trusting only the certificate of `version` succeeds. */
static bool handshake_trusting(const char *version) {
  char ca[160];
  snprintf(ca, sizeof ca, "%s/%s/cert.pem", dir, version);
  ws_client *c = NULL;
  int rc = connect_wss("newcomer", ca, &c);
  ws_client_destroy(c);
  return rc == WS_CLIENT_OK;
}

static void wait_metric(const char *series, double at_least) {
  itest_wait_metric(gw.http_port, series, at_least, 15000);
}

/* Every client gets a pong for its ping: none was dropped. The gauge is waited for, not read once:
 * the last handshake_trusting() connection closed abruptly, and the gateway counts it until it
 * notices (not before its Redis registration answers, which may come after all 100 pongs). */
static void all_still_connected(void) {
  for (int i = 0; i < CLIENTS; i++) {
    ws_message m;
    cr_assert_eq(ws_client_send(clients[i], WS_OP_PING, "p", 1), 0, "client %d", i);
    int rc = ws_client_recv(clients[i], &m, 10000);
    cr_assert_eq(rc, WS_CLIENT_OK, "client %d: %s", i, ws_client_strerror(rc));
    cr_assert_eq(m.opcode, WS_OP_PONG, "client %d: opcode %d", i, (int)m.opcode);
  }
  itest_wait_metric_eq(gw.http_port, "wsgate_gateway_connections", CLIENTS, 10000);
}

Test(gateway_reload, certificate_swapped_under_open_connections) {
  itest_require_servers();
  cr_assert(mkdtemp(dir));
  make_version("v1", "wsgate reload v1");
  make_version("v2", "wsgate reload v2");
  make_version("broken", NULL);
  point_data_at("v1");
  char cert[128], key[128], v1ca[128];
  path(cert, sizeof cert, "cert.pem");
  path(key, sizeof key, "key.pem");
  path(v1ca, sizeof v1ca, "v1/cert.pem");
  cr_assert_eq(symlink("..data/cert.pem", cert), 0);
  cr_assert_eq(symlink("..data/key.pem", key), 0);
  const char *extra[] = {"--tls-cert", cert, "--tls-key", key, NULL};
  itest_gateway_start(&gw, NULL, "reload", &(itest_daemon_opts){.extra = extra});
  double expiry_v1 = itest_metric(gw.http_port, "wsgate_gateway_tls_cert_expiry_seconds");
  cr_assert_gt(expiry_v1, 0);

  for (int i = 0; i < CLIENTS; i++) {
    char user[32];
    snprintf(user, sizeof user, "user%d", i);
    int rc = connect_wss(user, v1ca, &clients[i]);
    cr_assert_eq(rc, WS_CLIENT_OK, "client %d: %s", i, ws_client_strerror(rc));
  }

  all_still_connected();
  /* The Secret is updated: new handshakes get v2, the 100 connections stay. */
  point_data_at("v2");
  wait_metric("wsgate_gateway_reloads_total{result=\"ok\"}", 1);
  cr_assert(handshake_trusting("v2"), "a new handshake does not get the new certificate");
  cr_assert(!handshake_trusting("v1"), "a new handshake still gets the old certificate");
  all_still_connected();
  double expiry_v2 = itest_metric(gw.http_port, "wsgate_gateway_tls_cert_expiry_seconds");
  cr_assert_geq(expiry_v2, expiry_v1);
  itest_wait_metric_eq(gw.http_port, "wsgate_gateway_reload_last_success", 1, 5000);

  /* An unusable certificate is refused: v2 stays in use. */
  point_data_at("broken");
  wait_metric("wsgate_gateway_reloads_total{result=\"refused\"}", 1);
  itest_wait_metric_eq(gw.http_port, "wsgate_gateway_reload_last_success", 0, 5000);
  cr_assert(handshake_trusting("v2"), "the refused file replaced the good certificate");

  /* SIGHUP reloads as well: back to v1 by hand. */
  char data[128];
  path(data, sizeof data, "..data");
  unlink(data);
  cr_assert_eq(symlink("v1", data), 0);
  /* The unlink/symlink events reload on their own first (v1 again: the second ok); waited for,
   * not slept on, so the next ok is the SIGHUP's even when the box is slow. */
  wait_metric("wsgate_gateway_reloads_total{result=\"ok\"}", 2);
  cr_assert_eq(kill(gw.pid, SIGHUP), 0);
  wait_metric("wsgate_gateway_reloads_total{result=\"ok\"}", 3);
  cr_assert(handshake_trusting("v1"));
  all_still_connected();
  for (int i = 0; i < CLIENTS; i++) {
    ws_client_destroy(clients[i]);
    clients[i] = NULL;
  }
  int status = itest_gateway_stop(&gw, SIGTERM, 15000);
  cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0, "exit status %d", status);
}

static void write_pubkey(const char *file, EVP_PKEY *k) {
  char tmp[160], dst[160];
  path(tmp, sizeof tmp, "key.tmp");
  path(dst, sizeof dst, file);
  FILE *f = fopen(tmp, "w");
  cr_assert(f);
  if (k)
    cr_assert_eq(PEM_write_PUBKEY(f, k), 1);
  else
    fputs("-----BEGIN PUBLIC KEY-----\nnot a key\n-----END PUBLIC KEY-----\n", f);
  fclose(f);
  cr_assert_eq(rename(tmp, dst), 0); /* the way an editor or a deploy tool replaces a file */
}

static int upgrade_as(EVP_PKEY *k) {
  char claims[128], tok[2048];
  snprintf(claims, sizeof claims, "{\"sub\":\"alice\",\"exp\":%lld}", (long long)time(NULL) + 300);
  gw_jwt_signer sg = {.alg = GW_JWT_ALG_ES256, .pkey = k};
  cr_assert_gt(gw_jwt_sign_as(&sg, NULL, claims, tok, sizeof tok), 0);
  return itest_upgrade_status(&gw, tok, NULL, 0);
}

Test(gateway_reload, jwt_key_file_replaced) {
  itest_require_servers();
  cr_assert(mkdtemp(dir));
  EVP_PKEY *a = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
  EVP_PKEY *b = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
  cr_assert(a && b);
  write_pubkey("idp.pem", a);
  char pem[128];
  path(pem, sizeof pem, "idp.pem");
  const char *extra[] = {"--jwt-algorithms", "ES256,HS256", "--jwt-key-file", pem, NULL};
  itest_gateway_start(&gw, NULL, "reloadkey", &(itest_daemon_opts){.extra = extra});
  cr_assert_eq(upgrade_as(a), 101);
  cr_assert_eq(upgrade_as(b), 401);

  write_pubkey("idp.pem", b);
  wait_metric("wsgate_gateway_reloads_total{result=\"ok\"}", 1);
  cr_assert_eq(upgrade_as(b), 101, "the new key is not in use");
  cr_assert_eq(upgrade_as(a), 401, "the old key is still in use");

  write_pubkey("idp.pem", NULL);
  wait_metric("wsgate_gateway_reloads_total{result=\"refused\"}", 1);
  cr_assert_eq(upgrade_as(b), 101, "the refused file replaced the good key");
  EVP_PKEY_free(a);
  EVP_PKEY_free(b);
}

static void write_secret(const char *secret) {
  char p[160];
  path(p, sizeof p, "secret");
  FILE *f = fopen(p, "w");
  cr_assert(f);
  fprintf(f, "%s\n", secret);
  fclose(f);
}

static int upgrade_hs256(const char *secret) {
  char claims[128], tok[1024];
  snprintf(claims, sizeof claims, "{\"sub\":\"alice\",\"exp\":%lld}", (long long)time(NULL) + 300);
  cr_assert_gt(gw_jwt_sign((const uint8_t *)secret, strlen(secret), claims, tok, sizeof tok), 0);
  return itest_upgrade_status(&gw, tok, NULL, 0);
}

Test(gateway_reload, jwt_secret_file_rewritten) {
  itest_require_servers();
  cr_assert(mkdtemp(dir));
  const char *old_secret = "the-first-secret-of-at-least-32-bytes-0000";
  const char *new_secret = "the-second-secret-of-at-least-32-bytes-111";
  write_secret(old_secret);
  char file[128];
  path(file, sizeof file, "secret");
  itest_gateway_start(&gw, NULL, "reloadsecret", &(itest_daemon_opts){.jwt_secret_file = file});
  cr_assert_eq(upgrade_hs256(old_secret), 101);

  write_secret(new_secret);
  wait_metric("wsgate_gateway_reloads_total{result=\"ok\"}", 1);
  cr_assert_eq(upgrade_hs256(new_secret), 101, "the new secret is not in use");
  cr_assert_eq(upgrade_hs256(old_secret), 401, "the old secret is still in use");

  write_secret("short");
  wait_metric("wsgate_gateway_reloads_total{result=\"refused\"}", 1);
  cr_assert_eq(upgrade_hs256(new_secret), 101, "the refused secret replaced the good one");
}
