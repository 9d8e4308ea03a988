/*
 * The real gateway with public-key tokens: an RS256 key from --jwt-key-file (PEM) and an ES256
 * key from --jwt-jwks-file, --jwt-algorithms RS256,ES256 and --jwt-issuer. Valid tokens of both
 * kinds are accepted; a wrong key, an unknown kid, a wrong issuer, an HS256 token signed with the
 * gateway's own secret (not an accepted algorithm) and one signed with the RSA public key as HMAC
 * secret (algorithm confusion) get 401 with the reason in the body.
 */
#include <criterion/criterion.h>
#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "harness_kafka.h"
#include "gw_b64url.h"
#include "gw_jwt.h"
#include "harness.h"

#define ISSUER "https://idp.example.com/realms/wsgate"

static itest_gateway gw;
static EVP_PKEY *rsa, *rsa_other, *ec;
static char dir[] = "/tmp/wsgate-jwtkeys-XXXXXX";
static char pem_path[128], jwks_path[128];

static void teardown(void) {
  itest_gateway_cleanup(&gw);
  EVP_PKEY_free(rsa);
  EVP_PKEY_free(rsa_other);
  EVP_PKEY_free(ec);
  unlink(pem_path);
  unlink(jwks_path);
  rmdir(dir);
}

TestSuite(gateway_jwt_keys, .fini = teardown, .timeout = 120);

/* The JWKS document of the EC key, with kid "ec-1". */
static void write_jwks(const char *path) {
  uint8_t pt[65];
  size_t n = 0;
  cr_assert(EVP_PKEY_get_octet_string_param(ec, OSSL_PKEY_PARAM_PUB_KEY, pt, sizeof pt, &n) == 1 &&
            n == 65);
  char x[64] = {0}, y[64] = {0};
  gw_b64url_encode(pt + 1, 32, x);
  gw_b64url_encode(pt + 33, 32, y);
  FILE *f = fopen(path, "w");
  cr_assert(f);
  fprintf(f,
          "{\"keys\":[{\"kty\":\"EC\",\"crv\":\"P-256\",\"kid\":\"ec-1\",\"use\":\"sig\","
          "\"x\":\"%s\",\"y\":\"%s\"},{\"kty\":\"unknown-future-type\",\"kid\":\"z\"}]}",
          x, y);
  fclose(f);
}

static void start(void) {
  cr_assert(mkdtemp(dir));
  rsa = EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)2048);
  rsa_other = EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)2048);
  ec = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
  cr_assert(rsa && rsa_other && ec);
  snprintf(pem_path, sizeof pem_path, "%s/rsa.pub", dir);
  snprintf(jwks_path, sizeof jwks_path, "%s/jwks.json", dir);
  FILE *f = fopen(pem_path, "w");
  cr_assert(f && PEM_write_PUBKEY(f, rsa) == 1);
  fclose(f);
  write_jwks(jwks_path);
  const char *extra[] = {
      "--jwt-algorithms", "RS256,ES256",  "--jwt-key-file", pem_path, "--jwt-jwks-file",
      jwks_path,          "--jwt-issuer", ISSUER,           NULL};
  itest_gateway_start(&gw, NULL, "jwtkeys", &(itest_daemon_opts){.extra = extra});
}

static const char *mint(gw_jwt_alg alg, EVP_PKEY *key, const char *kid, const char *iss) {
  static char tok[4096];
  char claims[256];
  snprintf(claims, sizeof claims, "{\"sub\":\"alice\",\"iss\":\"%s\",\"exp\":%lld}", iss,
           (long long)time(NULL) + 300);
  gw_jwt_signer s = {.alg = alg, .pkey = key, .kid = kid};
  int n = gw_jwt_sign_as(&s, NULL, claims, tok, sizeof tok);
  cr_assert_gt(n, 0, "sign: %s", gw_jwt_strerror(n));
  return tok;
}

/* The upgrade's status; body copied to `body`. */
static int upgrade(const char *token, char *body, size_t cap) {
  return itest_upgrade_status(&gw, token, body, cap);
}

static void expect(const char *what, const char *token, int status, const char *in_body) {
  char body[2048] = "";
  int st = upgrade(token, body, sizeof body);
  cr_assert_eq(st, status, "%s: status %d, expected %d (%s)", what, st, status, body);
  if (in_body)
    cr_assert(strstr(body, in_body), "%s: body %s lacks %s", what, body, in_body);
}

Test(gateway_jwt_keys, pem_and_jwks_keys) {
  start();
  expect("RS256 from the PEM key", mint(GW_JWT_ALG_RS256, rsa, NULL, ISSUER), 101, NULL);
  expect("ES256 from the JWKS", mint(GW_JWT_ALG_ES256, ec, "ec-1", ISSUER), 101, NULL);

  expect("RS256, other key", mint(GW_JWT_ALG_RS256, rsa_other, NULL, ISSUER), 401, "signature");
  expect("ES256, unknown kid", mint(GW_JWT_ALG_ES256, ec, "ec-2", ISSUER), 401, "kid");
  expect("wrong issuer", mint(GW_JWT_ALG_ES256, ec, "ec-1", "https://evil.example.com"), 401,
         "iss");
  expect("HS256 not accepted", itest_token("alice", 300), 401, "--jwt-algorithms");

  /* Algorithm confusion: HS256 keyed with the PEM text the gateway was given. */
  FILE *f = fopen(pem_path, "r");
  char pem[4096];
  size_t n = fread(pem, 1, sizeof pem, f);
  fclose(f);
  char claims[256], tok[4096];
  snprintf(claims, sizeof claims, "{\"sub\":\"alice\",\"iss\":\"%s\",\"exp\":%lld}", ISSUER,
           (long long)time(NULL) + 300);
  cr_assert_gt(gw_jwt_sign((const uint8_t *)pem, n, claims, tok, sizeof tok), 0);
  expect("HS256 keyed with the RSA public key", tok, 401, "invalid_token");
  cr_assert_eq(itest_metric(gw.http_port, "wsgate_gateway_upgrades_total{result=\"ok\"}"), 2);
  cr_assert_eq(itest_metric(gw.http_port, "wsgate_gateway_upgrades_total{result=\"unauthorized\"}"),
               5);
}
