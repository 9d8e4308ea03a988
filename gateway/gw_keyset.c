/*
 * gw_keyset: HMAC secrets, PEM public keys and JWKS documents turned into OpenSSL keys
 * (gw_keyset.h states the rules).
 *
 * JWK members are built into EVP_PKEYs with OpenSSL 3's EVP_PKEY_fromdata, then checked with
 * EVP_PKEY_public_check so a point off its curve is refused when the set is loaded, not when the
 * first token arrives.
 *
 * Threads: a set is built by one thread; a published set is read-only, its count atomic.
 */
#include "gw_keyset.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/param_build.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "gw_b64url.h"

struct gw_key {
  gw_key_type type;
  char *kid;       /* owned; NULL: none */
  char *alg;       /* owned; NULL: any algorithm of the key's type */
  EVP_PKEY *pkey;  /* owned; NULL for OCT */
  uint8_t *secret; /* owned, wiped on free; OCT only */
  size_t secret_len;
};

struct gw_keyset {
  atomic_uint refs;
  size_t n;
  gw_key keys[GW_KEYSET_MAX_KEYS];
};

#define GW_KEY_TYPE_STR(name, text)                                                                \
  case GW_KEY_##name:                                                                              \
    return text;
const char *gw_key_type_name(gw_key_type t) {
  switch (t) { GW_KEY_TYPE_MAP(GW_KEY_TYPE_STR) }
  return "unknown";
}
#undef GW_KEY_TYPE_STR

#define GW_KEYSET_ERR_STR(name, value, msg)                                                        \
  case value:                                                                                      \
    return msg;
const char *gw_keyset_strerror(int err) {
  switch (err) { GW_KEYSET_ERRNO_MAP(GW_KEYSET_ERR_STR) }
  return "unknown key set error";
}
#undef GW_KEYSET_ERR_STR

#define GW_KEYSET_ERR_NAME(name, value, msg)                                                       \
  case value:                                                                                      \
    return "GW_KEYSET_" #name;
const char *gw_keyset_err_name(int err) {
  switch (err) { GW_KEYSET_ERRNO_MAP(GW_KEYSET_ERR_NAME) }
  return "GW_KEYSET_UNKNOWN";
}
#undef GW_KEYSET_ERR_NAME

/* --- lifetime --------------------------------------------------------------------------------- */

gw_keyset *gw_keyset_create(void) {
  gw_keyset *ks = calloc(1, sizeof *ks);
  if (ks)
    atomic_init(&ks->refs, 1);
  return ks;
}

gw_keyset *gw_keyset_ref(gw_keyset *ks) {
  atomic_fetch_add_explicit(&ks->refs, 1, memory_order_relaxed);
  return ks;
}

static void key_clear(gw_key *k) {
  free(k->kid);
  free(k->alg);
  EVP_PKEY_free(k->pkey);
  if (k->secret) {
    OPENSSL_cleanse(k->secret, k->secret_len);
    free(k->secret);
  }
  memset(k, 0, sizeof *k);
}

void gw_keyset_unref(gw_keyset *ks) {
  if (!ks || atomic_fetch_sub_explicit(&ks->refs, 1, memory_order_acq_rel) != 1)
    return;
  for (size_t i = 0; i < ks->n; i++)
    key_clear(&ks->keys[i]);
  free(ks);
}

size_t gw_keyset_count(const gw_keyset *ks) {
  return ks->n;
}

const gw_key *gw_keyset_key(const gw_keyset *ks, size_t i) {
  return i < ks->n ? &ks->keys[i] : NULL;
}

gw_key_type gw_key_get_type(const gw_key *k) {
  return k->type;
}
const char *gw_key_kid(const gw_key *k) {
  return k->kid;
}
const char *gw_key_alg(const gw_key *k) {
  return k->alg;
}
EVP_PKEY *gw_key_pkey(const gw_key *k) {
  return k->pkey;
}
const uint8_t *gw_key_secret(const gw_key *k, size_t *len) {
  *len = k->secret_len;
  return k->secret;
}

/* --- adding keys ------------------------------------------------------------------------------ */

