/*
 * Unit tests for gw_keyset and gw_jwt's public-key algorithms: every algorithm round-trips
 * through gw_jwt_sign_as and gw_jwt_verify_token with keys loaded from PEM and from JWKS; key
 * selection by kid, key/algorithm mismatch (algorithm confusion), JWKS documents skipped or
 * refused with an error naming the key, reference counting.
 */
#include <criterion/criterion.h>
#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <stdio.h>
#include <string.h>

#include "gw_b64url.h"
#include "gw_jwt.h"
#include "gw_keyset.h"

#define NOW 1700000000
static const char SECRET[] = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
static const char CLAIMS[] = "{\"sub\":\"alice\",\"exp\":1700000060,\"iss\":\"https://idp\"}";
static char err[1024];

static EVP_PKEY *keygen(gw_jwt_alg alg) {
  switch (gw_jwt_alg_key_type(alg)) {
  case GW_KEY_RSA:
    return EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)2048);
  case GW_KEY_EC_P256:
    return EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
  case GW_KEY_EC_P384:
    return EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-384");
  case GW_KEY_ED25519:
    return EVP_PKEY_Q_keygen(NULL, NULL, "ED25519");
  default:
    return NULL;
  }
}

/* The public half as PEM text (static buffer). */
static const char *pub_pem(EVP_PKEY *k) {
  static char buf[4096];
  BIO *b = BIO_new(BIO_s_mem());
  cr_assert(PEM_write_bio_PUBKEY(b, k) == 1);
  int n = BIO_read(b, buf, sizeof buf - 1);
  BIO_free(b);
  cr_assert_gt(n, 0);
  buf[n] = '\0';
  return buf;
}

static const char *sign(gw_jwt_alg alg, EVP_PKEY *k, const char *kid) {
  static char tok[4096];
  gw_jwt_signer s = {.alg = alg,
                     .pkey = k,
                     .kid = kid,
                     .secret = (const uint8_t *)SECRET,
                     .secret_len = strlen(SECRET)};
  int n = gw_jwt_sign_as(&s, NULL, CLAIMS, tok, sizeof tok);
  cr_assert_gt(n, 0, "%s: %s", gw_jwt_alg_name(alg), gw_jwt_strerror(n));
  return tok;
}

static int verify(const gw_keyset *ks, uint32_t algs, const char *tok) {
  gw_jwt_config c = {.keys = ks, .algs = algs, .issuers = "https://other, https://idp"};
  gw_jwt_claims out;
  int rc = gw_jwt_verify_token(&c, tok, strlen(tok), NOW, &out);
  if (rc == GW_JWT_OK) {
    cr_assert_str_eq(out.user, "alice");
    cr_assert_eq(out.exp_s, 1700000060);
    cr_assert_not_null(out.key);
  }
  return rc;
}

#define assert_rc(got, want)                                                                       \
  do {                                                                                             \
    int got_ = (got);                                                                              \
    cr_assert_eq(got_, (want), "got %s, want %s", gw_jwt_err_name(got_), gw_jwt_err_name(want));   \
  } while (0)

Test(gw_keyset, every_algorithm_round_trips_from_pem) {
  for (int a = 0; a < GW_JWT_ALG_COUNT; a++) {
    gw_keyset *ks = gw_keyset_create();
    EVP_PKEY *k = keygen((gw_jwt_alg)a), *other = keygen((gw_jwt_alg)a);
    if (k) {
      const char *pem = pub_pem(k);
      cr_assert_eq(gw_keyset_add_pem(ks, pem, strlen(pem), NULL, "test", err, sizeof err), 0, "%s",
                   err);
    } else {
      cr_assert_eq(
          gw_keyset_add_secret(ks, (const uint8_t *)SECRET, strlen(SECRET), NULL, err, sizeof err),
          0);
    }
    uint32_t only = 1u << a;
    assert_rc(verify(ks, only, sign((gw_jwt_alg)a, k, NULL)), GW_JWT_OK);
    /* The same token refused when its algorithm is not configured. */
    assert_rc(verify(ks, ~only & ((1u << GW_JWT_ALG_COUNT) - 1), sign((gw_jwt_alg)a, k, NULL)),
              GW_JWT_BAD_ALG);
    if (other)
      assert_rc(verify(ks, only, sign((gw_jwt_alg)a, other, NULL)), GW_JWT_BAD_SIGNATURE);
    EVP_PKEY_free(k);
    EVP_PKEY_free(other);
    gw_keyset_unref(ks);
  }
}

