/*
 * gw_keyset: the keys JWTs are verified with: HMAC secrets, public keys from PEM files (public
 * keys or certificates) and JWKS documents (RFC 7517).
 *
 * A set is built (gw_keyset_add_*) by one thread, then published and never modified again: a
 * reload builds a new set and swaps the pointer on the loop thread, dropping its reference to the
 * old one (gw_keyset_unref). The reference count is atomic so a builder on another thread (a
 * future JWKS fetcher) can hand a set over without a lock.
 *
 * JWKS rules: keys whose "kty" we do not know (or whose "crv" we do not support, e.g. P-521 or
 * X25519), and keys whose "use" is not "sig", are skipped (a provider may publish encryption keys
 * beside signing keys); a known key that is malformed (a missing or mis-sized member, a point not
 * on its curve, an RSA modulus under 2048 bits, an HMAC key under 32 bytes) fails the whole
 * document with an error naming the key, so a half-understood set is never used.
 *
 * Threads: building on one thread at a time; a published set may be read from any thread.
 */
#ifndef GW_KEYSET_H
#define GW_KEYSET_H

#include <openssl/types.h>
#include <stddef.h>
#include <stdint.h>

/* At most this many keys in a set: a token without "kid" is tried against every key of its type,
 * so the bound is also the bound on the work one bad token costs. */
#define GW_KEYSET_MAX_KEYS 64
/* Largest PEM or JWKS file read (real JWKS documents are a few KiB). */
#define GW_KEYSET_MAX_FILE (256 * 1024)
/* Longest "kid" kept; longer ones are refused. */
#define GW_KEYSET_MAX_KID 256
/* Shortest HMAC key (RFC 7518 §3.2: at least the hash size; HS256 is the smallest). */
#define GW_KEYSET_MIN_SECRET 32
/* Smallest RSA modulus accepted (RFC 7518 §3.3). */
#define GW_KEYSET_MIN_RSA_BITS 2048

/* X-macro: name, JWK "kty"/"crv" spelling for messages. */
#define GW_KEY_TYPE_MAP(X)                                                                         \
  X(OCT, "oct (HMAC secret)")                                                                      \
  X(RSA, "RSA")                                                                                    \
  X(EC_P256, "EC P-256")                                                                           \
  X(EC_P384, "EC P-384")                                                                           \
  X(ED25519, "OKP Ed25519")

typedef enum {
#define GW_KEY_TYPE_ENUM(name, text) GW_KEY_##name,
  GW_KEY_TYPE_MAP(GW_KEY_TYPE_ENUM)
#undef GW_KEY_TYPE_ENUM
} gw_key_type;

/* "RSA", "EC P-256", ...: static string. */
const char *gw_key_type_name(gw_key_type t);

/* X-macro: name, value, message. The message is the kind of failure; the err buffer of each
 * call says which file and which key. */
#define GW_KEYSET_ERRNO_MAP(X)                                                                     \
  X(OK, 0, "success")                                                                              \
  X(IO, -1, "cannot read the key file")                                                            \
  X(TOO_BIG, -2, "key file is larger than 256 KiB")                                                \
  X(BAD_PEM, -3, "not a PEM public key or certificate")                                            \
  X(PRIVATE_PEM, -4, "PEM file holds a private key; give the public key or certificate")           \
  X(BAD_JWKS, -5, "not a JWKS document ({\"keys\":[...]})")                                        \
  X(BAD_JWK, -6, "malformed key in the JWKS document")                                             \
  X(WEAK_KEY, -7, "key is too weak (RSA under 2048 bits, HMAC secret under 32 bytes)")             \
  X(UNSUPPORTED, -8, "unsupported key type")                                                       \
  X(TOO_MANY, -9, "more than 64 keys")                                                             \
  X(EMPTY, -10, "no usable signing key found")                                                     \
  X(NOMEM, -11, "out of memory")

typedef enum {
#define GW_KEYSET_ERR_ENUM(name, value, msg) GW_KEYSET_##name = value,
  GW_KEYSET_ERRNO_MAP(GW_KEYSET_ERR_ENUM)
#undef GW_KEYSET_ERR_ENUM
} gw_keyset_err;

const char *gw_keyset_strerror(int err); /* static string */
const char *gw_keyset_err_name(int err); /* "GW_KEYSET_BAD_JWK" etc.; static string */

typedef struct gw_keyset gw_keyset;
typedef struct gw_key gw_key;

/* A new empty set with one reference, or NULL when out of memory. */
gw_keyset *gw_keyset_create(void);
/* Adds a reference; returns ks. */
gw_keyset *gw_keyset_ref(gw_keyset *ks);
/* Drops a reference; the last one frees the set (secrets wiped). NULL is a no-op. */
void gw_keyset_unref(gw_keyset *ks);

/*
 * Builders: each returns GW_KEYSET_OK or a negative gw_keyset_err with the detail in err. On
 * failure the set is unchanged. kid: borrowed, copied; NULL: the key has none. The `what`
 * argument names the source in messages (a file name, an option).
 */
int gw_keyset_add_secret(gw_keyset *ks, const uint8_t *secret, size_t len, const char *kid,
                         char *err, size_t errlen);
/* Every PEM block of pem[0..len): PUBLIC KEY, RSA PUBLIC KEY or CERTIFICATE. */
int gw_keyset_add_pem(gw_keyset *ks, const char *pem, size_t len, const char *kid, const char *what,
                      char *err, size_t errlen);
/* The signing keys of a JWKS document (rules at the top of this file). */
int gw_keyset_add_jwks(gw_keyset *ks, const char *json, size_t len, const char *what, char *err,
                       size_t errlen);
/* Reads a whole file (at most GW_KEYSET_MAX_FILE bytes) and adds it as PEM or JWKS. */
int gw_keyset_add_pem_file(gw_keyset *ks, const char *path, char *err, size_t errlen);
int gw_keyset_add_jwks_file(gw_keyset *ks, const char *path, char *err, size_t errlen);

/* Every key of src (secrets copied, public keys shared by reference): how a key set is made of
 * several sources that change at different times (files, a JWKS URL). src: borrowed. */
int gw_keyset_add_set(gw_keyset *ks, const gw_keyset *src, const char *what, char *err,
                      size_t errlen);

size_t gw_keyset_count(const gw_keyset *ks);
/* The i-th key (i < count), valid while the caller holds a reference to ks. */
const gw_key *gw_keyset_key(const gw_keyset *ks, size_t i);

gw_key_type gw_key_get_type(const gw_key *k);
/* "kid", or NULL when the key has none. Owned by the key. */
const char *gw_key_kid(const gw_key *k);
/* The JWK "alg" the key is restricted to, or NULL. Owned by the key. */
const char *gw_key_alg(const gw_key *k);
/* The public key (every type but OCT), owned by the key. */
EVP_PKEY *gw_key_pkey(const gw_key *k);
/* The HMAC secret (OCT only), owned by the key. */
const uint8_t *gw_key_secret(const gw_key *k, size_t *len);

/* The key type of an OpenSSL key, or -1 when no JWS algorithm of ours can use it. */
int gw_key_type_of_pkey(const EVP_PKEY *pkey);

#endif