int gw_key_type_of_pkey(const EVP_PKEY *pkey) {
  switch (EVP_PKEY_get_base_id(pkey)) {
  case EVP_PKEY_RSA:
    return GW_KEY_RSA;
  case EVP_PKEY_ED25519:
    return GW_KEY_ED25519;
  case EVP_PKEY_EC: {
    char group[64];
    size_t glen = 0;
    if (EVP_PKEY_get_utf8_string_param(pkey, OSSL_PKEY_PARAM_GROUP_NAME, group, sizeof group,
                                       &glen) != 1)
      return -1;
    if (strcmp(group, "prime256v1") == 0 || strcmp(group, "P-256") == 0)
      return GW_KEY_EC_P256;
    if (strcmp(group, "secp384r1") == 0 || strcmp(group, "P-384") == 0)
      return GW_KEY_EC_P384;
    return -1;
  }
  default:
    return -1;
  }
}

static char *dup_opt(const char *s) {
  return s ? strdup(s) : NULL;
}

/* Takes pkey (freed on failure). kid, alg: borrowed, copied. */
static int push_pkey(gw_keyset *ks, EVP_PKEY *pkey, const char *kid, const char *alg,
                     const char *what, char *err, size_t errlen) {
  int type = gw_key_type_of_pkey(pkey);
  int rc = GW_KEYSET_OK;
  if (type < 0) {
    snprintf(err, errlen, "%s: unsupported key type (want RSA, EC P-256, EC P-384 or Ed25519)",
             what);
    rc = GW_KEYSET_UNSUPPORTED;
  } else if (type == GW_KEY_RSA && EVP_PKEY_get_bits(pkey) < GW_KEYSET_MIN_RSA_BITS) {
    snprintf(err, errlen, "%s: RSA key of %d bits; at least %d are required", what,
             EVP_PKEY_get_bits(pkey), GW_KEYSET_MIN_RSA_BITS);
    rc = GW_KEYSET_WEAK_KEY;
  } else if (ks->n == GW_KEYSET_MAX_KEYS) {
    snprintf(err, errlen, "%s: more than %d keys", what, GW_KEYSET_MAX_KEYS);
    rc = GW_KEYSET_TOO_MANY;
  }
  if (rc != GW_KEYSET_OK) {
    EVP_PKEY_free(pkey);
    return rc;
  }
  gw_key *k = &ks->keys[ks->n];
  k->type = (gw_key_type)type;
  k->pkey = pkey;
  k->kid = dup_opt(kid);
  k->alg = dup_opt(alg);
  if ((kid && !k->kid) || (alg && !k->alg)) {
    key_clear(k);
    snprintf(err, errlen, "%s: out of memory", what);
    return GW_KEYSET_NOMEM;
  }
  ks->n++;
  return GW_KEYSET_OK;
}

static int push_secret(gw_keyset *ks, const uint8_t *secret, size_t len, const char *kid,
                       const char *alg, const char *what, char *err, size_t errlen) {
  if (len < GW_KEYSET_MIN_SECRET) {
    snprintf(err, errlen, "%s: HMAC secret of %zu bytes; at least %d are required", what, len,
             GW_KEYSET_MIN_SECRET);
    return GW_KEYSET_WEAK_KEY;
  }
  if (ks->n == GW_KEYSET_MAX_KEYS) {
    snprintf(err, errlen, "%s: more than %d keys", what, GW_KEYSET_MAX_KEYS);
    return GW_KEYSET_TOO_MANY;
  }
  gw_key *k = &ks->keys[ks->n];
  k->type = GW_KEY_OCT;
  k->secret = malloc(len);
  k->secret_len = len;
  k->kid = dup_opt(kid);
  k->alg = dup_opt(alg);
  if (!k->secret || (kid && !k->kid) || (alg && !k->alg)) {
    key_clear(k);
    snprintf(err, errlen, "%s: out of memory", what);
    return GW_KEYSET_NOMEM;
  }
  memcpy(k->secret, secret, len);
  ks->n++;
  return GW_KEYSET_OK;
}

int gw_keyset_add_secret(gw_keyset *ks, const uint8_t *secret, size_t len, const char *kid,
                         char *err, size_t errlen) {
  return push_secret(ks, secret, len, kid, NULL, "HMAC secret", err, errlen);
}

/* Drops keys added since `mark` (a document that failed half-way leaves the set as it was). */
static void truncate_to(gw_keyset *ks, size_t mark) {
  while (ks->n > mark)
    key_clear(&ks->keys[--ks->n]);
}