/* A JWK of the public key k (kid given), as PyJWT or a provider would publish it. */
static void jwk_of(EVP_PKEY *k, const char *kid, char *out, size_t cap) {
  char a[1100] = {0}, b[1100] = {0};
  uint8_t buf[600];
  size_t n = 0;
  int t = gw_key_type_of_pkey(k);
  if (t == GW_KEY_RSA) {
    BIGNUM *bn = NULL, *be = NULL;
    cr_assert(EVP_PKEY_get_bn_param(k, OSSL_PKEY_PARAM_RSA_N, &bn) == 1);
    cr_assert(EVP_PKEY_get_bn_param(k, OSSL_PKEY_PARAM_RSA_E, &be) == 1);
    n = (size_t)BN_bn2bin(bn, buf);
    gw_b64url_encode(buf, n, a);
    n = (size_t)BN_bn2bin(be, buf);
    gw_b64url_encode(buf, n, b);
    BN_free(bn);
    BN_free(be);
    snprintf(out, cap, "{\"kty\":\"RSA\",\"kid\":\"%s\",\"n\":\"%s\",\"e\":\"%s\"}", kid, a, b);
  } else if (t == GW_KEY_ED25519) {
    n = sizeof buf;
    cr_assert(EVP_PKEY_get_raw_public_key(k, buf, &n) == 1);
    gw_b64url_encode(buf, n, a);
    snprintf(out, cap, "{\"kty\":\"OKP\",\"crv\":\"Ed25519\",\"kid\":\"%s\",\"x\":\"%s\"}", kid, a);
  } else {
    cr_assert(EVP_PKEY_get_octet_string_param(k, OSSL_PKEY_PARAM_PUB_KEY, buf, sizeof buf, &n) ==
              1);
    size_t half = (n - 1) / 2;
    gw_b64url_encode(buf + 1, half, a);
    gw_b64url_encode(buf + 1 + half, half, b);
    snprintf(out, cap, "{\"kty\":\"EC\",\"crv\":\"%s\",\"kid\":\"%s\",\"x\":\"%s\",\"y\":\"%s\"}",
             half == 32 ? "P-256" : "P-384", kid, a, b);
  }
}

