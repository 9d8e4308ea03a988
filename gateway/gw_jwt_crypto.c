/*
 * gw_jwt_crypto: JWS signature primitives over OpenSSL 3 (gw_jwt_crypto.h).
 *
 * RFC 7518 fixes the details OpenSSL leaves open: PS256 uses MGF1 with SHA-256 and a salt as
 * long as the hash (§3.5); ES256/ES384 signatures are r||s, each left-padded to the curve size,
 * not DER (§3.4), so they are converted both ways here.
 *
 * Threads: reentrant; no state.
 */
#include "gw_jwt_crypto.h"

#include <limits.h>
#include <openssl/crypto.h>
#include <openssl/ecdsa.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rsa.h>
#include <string.h>

typedef enum { FAM_HMAC, FAM_RSA, FAM_PSS, FAM_ECDSA, FAM_EDDSA } family;

static family alg_family(gw_jwt_alg alg) {
  switch (alg) {
#define GW_JWT_ALG_FAM(name, fam, bits, key)                                                       \
  case GW_JWT_ALG_##name:                                                                          \
    return FAM_##fam;
    GW_JWT_ALG_MAP(GW_JWT_ALG_FAM)
#undef GW_JWT_ALG_FAM
  default:
    return FAM_HMAC;
  }
}

static const EVP_MD *alg_md(gw_jwt_alg alg) {
  int bits = 0;
  switch (alg) {
#define GW_JWT_ALG_BITS(name, fam, b, key)                                                         \
  case GW_JWT_ALG_##name:                                                                          \
    bits = b;                                                                                      \
    break;
    GW_JWT_ALG_MAP(GW_JWT_ALG_BITS)
#undef GW_JWT_ALG_BITS
  default:
    break;
  }
  return bits == 256   ? EVP_sha256()
         : bits == 384 ? EVP_sha384()
         : bits == 512 ? EVP_sha512()
                       : NULL;
}

/* Bytes of r (and of s) in an ES* signature. */
static size_t ec_half(gw_jwt_alg alg) {
  return alg == GW_JWT_ALG_ES384 ? 48 : 32;
}

static int hmac(gw_jwt_alg alg, const uint8_t *key, size_t key_len, const char *data, size_t len,
                uint8_t *mac, unsigned *mac_len) {
  if (key == NULL || key_len == 0 || key_len > INT_MAX)
    return GW_JWT_BAD_KEY;
  if (HMAC(alg_md(alg), key, (int)key_len, (const unsigned char *)data, len, mac, mac_len) == NULL)
    return GW_JWT_CRYPTO;
  return GW_JWT_OK;
}

/* Sets up ctx for alg with pkey, to sign or verify. Returns 1 or 0. */
static int digest_init(EVP_MD_CTX *ctx, gw_jwt_alg alg, EVP_PKEY *pkey, int sign) {
  EVP_PKEY_CTX *pctx = NULL;
  const EVP_MD *md = alg_family(alg) == FAM_EDDSA ? NULL : alg_md(alg);
  int ok = sign ? EVP_DigestSignInit(ctx, &pctx, md, NULL, pkey)
                : EVP_DigestVerifyInit(ctx, &pctx, md, NULL, pkey);
  if (ok != 1)
    return 0;
  if (alg_family(alg) == FAM_PSS)
    return EVP_PKEY_CTX_set_rsa_padding(pctx, RSA_PKCS1_PSS_PADDING) == 1 &&
           EVP_PKEY_CTX_set_rsa_pss_saltlen(pctx, RSA_PSS_SALTLEN_DIGEST) == 1 &&
           EVP_PKEY_CTX_set_rsa_mgf1_md(pctx, md) == 1;
  if (alg_family(alg) == FAM_RSA)
    return EVP_PKEY_CTX_set_rsa_padding(pctx, RSA_PKCS1_PADDING) == 1;
  return 1;
}

/* r||s (each `half` bytes) to DER. Returns the DER length (in *der, OPENSSL_free) or -1. */
static int ecdsa_raw_to_der(const uint8_t *sig, size_t half, unsigned char **der) {
  ECDSA_SIG *es = ECDSA_SIG_new();
  BIGNUM *r = BN_bin2bn(sig, (int)half, NULL), *s = BN_bin2bn(sig + half, (int)half, NULL);
  int n = -1;
  if (es && r && s && ECDSA_SIG_set0(es, r, s) == 1) {
    r = s = NULL; /* owned by es now */
    n = i2d_ECDSA_SIG(es, der);
  }
  BN_free(r);
  BN_free(s);
  ECDSA_SIG_free(es);
  return n;
}