int gw_keyset_add_set(gw_keyset *ks, const gw_keyset *src, const char *what, char *err,
                      size_t errlen) {
  size_t mark = ks->n;
  for (size_t i = 0; i < src->n; i++) {
    const gw_key *k = &src->keys[i];
    int rc;
    if (k->type == GW_KEY_OCT) {
      rc = push_secret(ks, k->secret, k->secret_len, k->kid, k->alg, what, err, errlen);
    } else {
      EVP_PKEY_up_ref(k->pkey); /* push_pkey takes this reference */
      rc = push_pkey(ks, k->pkey, k->kid, k->alg, what, err, errlen);
    }
    if (rc != GW_KEYSET_OK) {
      truncate_to(ks, mark);
      return rc;
    }
  }
  return GW_KEYSET_OK;
}

/* One DER block of a PEM file as a public key (takes nothing; returns a new key or NULL). */
static EVP_PKEY *pem_block_key(const char *name, const unsigned char *der, long dlen) {
  const unsigned char *p = der;
  if (strcmp(name, PEM_STRING_PUBLIC) == 0)
    return d2i_PUBKEY(NULL, &p, dlen);
  if (strcmp(name, PEM_STRING_RSA_PUBLIC) == 0)
    return d2i_PublicKey(EVP_PKEY_RSA, NULL, &p, dlen);
  if (strcmp(name, PEM_STRING_X509) == 0 || strcmp(name, PEM_STRING_X509_OLD) == 0) {
    X509 *x = d2i_X509(NULL, &p, dlen);
    EVP_PKEY *k = x ? X509_get_pubkey(x) : NULL;
    X509_free(x);
    return k;
  }
  return NULL;
}

int gw_keyset_add_pem(gw_keyset *ks, const char *pem, size_t len, const char *kid, const char *what,
                      char *err, size_t errlen) {
  if (len > GW_KEYSET_MAX_FILE) {
    snprintf(err, errlen, "%s: larger than %d bytes", what, GW_KEYSET_MAX_FILE);
    return GW_KEYSET_TOO_BIG;
  }
  BIO *bio = BIO_new_mem_buf(pem, (int)len);
  if (!bio) {
    snprintf(err, errlen, "%s: out of memory", what);
    return GW_KEYSET_NOMEM;
  }
  size_t mark = ks->n;
  int rc = GW_KEYSET_OK;
  for (int block = 1;; block++) {
    char *name = NULL, *header = NULL;
    unsigned char *der = NULL;
    long dlen = 0;
    if (PEM_read_bio(bio, &name, &header, &der, &dlen) != 1) {
      ERR_clear_error(); /* the end of the input is reported as an error too */
      break;
    }
    if (strstr(name, "PRIVATE KEY") != NULL) {
      snprintf(err, errlen,
               "%s: block %d is a private key; give the public key (openssl pkey -pubout) or "
               "the certificate",
               what, block);
      rc = GW_KEYSET_PRIVATE_PEM;
    } else {
      EVP_PKEY *pkey = pem_block_key(name, der, dlen);
      if (!pkey) {
        snprintf(err, errlen, "%s: block %d (%s) is not a readable public key or certificate", what,
                 block, name);
        rc = GW_KEYSET_BAD_PEM;
      } else {
        char sub[512];
        snprintf(sub, sizeof sub, "%s (block %d)", what, block);
        rc = push_pkey(ks, pkey, kid, NULL, sub, err, errlen);
      }
    }
    OPENSSL_free(name);
    OPENSSL_free(header);
    OPENSSL_free(der);
    if (rc != GW_KEYSET_OK)
      break;
  }
  BIO_free(bio);
  if (rc == GW_KEYSET_OK && ks->n == mark) {
    snprintf(err, errlen, "%s: no PEM public key or certificate in it", what);
    rc = GW_KEYSET_BAD_PEM;
  }
  if (rc != GW_KEYSET_OK)
    truncate_to(ks, mark);
  ERR_clear_error();
  return rc;
}

/* --- JWKS ------------------------------------------------------------------------------------- */

/* Largest decoded JWK member: an 8192-bit modulus, or a 512-byte oct key. */
#define MEMBER_MAX 1024

/*
 * Decodes the base64url string member `name` of key object `k` into out[0..cap). Padding is
 * tolerated (some providers pad); anything else strict. want > 0: the exact decoded length
 * required. Returns the length, or -1 with the message in err.
 */