Test(gw_keyset, jwks_selects_by_kid_and_refuses_confusion) {
  EVP_PKEY *rsa = keygen(GW_JWT_ALG_RS256), *ec = keygen(GW_JWT_ALG_ES256);
  EVP_PKEY *ec384 = keygen(GW_JWT_ALG_ES384), *ed = keygen(GW_JWT_ALG_EdDSA);
  static char doc[16384], j1[2048], j2[512], j3[512], j4[512];
  jwk_of(rsa, "r1", j1, sizeof j1);
  jwk_of(ec, "e1", j2, sizeof j2);
  jwk_of(ec384, "e2", j3, sizeof j3);
  jwk_of(ed, "d1", j4, sizeof j4);
  char k64[128] = {0};
  gw_b64url_encode((const uint8_t *)SECRET, strlen(SECRET), k64);
  snprintf(doc, sizeof doc,
           "{\"keys\":[%s,%s,%s,%s,{\"kty\":\"oct\",\"kid\":\"h1\",\"alg\":\"HS512\",\"k\":\"%s\"},"
           "{\"kty\":\"EC\",\"crv\":\"P-521\",\"kid\":\"big\"},{\"kty\":\"RSA\",\"use\":\"enc\"},"
           "{\"kty\":\"xyz\"}]}",
           j1, j2, j3, j4, k64);
  gw_keyset *ks = gw_keyset_create();
  cr_assert_eq(gw_keyset_add_jwks(ks, doc, strlen(doc), "jwks", err, sizeof err), 0, "%s", err);
  cr_assert_eq(gw_keyset_count(ks), 5, "skipped keys are not counted");
  uint32_t all = (1u << GW_JWT_ALG_COUNT) - 1;
  assert_rc(verify(ks, all, sign(GW_JWT_ALG_RS256, rsa, "r1")), GW_JWT_OK);
  assert_rc(verify(ks, all, sign(GW_JWT_ALG_PS256, rsa, "r1")), GW_JWT_OK);
  assert_rc(verify(ks, all, sign(GW_JWT_ALG_ES256, ec, "e1")), GW_JWT_OK);
  assert_rc(verify(ks, all, sign(GW_JWT_ALG_ES384, ec384, "e2")), GW_JWT_OK);
  assert_rc(verify(ks, all, sign(GW_JWT_ALG_EdDSA, ed, "d1")), GW_JWT_OK);
  assert_rc(verify(ks, all, sign(GW_JWT_ALG_HS512, NULL, "h1")), GW_JWT_OK);
  /* The key is pinned to HS512 by its JWK "alg". */
  assert_rc(verify(ks, all, sign(GW_JWT_ALG_HS256, NULL, "h1")), GW_JWT_KEY_ALG_MISMATCH);
  assert_rc(verify(ks, all, sign(GW_JWT_ALG_RS256, rsa, "nope")), GW_JWT_UNKNOWN_KID);
  assert_rc(verify(ks, all, sign(GW_JWT_ALG_RS256, rsa, NULL)), GW_JWT_OK);
  assert_rc(verify(ks, all, sign(GW_JWT_ALG_ES256, ec, "e2")), GW_JWT_KEY_ALG_MISMATCH);

  /* Algorithm confusion: HS256 keyed with the RSA key's PEM, naming the RSA key's kid. */
  const char *pem = pub_pem(rsa);
  char tok[4096];
  gw_jwt_signer conf = {.alg = GW_JWT_ALG_HS256,
                        .secret = (const uint8_t *)pem,
                        .secret_len = strlen(pem),
                        .kid = "r1"};
  cr_assert_gt(gw_jwt_sign_as(&conf, NULL, CLAIMS, tok, sizeof tok), 0);
  assert_rc(verify(ks, all, tok), GW_JWT_KEY_ALG_MISMATCH);
  /* A header that lies: alg RS256 over an HMAC signature. */
  cr_assert_gt(gw_jwt_sign_as(&conf, "{\"alg\":\"RS256\",\"kid\":\"r1\"}", CLAIMS, tok, sizeof tok),
               0);
  assert_rc(verify(ks, all, tok), GW_JWT_BAD_SIGNATURE);
  /* kid must be a non-empty string. */
  cr_assert_gt(gw_jwt_sign_as(&conf, "{\"alg\":\"HS256\",\"kid\":7}", CLAIMS, tok, sizeof tok), 0);
  assert_rc(verify(ks, all, tok), GW_JWT_BAD_KID);
  /* Issuer checked against the list. */
  gw_jwt_signer es = {.alg = GW_JWT_ALG_ES256, .pkey = ec, .kid = "e1"};
  cr_assert_gt(gw_jwt_sign_as(&es, NULL, "{\"sub\":\"a\",\"exp\":1700000060,\"iss\":\"https://x\"}",
                              tok, sizeof tok),
               0);
  assert_rc(verify(ks, all, tok), GW_JWT_BAD_ISSUER);
  /* A signer whose key does not fit its algorithm is refused before signing. */
  es.alg = GW_JWT_ALG_ES384;
  assert_rc(gw_jwt_sign_as(&es, NULL, CLAIMS, tok, sizeof tok), GW_JWT_KEY_ALG_MISMATCH);

  /* Refcounting: a second reference keeps the set alive after the first is dropped. */
  gw_keyset *again = gw_keyset_ref(ks);
  gw_keyset_unref(ks);
  cr_assert_eq(gw_keyset_count(again), 5);
  gw_keyset_unref(again);
  gw_keyset_unref(NULL);
  EVP_PKEY_free(rsa);
  EVP_PKEY_free(ec);
  EVP_PKEY_free(ec384);
  EVP_PKEY_free(ed);
}

static void expect_jwks_error(const char *doc, int want, const char *needle) {
  gw_keyset *ks = gw_keyset_create();
  int rc = gw_keyset_add_jwks(ks, doc, strlen(doc), "f.json", err, sizeof err);
  cr_assert_eq(rc, want, "%s: got %s (%s)", doc, gw_keyset_err_name(rc), err);
  cr_assert(strstr(err, needle), "%s: error \"%s\" lacks \"%s\"", doc, err, needle);
  cr_assert_eq(gw_keyset_count(ks), 0, "a failed document adds nothing");
  gw_keyset_unref(ks);
}

