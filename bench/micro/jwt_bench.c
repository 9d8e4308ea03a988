/*
 * jwt_bench: microseconds per gw_jwt_verify_token() for each algorithm the gateway accepts, i.e.
 * the authentication share of one upgrade, and the upgrades per second one core could verify at
 * that cost. A token of the real shape (sub, iss, aud, exp) is verified against a key set of
 * one key of its type, as with --jwt-key-file or a one-key JWKS; a kid-less token against a set
 * of several keys costs one verification per key of its type tried.
 *
 * Usage: jwt_bench [iterations per repetition]   (build with buildtype=release for figures)
 *
 * Threads: main only.
 */
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "gw_jwt.h"
#include "gw_keyset.h"

#define REPS          7
#define DEFAULT_ITERS 2000

/* CPU time of this thread: on a shared machine, time spent waiting for a core is not the
 * verifier's cost. */
static double now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

/* A key pair for alg (the private key signs, the public one goes into the set). */
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
  case GW_KEY_OCT:
    break;
  }
  return NULL;
}

/* The key set the gateway would hold: the secret, or the public half of pkey as PEM. */
static gw_keyset *keyset_for(gw_jwt_alg alg, const uint8_t *secret, size_t slen, EVP_PKEY *pkey) {
  gw_keyset *ks = gw_keyset_create();
  char err[256];
  if (!pkey) {
    if (gw_keyset_add_secret(ks, secret, slen, NULL, err, sizeof err) == 0)
      return ks;
  } else {
    char *pem = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&pem, &len);
    int ok = f && PEM_write_PUBKEY(f, pkey) == 1;
    if (f)
      fclose(f);
    int rc = ok ? gw_keyset_add_pem(ks, pem, len, NULL, gw_jwt_alg_name(alg), err, sizeof err) : -1;
    free(pem);
    if (rc == 0)
      return ks;
  }
  fprintf(stderr, "jwt_bench: %s: cannot build the key set: %s\n", gw_jwt_alg_name(alg), err);
  gw_keyset_unref(ks);
  return NULL;
}

static int run(gw_jwt_alg alg, long iters, double *hs256_us) {
  static const uint8_t secret[] = "a-32-byte-or-longer-hmac-secret-for-the-bench-0123456789";
  EVP_PKEY *pkey = gw_jwt_alg_key_type(alg) == GW_KEY_OCT ? NULL : keygen(alg);
  gw_keyset *ks = keyset_for(alg, secret, sizeof secret - 1, pkey);
  if (!ks)
    return -1;
  char claims[256], tok[GW_JWT_MAX_TOKEN];
  snprintf(claims, sizeof claims,
           "{\"sub\":\"user-1234\",\"iss\":\"https://idp.example.com/realms/app\","
           "\"aud\":\"wsgate\",\"exp\":%lld}",
           (long long)time(NULL) + 3600);
  gw_jwt_signer sg = {.alg = alg, .secret = secret, .secret_len = sizeof secret - 1, .pkey = pkey};
  int n = gw_jwt_sign_as(&sg, NULL, claims, tok, sizeof tok);
  gw_jwt_config cfg = {.algs = 1u << alg,
                       .keys = ks,
                       .audience = "wsgate",
                       .issuers = "https://idp.example.com/realms/app"};
  gw_jwt_claims cl;
  if (n < 0 || gw_jwt_verify_token(&cfg, tok, (size_t)n, (int64_t)time(NULL), &cl) != GW_JWT_OK) {
    fprintf(stderr, "jwt_bench: %s: the token does not verify\n", gw_jwt_alg_name(alg));
    gw_keyset_unref(ks);
    EVP_PKEY_free(pkey);
    return -1;
  }
  double us[REPS];
  for (int r = 0; r < REPS; r++) {
    double t0 = now_ns();
    for (long i = 0; i < iters; i++)
      gw_jwt_verify_token(&cfg, tok, (size_t)n, (int64_t)time(NULL), &cl);
    us[r] = (now_ns() - t0) / 1e3 / (double)iters;
  }
  qsort(us, REPS, sizeof us[0], cmp_double);
  double med = us[REPS / 2];
  if (alg == GW_JWT_ALG_HS256)
    *hs256_us = med;
  printf("| %-6s | %5d | %8.1f | %8.1f | %8.1f | %9.0f | %6.1fx |\n", gw_jwt_alg_name(alg), n, med,
         us[0], us[REPS - 1], 1e6 / med, *hs256_us > 0 ? med / *hs256_us : 0.0);
  gw_keyset_unref(ks);
  EVP_PKEY_free(pkey);
  return 0;
}

int main(int argc, char **argv) {
  long iters = argc > 1 ? strtol(argv[1], NULL, 10) : DEFAULT_ITERS;
  if (iters <= 0) {
    fprintf(stderr, "usage: jwt_bench [iterations per repetition]\n");
    return 2;
  }
  printf("gw_jwt_verify_token, %d repetitions of %ld verifications, CPU time of one thread\n\n",
         REPS, iters);
  printf("| alg    | token bytes | median µs | min µs | max µs | verifications/s (1 core) | vs "
         "HS256 |\n");
  printf("|---|---:|---:|---:|---:|---:|---:|\n");
  double hs256 = 0;
  int rc = 0;
  for (int a = 0; a < GW_JWT_ALG_COUNT; a++)
    rc |= run((gw_jwt_alg)a, iters, &hs256);
  return rc ? 1 : 0;
}