static long jwk_bytes(const json_t *k, const char *name, uint8_t *out, size_t cap, size_t want,
                      const char *who, char *err, size_t errlen) {
  const json_t *v = json_object_get(k, name);
  if (!json_is_string(v)) {
    snprintf(err, errlen, "%s: member \"%s\" is missing or not a string", who, name);
    return -1;
  }
  const char *s = json_string_value(v);
  size_t n = json_string_length(v);
  while (n > 0 && s[n - 1] == '=')
    n--;
  long got = gw_b64url_decode(s, n, out, cap);
  if (got <= 0) {
    snprintf(err, errlen, "%s: member \"%s\" is not base64url (or longer than %zu bytes)", who,
             name, cap);
    return -1;
  }
  if (want > 0 && (size_t)got != want) {
    snprintf(err, errlen, "%s: member \"%s\" is %ld bytes, want %zu", who, name, got, want);
    return -1;
  }
  return got;
}

/* Builds a public key from OSSL params; checks it (on the curve, sane modulus). */
static EVP_PKEY *pkey_fromdata(const char *type, OSSL_PARAM_BLD *bld) {
  OSSL_PARAM *params = OSSL_PARAM_BLD_to_param(bld);
  EVP_PKEY_CTX *ctx = EVP_PKEY_CTX_new_from_name(NULL, type, NULL);
  EVP_PKEY *pkey = NULL;
  if (params && ctx && EVP_PKEY_fromdata_init(ctx) == 1 &&
      EVP_PKEY_fromdata(ctx, &pkey, EVP_PKEY_PUBLIC_KEY, params) == 1) {
    EVP_PKEY_CTX *chk = EVP_PKEY_CTX_new_from_pkey(NULL, pkey, NULL);
    if (!chk || EVP_PKEY_public_check(chk) != 1) {
      EVP_PKEY_free(pkey);
      pkey = NULL;
    }
    EVP_PKEY_CTX_free(chk);
  }
  EVP_PKEY_CTX_free(ctx);
  OSSL_PARAM_free(params);
  return pkey;
}

static EVP_PKEY *jwk_rsa(const json_t *k, const char *who, char *err, size_t errlen) {
  uint8_t n[MEMBER_MAX], e[MEMBER_MAX];
  long nl = jwk_bytes(k, "n", n, sizeof n, 0, who, err, errlen);
  long el = nl > 0 ? jwk_bytes(k, "e", e, sizeof e, 0, who, err, errlen) : -1;
  if (el <= 0)
    return NULL;
  BIGNUM *bn = BN_bin2bn(n, (int)nl, NULL), *be = BN_bin2bn(e, (int)el, NULL);
  OSSL_PARAM_BLD *bld = OSSL_PARAM_BLD_new();
  EVP_PKEY *pkey = NULL;
  if (bn && be && bld && OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_N, bn) == 1 &&
      OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_E, be) == 1)
    pkey = pkey_fromdata("RSA", bld);
  OSSL_PARAM_BLD_free(bld);
  BN_free(bn);
  BN_free(be);
  if (!pkey)
    snprintf(err, errlen, "%s: \"n\" and \"e\" do not make an RSA public key", who);
  return pkey;
}

/* crv "P-256" or "P-384" (others were skipped before). */
static EVP_PKEY *jwk_ec(const json_t *k, const char *crv, const char *who, char *err,
                        size_t errlen) {
  size_t clen = strcmp(crv, "P-256") == 0 ? 32 : 48;
  uint8_t point[1 + 2 * 48];
  point[0] = 0x04; /* uncompressed: 04 || x || y (SEC 1 §2.3.3) */
  if (jwk_bytes(k, "x", point + 1, clen, clen, who, err, errlen) < 0)
    return NULL;
  uint8_t y[MEMBER_MAX];
  if (jwk_bytes(k, "y", y, sizeof y, clen, who, err, errlen) < 0)
    return NULL;
  memcpy(point + 1 + clen, y, clen);
  OSSL_PARAM_BLD *bld = OSSL_PARAM_BLD_new();
  EVP_PKEY *pkey = NULL;
  if (bld && OSSL_PARAM_BLD_push_utf8_string(bld, OSSL_PKEY_PARAM_GROUP_NAME, crv, 0) == 1 &&
      OSSL_PARAM_BLD_push_octet_string(bld, OSSL_PKEY_PARAM_PUB_KEY, point, 1 + 2 * clen) == 1)
    pkey = pkey_fromdata("EC", bld);
  OSSL_PARAM_BLD_free(bld);
  if (!pkey)
    snprintf(err, errlen, "%s: \"x\" and \"y\" are not a point on %s", who, crv);
  return pkey;
}