Test(gw_keyset, malformed_jwks_refused_with_the_key_named) {
  expect_jwks_error("not json", GW_KEYSET_BAD_JWKS, "f.json: not JSON");
  expect_jwks_error("{\"keys\":{}}", GW_KEYSET_BAD_JWKS, "{\"keys\":[...]}");
  expect_jwks_error("{\"keys\":[]}", GW_KEYSET_EMPTY, "no signing key");
  expect_jwks_error("{\"keys\":[{\"kty\":\"other\"}]}", GW_KEYSET_EMPTY, "no signing key");
  expect_jwks_error("{\"keys\":[7]}", GW_KEYSET_BAD_JWK, "keys[0] is not a JSON object");
  expect_jwks_error("{\"keys\":[{\"kid\":\"a\"}]}", GW_KEYSET_BAD_JWK, "\"kty\" is missing");
  expect_jwks_error("{\"keys\":[{\"kty\":\"RSA\",\"kid\":\"r\",\"e\":\"AQAB\"}]}",
                    GW_KEYSET_BAD_JWK, "keys[0] (kid \"r\"): member \"n\"");
  expect_jwks_error("{\"keys\":[{\"kty\":\"RSA\",\"n\":\"AQAB\",\"e\":\"AQAB\"}]}",
                    GW_KEYSET_BAD_JWK, "do not make an RSA public key");
  EVP_PKEY *small = EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)1024);
  static char jwk[2048], weak[2100];
  jwk_of(small, "old", jwk, sizeof jwk);
  snprintf(weak, sizeof weak, "{\"keys\":[%s]}", jwk);
  expect_jwks_error(weak, GW_KEYSET_WEAK_KEY, "1024 bits; at least 2048");
  EVP_PKEY_free(small);
  expect_jwks_error("{\"keys\":[{\"kty\":\"EC\",\"crv\":\"P-256\",\"x\":\"AAAA\",\"y\":\"AAAA\"}]}",
                    GW_KEYSET_BAD_JWK, "want 32");
  /* A coordinate far longer than the curve's (found by jwt_fuzz: it overflowed the point). */
  static char longx[600], ldoc[800];
  memset(longx, 'A', 400);
  snprintf(ldoc, sizeof ldoc,
           "{\"keys\":[{\"kty\":\"EC\",\"crv\":\"P-256\",\"x\":\"%s\",\"y\":\"AA\"}]}", longx);
  expect_jwks_error(ldoc, GW_KEYSET_BAD_JWK, "longer than 32 bytes");
  /* 32-byte coordinates that are not a point on P-256. */
  char doc[512], x[64] = {0};
  uint8_t raw[32];
  memset(raw, 0x11, sizeof raw);
  gw_b64url_encode(raw, 32, x);
  snprintf(
      doc, sizeof doc,
      "{\"keys\":[{\"kty\":\"EC\",\"crv\":\"P-256\",\"kid\":\"bad\",\"x\":\"%s\",\"y\":\"%s\"}]}",
      x, x);
  expect_jwks_error(doc, GW_KEYSET_BAD_JWK, "not a point on P-256");
  expect_jwks_error("{\"keys\":[{\"kty\":\"oct\",\"k\":\"c2hvcnQ\"}]}", GW_KEYSET_WEAK_KEY,
                    "at least 32");
  expect_jwks_error("{\"keys\":[{\"kty\":\"oct\",\"k\":\"!!\"}]}", GW_KEYSET_BAD_JWK,
                    "not base64url");
  expect_jwks_error("{\"keys\":[{\"kty\":\"oct\",\"kid\":\"\",\"k\":\"AA\"}]}", GW_KEYSET_BAD_JWK,
                    "non-empty strings");
}

Test(gw_keyset, pem_files) {
  gw_keyset *ks = gw_keyset_create();
  EVP_PKEY *k = keygen(GW_JWT_ALG_ES256);
  BIO *b = BIO_new(BIO_s_mem());
  cr_assert(PEM_write_bio_PrivateKey(b, k, NULL, NULL, 0, NULL, NULL) == 1);
  char priv[4096];
  int n = BIO_read(b, priv, sizeof priv - 1);
  BIO_free(b);
  cr_assert_eq(gw_keyset_add_pem(ks, priv, (size_t)n, NULL, "k.pem", err, sizeof err),
               GW_KEYSET_PRIVATE_PEM);
  cr_assert(strstr(err, "k.pem: block 1 is a private key"), "%s", err);
  cr_assert_eq(gw_keyset_add_pem(ks, "hello", 5, NULL, "k.pem", err, sizeof err),
               GW_KEYSET_BAD_PEM);
  /* Two keys in one file, both loaded. */
  char two[8192];
  snprintf(two, sizeof two, "%s", pub_pem(k));
  EVP_PKEY *k2 = keygen(GW_JWT_ALG_EdDSA);
  strcat(two, pub_pem(k2));
  cr_assert_eq(gw_keyset_add_pem(ks, two, strlen(two), "kid-1", "k.pem", err, sizeof err), 0, "%s",
               err);
  cr_assert_eq(gw_keyset_count(ks), 2);
  cr_assert_eq(gw_key_get_type(gw_keyset_key(ks, 1)), GW_KEY_ED25519);
  cr_assert_str_eq(gw_key_kid(gw_keyset_key(ks, 0)), "kid-1");
  cr_assert_eq(gw_keyset_add_pem_file(ks, "/nonexistent/k.pem", err, sizeof err), GW_KEYSET_IO);
  cr_assert(strstr(err, "/nonexistent/k.pem: No such file"), "%s", err);
  cr_assert_eq(gw_keyset_add_secret(ks, (const uint8_t *)"short", 5, NULL, err, sizeof err),
               GW_KEYSET_WEAK_KEY);
  EVP_PKEY_free(k);
  EVP_PKEY_free(k2);
  gw_keyset_unref(ks);
}