/* DER to r||s in out (2 * half bytes). Returns 0 or -1. */
static int ecdsa_der_to_raw(const unsigned char *der, size_t dlen, size_t half, uint8_t *out) {
  const unsigned char *p = der;
  ECDSA_SIG *es = d2i_ECDSA_SIG(NULL, &p, (long)dlen);
  if (!es)
    return -1;
  const BIGNUM *r = NULL, *s = NULL;
  ECDSA_SIG_get0(es, &r, &s);
  int ok = BN_bn2binpad(r, out, (int)half) == (int)half &&
           BN_bn2binpad(s, out + half, (int)half) == (int)half;
  ECDSA_SIG_free(es);
  return ok ? 0 : -1;
}

int gw_jwt__verify_sig(gw_jwt_alg alg, const uint8_t *secret, size_t secret_len, EVP_PKEY *pkey,
                       const char *data, size_t len, const uint8_t *sig, size_t siglen) {
  if (alg_family(alg) == FAM_HMAC) {
    uint8_t mac[EVP_MAX_MD_SIZE];
    unsigned mac_len = 0;
    int rc = hmac(alg, secret, secret_len, data, len, mac, &mac_len);
    if (rc != GW_JWT_OK)
      return rc;
    return siglen == mac_len && CRYPTO_memcmp(sig, mac, mac_len) == 0 ? GW_JWT_OK
                                                                      : GW_JWT_BAD_SIGNATURE;
  }
  if (pkey == NULL)
    return GW_JWT_BAD_KEY;
  unsigned char *der = NULL;
  const unsigned char *check = sig;
  size_t check_len = siglen;
  if (alg_family(alg) == FAM_ECDSA) {
    /* The raw form has one length; anything else (a DER signature included) is refused. */
    if (siglen != 2 * ec_half(alg))
      return GW_JWT_BAD_SIGNATURE;
    int n = ecdsa_raw_to_der(sig, ec_half(alg), &der);
    if (n < 0)
      return GW_JWT_CRYPTO;
    check = der;
    check_len = (size_t)n;
  }
  EVP_MD_CTX *ctx = EVP_MD_CTX_new();
  int rc = GW_JWT_CRYPTO;
  if (ctx && digest_init(ctx, alg, pkey, 0))
    rc = EVP_DigestVerify(ctx, check, check_len, (const unsigned char *)data, len) == 1
             ? GW_JWT_OK
             : GW_JWT_BAD_SIGNATURE;
  EVP_MD_CTX_free(ctx);
  OPENSSL_free(der);
  ERR_clear_error(); /* a refused signature leaves errors on the thread's queue */
  return rc;
}

int gw_jwt__sign_sig(const gw_jwt_signer *signer, const char *data, size_t len,
                     uint8_t sig[GW_JWT_SIG_MAX]) {
  gw_jwt_alg alg = signer->alg;
  if ((unsigned)alg >= GW_JWT_ALG_COUNT)
    return GW_JWT_UNKNOWN_ALG;
  if (alg_family(alg) == FAM_HMAC) {
    unsigned mac_len = 0;
    int rc = hmac(alg, signer->secret, signer->secret_len, data, len, sig, &mac_len);
    return rc == GW_JWT_OK ? (int)mac_len : rc;
  }
  if (signer->pkey == NULL || gw_key_type_of_pkey(signer->pkey) != (int)gw_jwt_alg_key_type(alg))
    return GW_JWT_KEY_ALG_MISMATCH;
  if (EVP_PKEY_get_size(signer->pkey) > GW_JWT_SIG_MAX)
    return GW_JWT_BUFFER;
  unsigned char der[GW_JWT_SIG_MAX];
  size_t n = sizeof der;
  EVP_MD_CTX *ctx = EVP_MD_CTX_new();
  int rc = GW_JWT_CRYPTO;
  if (ctx && digest_init(ctx, alg, signer->pkey, 1) &&
      EVP_DigestSign(ctx, der, &n, (const unsigned char *)data, len) == 1) {
    if (alg_family(alg) != FAM_ECDSA) {
      memcpy(sig, der, n);
      rc = (int)n;
    } else if (ecdsa_der_to_raw(der, n, ec_half(alg), sig) == 0) {
      rc = (int)(2 * ec_half(alg));
    }
  }
  EVP_MD_CTX_free(ctx);
  ERR_clear_error();
  return rc;
}