static EVP_PKEY *jwk_ed25519(const json_t *k, const char *who, char *err, size_t errlen) {
  uint8_t x[MEMBER_MAX];
  if (jwk_bytes(k, "x", x, sizeof x, 32, who, err, errlen) < 0)
    return NULL;
  EVP_PKEY *pkey = EVP_PKEY_new_raw_public_key(EVP_PKEY_ED25519, NULL, x, 32);
  if (!pkey)
    snprintf(err, errlen, "%s: \"x\" is not an Ed25519 public key", who);
  return pkey;
}

/* An optional string member: NULL when absent, "" (never returned otherwise) when not a string. */
static const char *opt_string(const json_t *k, const char *name) {
  const json_t *v = json_object_get(k, name);
  if (v == NULL)
    return NULL;
  return json_is_string(v) ? json_string_value(v) : "";
}

/* Whether the key's kty/crv is one we verify with; unknown ones are skipped, not refused. */
static bool jwk_supported(const char *kty, const char *crv) {
  if (strcmp(kty, "RSA") == 0 || strcmp(kty, "oct") == 0)
    return true;
  if (strcmp(kty, "EC") == 0)
    return crv && (strcmp(crv, "P-256") == 0 || strcmp(crv, "P-384") == 0);
  if (strcmp(kty, "OKP") == 0)
    return crv && strcmp(crv, "Ed25519") == 0;
  return false;
}

/* Adds key object k (the i-th of the document) or skips it. Returns a gw_keyset_err. */
static int jwk_add(gw_keyset *ks, const json_t *k, size_t i, const char *what, char *err,
                   size_t errlen) {
  char who[512];
  if (!json_is_object(k)) {
    snprintf(err, errlen, "%s: keys[%zu] is not a JSON object", what, i);
    return GW_KEYSET_BAD_JWK;
  }
  const char *kty = opt_string(k, "kty"), *kid = opt_string(k, "kid");
  const char *use = opt_string(k, "use"), *alg = opt_string(k, "alg");
  const char *crv = opt_string(k, "crv");
  if (kid && *kid)
    snprintf(who, sizeof who, "%s: keys[%zu] (kid \"%.200s\")", what, i, kid);
  else
    snprintf(who, sizeof who, "%s: keys[%zu]", what, i);
  if (!kty || !*kty) {
    snprintf(err, errlen, "%s: \"kty\" is missing or not a string", who);
    return GW_KEYSET_BAD_JWK;
  }
  if ((kid && (!*kid || strlen(kid) > GW_KEYSET_MAX_KID)) || (use && !*use) || (alg && !*alg) ||
      (crv && !*crv)) {
    snprintf(err, errlen,
             "%s: \"kid\", \"use\", \"alg\" and \"crv\" must be non-empty strings (kid at most "
             "%d bytes)",
             who, GW_KEYSET_MAX_KID);
    return GW_KEYSET_BAD_JWK;
  }
  if ((use && strcmp(use, "sig") != 0) || !jwk_supported(kty, crv))
    return GW_KEYSET_OK; /* an encryption key, or a type we do not verify with: skipped */
  if (strcmp(kty, "oct") == 0) {
    uint8_t secret[MEMBER_MAX];
    long n = jwk_bytes(k, "k", secret, sizeof secret, 0, who, err, errlen);
    if (n < 0)
      return GW_KEYSET_BAD_JWK;
    int rc = push_secret(ks, secret, (size_t)n, kid, alg, who, err, errlen);
    OPENSSL_cleanse(secret, sizeof secret);
    return rc;
  }
  EVP_PKEY *pkey = strcmp(kty, "RSA") == 0  ? jwk_rsa(k, who, err, errlen)
                   : strcmp(kty, "EC") == 0 ? jwk_ec(k, crv, who, err, errlen)
                                            : jwk_ed25519(k, who, err, errlen);
  if (!pkey) {
    ERR_clear_error();
    return GW_KEYSET_BAD_JWK;
  }
  return push_pkey(ks, pkey, kid, alg, who, err, errlen);
}

