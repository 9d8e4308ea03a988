/*
 * libFuzzer target for the token verifier and the JWKS parser (gw_jwt, gw_keyset). The first
 * byte picks what the rest is:
 *   0: a JWKS document for gw_keyset_add_jwks (a refused document must leave the set empty);
 *   1: a compact token verified against a fixed key set of every key type, every algorithm on;
 *   2: "<header JSON>\0<claims JSON>\0<signature bytes>" assembled into a token, the header and
 *      claims HMAC-signed with the set's secret first when the signature part is empty, so the
 *      claims checks are reached and not only the signature check.
 * Invariants beyond "no crash, no leak, no UB": a token accepted has a non-empty user claim within
 * the length limit, and a failure leaves the user empty.
 *
 * Threads: libFuzzer's main thread.
 */
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gw_b64url.h"
#include "gw_jwt.h"
#include "gw_keyset.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(cond)                                                                                \
  do {                                                                                             \
    if (!(cond)) {                                                                                 \
      fprintf(stderr, "jwt_fuzz: invariant broken: %s (line %d)\n", #cond, __LINE__);              \
      abort();                                                                                     \
    }                                                                                              \
  } while (0)

static const char SECRET[] = "jwt-fuzz-secret-0123456789abcdef0123456789";
static gw_keyset *keys;
static gw_jwt_config cfg;

int LLVMFuzzerInitialize(int *argc, char ***argv) {
  (void)argc;
  (void)argv;
  char err[512];
  keys = gw_keyset_create();
  CHECK(keys != NULL);
  CHECK(gw_keyset_add_secret(keys, (const uint8_t *)SECRET, strlen(SECRET), NULL, err,
                             sizeof err) == 0);
  EVP_PKEY *pk[] = {EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)2048),
                    EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256"),
                    EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-384"),
                    EVP_PKEY_Q_keygen(NULL, NULL, "ED25519")};
  const char *kids[] = {"rsa", "ec", NULL, "ed"};
  for (size_t i = 0; i < sizeof pk / sizeof pk[0]; i++) {
    BIO *b = BIO_new(BIO_s_mem());
    CHECK(pk[i] && b && PEM_write_bio_PUBKEY(b, pk[i]) == 1);
    char *pem = NULL;
    long n = BIO_get_mem_data(b, &pem);
    CHECK(gw_keyset_add_pem(keys, pem, (size_t)n, kids[i], "fuzz", err, sizeof err) == 0);
    BIO_free(b);
    EVP_PKEY_free(pk[i]);
  }
  cfg = (gw_jwt_config){.keys = keys,
                        .algs = (1u << GW_JWT_ALG_COUNT) - 1,
                        .audience = "wsgate",
                        .issuers = "https://a, https://b",
                        .leeway_s = 30};
  return 0;
}

static void verify(const char *tok, size_t len) {
  gw_jwt_claims out;
  int rc = gw_jwt_verify_token(&cfg, tok, len, 1700000000, &out);
  if (rc == GW_JWT_OK)
    CHECK(out.user_len > 0 && out.user_len <= WSG_MAX_USER_LEN && out.key != NULL);
  else
    CHECK(out.user_len == 0 && out.user[0] == '\0' &&
          strcmp(gw_jwt_err_name(rc), "GW_JWT_UNKNOWN") != 0);
}

/* Mode 2: header\0claims\0sig into a token. */
static void assembled(const uint8_t *d, size_t n) {
  const uint8_t *z1 = memchr(d, 0, n);
  if (!z1)
    return;
  const uint8_t *z2 = memchr(z1 + 1, 0, n - (size_t)(z1 + 1 - d));
  if (!z2 || (size_t)(z1 - d) > 2048 || (size_t)(z2 - z1 - 1) > 4096)
    return;
  char header[2049], claims[4097];
  memcpy(header, d, (size_t)(z1 - d));
  header[z1 - d] = '\0';
  memcpy(claims, z1 + 1, (size_t)(z2 - z1 - 1));
  claims[z2 - z1 - 1] = '\0';
  static char tok[GW_JWT_MAX_TOKEN * 2];
  const uint8_t *sig = z2 + 1;
  size_t slen = n - (size_t)(sig - d);
  if (slen == 0) {
    int len = gw_jwt_sign_with_header((const uint8_t *)SECRET, strlen(SECRET), header, claims, tok,
                                      sizeof tok);
    if (len > 0)
      verify(tok, (size_t)len);
    return;
  }
  size_t he = gw_b64url_encoded_len(strlen(header)), ce = gw_b64url_encoded_len(strlen(claims));
  if (he + ce + gw_b64url_encoded_len(slen) + 3 > sizeof tok)
    return;
  gw_b64url_encode((const uint8_t *)header, strlen(header), tok);
  tok[he] = '.';
  gw_b64url_encode((const uint8_t *)claims, strlen(claims), tok + he + 1);
  tok[he + 1 + ce] = '.';
  gw_b64url_encode(sig, slen, tok + he + ce + 2);
  verify(tok, he + ce + 2 + gw_b64url_encoded_len(slen));
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size < 1)
    return 0;
  const uint8_t *d = data + 1;
  size_t n = size - 1;
  switch (data[0] % 3) {
  case 0: {
    gw_keyset *ks = gw_keyset_create();
    char err[512];
    int rc = gw_keyset_add_jwks(ks, (const char *)d, n, "fuzz", err, sizeof err);
    CHECK(rc == 0 ? gw_keyset_count(ks) > 0 : gw_keyset_count(ks) == 0);
    CHECK(rc <= 0 && strcmp(gw_keyset_err_name(rc), "GW_KEYSET_UNKNOWN") != 0);
    gw_keyset_unref(ks);
    break;
  }
  case 1:
    verify((const char *)d, n);
    break;
  default:
    assembled(d, n);
    break;
  }
  return 0;
}