Test(gw_keyset, algorithm_names) {
  uint32_t algs = 0;
  cr_assert_eq(gw_jwt_algs_parse("RS256, ES256,EdDSA", &algs, err, sizeof err), GW_JWT_OK);
  cr_assert_eq(algs, 1u << GW_JWT_ALG_RS256 | 1u << GW_JWT_ALG_ES256 | 1u << GW_JWT_ALG_EdDSA);
  cr_assert_eq(gw_jwt_algs_parse("rs256", &algs, err, sizeof err), GW_JWT_UNKNOWN_ALG);
  cr_assert_eq(gw_jwt_algs_parse("none", &algs, err, sizeof err), GW_JWT_UNKNOWN_ALG);
  cr_assert_eq(gw_jwt_algs_parse("", &algs, err, sizeof err), GW_JWT_UNKNOWN_ALG);
  for (int a = 0; a < GW_JWT_ALG_COUNT; a++) {
    const char *name = gw_jwt_alg_name((gw_jwt_alg)a);
    cr_assert_eq(gw_jwt_alg_from_name(name, strlen(name)), a);
  }
  cr_assert_str_eq(gw_keyset_strerror(GW_KEYSET_BAD_JWK), "malformed key in the JWKS document");
  cr_assert_str_eq(gw_keyset_err_name(GW_KEYSET_EMPTY), "GW_KEYSET_EMPTY");
}

/* A set made of others (the files' keys plus a JWKS URL's) verifies with both, outlives them, and
 * is left unchanged when the combination would pass the key bound. */
Test(gw_keyset, add_set_combines_and_outlives_its_sources) {
  EVP_PKEY *ec = keygen(GW_JWT_ALG_ES256);
  gw_keyset *files = gw_keyset_create(), *url = gw_keyset_create(), *all = gw_keyset_create();
  cr_assert(files && url && all && ec);
  assert_rc(
      gw_keyset_add_secret(files, (const uint8_t *)SECRET, strlen(SECRET), NULL, err, sizeof err),
      GW_KEYSET_OK);
  const char *pem = pub_pem(ec);
  assert_rc(gw_keyset_add_pem(url, pem, strlen(pem), "k1", "url", err, sizeof err), GW_KEYSET_OK);
  assert_rc(gw_keyset_add_set(all, files, "files", err, sizeof err), GW_KEYSET_OK);
  assert_rc(gw_keyset_add_set(all, url, "url", err, sizeof err), GW_KEYSET_OK);
  gw_keyset_unref(files);
  gw_keyset_unref(url);
  cr_assert_eq(gw_keyset_count(all), 2);
  uint32_t algs = 1u << GW_JWT_ALG_HS256 | 1u << GW_JWT_ALG_ES256;
  assert_rc(verify(all, algs, sign(GW_JWT_ALG_HS256, NULL, NULL)), GW_JWT_OK);
  assert_rc(verify(all, algs, sign(GW_JWT_ALG_ES256, ec, "k1")), GW_JWT_OK);

  gw_keyset *full = gw_keyset_create();
  for (int i = 0; i < GW_KEYSET_MAX_KEYS - 1; i++)
    assert_rc(
        gw_keyset_add_secret(full, (const uint8_t *)SECRET, strlen(SECRET), NULL, err, sizeof err),
        GW_KEYSET_OK);
  assert_rc(gw_keyset_add_set(full, all, "url", err, sizeof err), GW_KEYSET_TOO_MANY);
  cr_assert_eq(gw_keyset_count(full), GW_KEYSET_MAX_KEYS - 1,
               "a failed add leaves the set as it was");
  gw_keyset_unref(full);
  gw_keyset_unref(all);
  EVP_PKEY_free(ec);
}