int gw_keyset_add_jwks(gw_keyset *ks, const char *json, size_t len, const char *what, char *err,
                       size_t errlen) {
  if (len > GW_KEYSET_MAX_FILE) {
    snprintf(err, errlen, "%s: larger than %d bytes", what, GW_KEYSET_MAX_FILE);
    return GW_KEYSET_TOO_BIG;
  }
  json_error_t jerr;
  json_t *doc = json_loadb(json, len, JSON_REJECT_DUPLICATES, &jerr);
  const json_t *keys = json_object_get(doc, "keys");
  if (!json_is_object(doc) || !json_is_array(keys)) {
    if (!doc)
      snprintf(err, errlen, "%s: not JSON (line %d: %s)", what, jerr.line, jerr.text);
    else
      snprintf(err, errlen, "%s: not a JWKS document (want {\"keys\":[...]})", what);
    json_decref(doc);
    return GW_KEYSET_BAD_JWKS;
  }
  size_t mark = ks->n, i;
  const json_t *k;
  int rc = GW_KEYSET_OK;
  json_array_foreach(keys, i, k) {
    rc = jwk_add(ks, k, i, what, err, errlen);
    if (rc != GW_KEYSET_OK)
      break;
  }
  json_decref(doc);
  if (rc == GW_KEYSET_OK && ks->n == mark) {
    snprintf(err, errlen,
             "%s: no signing key we can use (kty RSA, EC P-256/P-384, OKP Ed25519 or oct, "
             "\"use\" absent or \"sig\")",
             what);
    rc = GW_KEYSET_EMPTY;
  }
  if (rc != GW_KEYSET_OK)
    truncate_to(ks, mark);
  return rc;
}

/* --- files ------------------------------------------------------------------------------------ */

/* Reads a whole file, bounded. Returns a malloc'd buffer (caller frees) or NULL with err set. */
static char *read_file(const char *path, size_t *len, int *rc, char *err, size_t errlen) {
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    snprintf(err, errlen, "%s: %s", path, strerror(errno));
    *rc = GW_KEYSET_IO;
    return NULL;
  }
  char *buf = malloc(GW_KEYSET_MAX_FILE + 1);
  size_t n = 0;
  *rc = buf ? GW_KEYSET_OK : GW_KEYSET_NOMEM;
  while (buf) {
    ssize_t r = read(fd, buf + n, GW_KEYSET_MAX_FILE + 1 - n);
    if (r < 0 && errno == EINTR)
      continue;
    if (r < 0) {
      snprintf(err, errlen, "%s: %s", path, strerror(errno));
      *rc = GW_KEYSET_IO;
      break;
    }
    if (r == 0)
      break;
    n += (size_t)r;
    if (n > GW_KEYSET_MAX_FILE) {
      snprintf(err, errlen, "%s: larger than %d bytes; is it the right file?", path,
               GW_KEYSET_MAX_FILE);
      *rc = GW_KEYSET_TOO_BIG;
      break;
    }
  }
  close(fd);
  if (*rc != GW_KEYSET_OK) {
    if (*rc == GW_KEYSET_NOMEM)
      snprintf(err, errlen, "%s: out of memory", path);
    free(buf);
    return NULL;
  }
  *len = n;
  return buf;
}

int gw_keyset_add_pem_file(gw_keyset *ks, const char *path, char *err, size_t errlen) {
  size_t len = 0;
  int rc;
  char *buf = read_file(path, &len, &rc, err, errlen);
  if (!buf)
    return rc;
  rc = gw_keyset_add_pem(ks, buf, len, NULL, path, err, errlen);
  free(buf);
  return rc;
}

int gw_keyset_add_jwks_file(gw_keyset *ks, const char *path, char *err, size_t errlen) {
  size_t len = 0;
  int rc;
  char *buf = read_file(path, &len, &rc, err, errlen);
  if (!buf)
    return rc;
  rc = gw_keyset_add_jwks(ks, buf, len, path, err, errlen);
  /* A JWKS document may carry oct keys: wipe the copy. */
  OPENSSL_cleanse(buf, len);
  free(buf);
  return rc;
}
