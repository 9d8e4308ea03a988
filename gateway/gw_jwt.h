/*
 * gw_jwt: JSON Web Token verification (RFC 7519 / RFC 7515 compact form) for the upgrade request,
 * and minting for tests and tools. Algorithms (RFC 7518, RFC 8037): HS256/384/512,
 * RS256/384/512, PS256, ES256/384 and EdDSA (Ed25519), all through OpenSSL 3's EVP interface.
 *
 * What a token must be to pass:
 *   - three base64url segments (no padding), at most GW_JWT_MAX_TOKEN bytes in all;
 *   - header: a JSON object whose "alg" is exactly one of the configured algorithms (cfg->algs;
 *     "none", a missing alg, "hs256", an algorithm not configured: refused. The algorithms are
 *     configured, never taken from the token); "typ" ignored; a "crit" member refused (we
 *     understand no extension, RFC 7515 §4.1.11); "kid", when present, a string;
 *   - key: with a "kid", the keys of that kid (or, when no key carries that kid, the keys without
 *     one); without, every key. The key's type must be the algorithm's (an RSA public key is
 *     never used as an HMAC secret: the algorithm-confusion attack) and its JWK "alg", when set,
 *     the token's;
 *   - signature: verified with one of those keys (HMAC compared in constant time);
 *   - claims: a JSON object; "exp" a number, required unless cfg->exp_optional; "nbf" honoured
 *     when present; both with cfg->leeway_s; "aud" (string or array of strings) must contain
 *     cfg->audience when that is set; "iss" must be one of cfg->issuers when those are set;
 *   - the user claim (cfg->user_claim, default "sub"): a non-empty string of at most
 *     WSG_MAX_USER_LEN bytes of valid UTF-8.
 * The header is checked before the signature (so "alg":"none" gets its own error), the claims
 * only after it: untrusted claims never reach the JSON parser.
 *
 * Threads: none of its own; every function is reentrant (the gateway calls it on the loop
 * thread).
 */
#ifndef GW_JWT_H
#define GW_JWT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "gw_keyset.h"
#include "wsg_envelope.h"

/* Longest token accepted (the whole compact form). Bounds every allocation made while verifying. */
#define GW_JWT_MAX_TOKEN 8192

/* X-macro: name, value, message. Generates the enum, gw_jwt_strerror() and gw_jwt_err_name(). */
#define GW_JWT_ERRNO_MAP(X)                                                                        \
  X(OK, 0, "success")                                                                              \
  X(MALFORMED, -1, "token is not three base64url segments separated by '.'")                       \
  X(TOO_LONG, -2, "token is longer than the 8192-byte limit")                                      \
  X(BAD_HEADER, -3, "token header is not a JSON object")                                           \
  X(BAD_ALG, -4, "token algorithm is not one of --jwt-algorithms (default: HS256 alone)")          \
  X(CRIT, -5, "token header has a \"crit\" member (no JWS extension is supported)")                \
  X(BAD_SIGNATURE, -6, "token signature does not match the configured key")                        \
  X(BAD_CLAIMS, -7, "token claims are not a JSON object")                                          \
  X(NO_EXP, -8, "token has no \"exp\" claim (expiry is required)")                                 \
  X(BAD_TIME, -9, "token \"exp\", \"nbf\" or \"iat\" is not a number")                             \
  X(EXPIRED, -10, "token has expired (\"exp\" is in the past)")                                    \
  X(NOT_YET_VALID, -11, "token is not valid yet (\"nbf\" is in the future)")                       \
  X(BAD_AUDIENCE, -12, "token \"aud\" does not name this service")                                 \
  X(NO_USER, -13, "token has no user claim")                                                       \
  X(BAD_USER, -14, "token user claim is not a non-empty UTF-8 string within the length limit")     \
  X(BAD_KEY, -15, "no JWT key configured (the secret is empty)")                                   \
  X(BUFFER, -16, "output buffer is too small")                                                     \
  X(NOMEM, -17, "out of memory")                                                                   \
  X(CRYPTO, -18, "OpenSSL failed to compute or check a signature")                                 \
  X(BAD_KID, -19, "token \"kid\" is not a non-empty string")                                       \
  X(UNKNOWN_KID, -20, "token \"kid\" names no configured key (unknown, or rotated out)")           \
  X(KEY_ALG_MISMATCH, -21,                                                                         \
    "token algorithm does not fit the key its \"kid\" names (e.g. HS256 with an RSA key)")         \
  X(NO_KEY, -22, "no configured key is of the type the token algorithm needs")                     \
  X(BAD_ISSUER, -23, "token \"iss\" is not one of the accepted issuers (--jwt-issuer)")            \
  X(UNKNOWN_ALG, -24, "unknown JWS algorithm name")

typedef enum {
#define GW_JWT_ERR_ENUM(name, value, msg) GW_JWT_##name = value,
  GW_JWT_ERRNO_MAP(GW_JWT_ERR_ENUM)
#undef GW_JWT_ERR_ENUM
} gw_jwt_err;

/* X-macro: name (the JWS "alg" spelling), family, digest bits (0: none), key type. */
#define GW_JWT_ALG_MAP(X)                                                                          \
  X(HS256, HMAC, 256, OCT)                                                                         \
  X(HS384, HMAC, 384, OCT)                                                                         \
  X(HS512, HMAC, 512, OCT)                                                                         \
  X(RS256, RSA, 256, RSA)                                                                          \
  X(RS384, RSA, 384, RSA)                                                                          \
  X(RS512, RSA, 512, RSA)                                                                          \
  X(PS256, PSS, 256, RSA)                                                                          \
  X(ES256, ECDSA, 256, EC_P256)                                                                    \
  X(ES384, ECDSA, 384, EC_P384)                                                                    \
  X(EdDSA, EDDSA, 0, ED25519)

typedef enum {
#define GW_JWT_ALG_ENUM(name, family, bits, key) GW_JWT_ALG_##name,
  GW_JWT_ALG_MAP(GW_JWT_ALG_ENUM)
#undef GW_JWT_ALG_ENUM
      GW_JWT_ALG_COUNT
} gw_jwt_alg;

/* The JWS name of an algorithm ("RS256"); static string, "?" when out of range. */
const char *gw_jwt_alg_name(gw_jwt_alg alg);
/* The algorithm named exactly name[0..len) (case-sensitive), or GW_JWT_UNKNOWN_ALG. */
int gw_jwt_alg_from_name(const char *name, size_t len);
/* The key type an algorithm verifies with. */
gw_key_type gw_jwt_alg_key_type(gw_jwt_alg alg);
/*
 * Parses a comma-separated list ("RS256, ES256") into a bit set. Returns GW_JWT_OK, or
 * GW_JWT_UNKNOWN_ALG with the offending name and the accepted ones in err (an empty list too).
 */
int gw_jwt_algs_parse(const char *list, uint32_t *algs, char *err, size_t errlen);

/* Message for a gw_jwt_err (either sign); "unknown error" for anything else. Static string. */
const char *gw_jwt_strerror(int err);
/* "GW_JWT_EXPIRED" etc.: stable names for logs and metrics labels. Static string. */
const char *gw_jwt_err_name(int err);

typedef struct {
  const uint8_t *secret; /* borrowed, must outlive every verify call */
  size_t secret_len;
  const char *audience;   /* borrowed; NULL: "aud" is not checked */
  const char *user_claim; /* borrowed; NULL: "sub" */
  uint32_t leeway_s;      /* clock skew allowed on exp and nbf */
  bool exp_optional;      /* false (default): a token without "exp" is refused */
  uint32_t algs;          /* accepted algorithms, bit (1u << gw_jwt_alg); 0: HS256 alone */
  const gw_keyset *keys;  /* borrowed; NULL: `secret` is the one key (an HMAC key, no kid) */
  const char *issuers;    /* borrowed: accepted "iss" values, comma-separated; NULL/"": unchecked */
} gw_jwt_config;

/* What a verified token says; filled by gw_jwt_verify_token. */
typedef struct {
  char user[WSG_MAX_USER_LEN + 1]; /* the user claim, NUL-terminated */
  size_t user_len;
  gw_jwt_alg alg;    /* the algorithm it was signed with */
  bool has_exp;      /* whether it has "exp" (it must, unless cfg->exp_optional) */
  int64_t exp_s;     /* "exp", rounded down to a second; for expiring live connections */
  const gw_key *key; /* the key that verified it: borrowed from cfg->keys, NULL for cfg->secret */
} gw_jwt_claims;

/*
 * Verifies token[0..token_len) at time `now_s` (Unix seconds). On success writes the user id to
 * user[0..*user_len) plus a NUL (user_cap must be > WSG_MAX_USER_LEN to hold any accepted id)
 * and returns GW_JWT_OK; otherwise returns a negative gw_jwt_err and leaves *user_len 0.
 * token, user, user_len: borrowed.
 */
int gw_jwt_verify(const gw_jwt_config *cfg, const char *token, size_t token_len, int64_t now_s,
                  char *user, size_t user_cap, size_t *user_len);

/*
 * The richer form: verifies as above and fills *out (zeroed first; out->user_len 0 on failure).
 * token, out: borrowed.
 */
int gw_jwt_verify_token(const gw_jwt_config *cfg, const char *token, size_t token_len,
                        int64_t now_s, gw_jwt_claims *out);

/*
 * Mints "<b64url(header)>.<b64url(claims_json)>.<b64url(HMAC-SHA256)>" with the header
 * {"alg":"HS256","typ":"JWT"}. claims_json is signed as given (not re-serialised), so tests can
 * sign whatever bytes they need. Writes a NUL-terminated token to out and returns its length, or
 * a negative gw_jwt_err. secret, claims_json, out: borrowed.
 */
int gw_jwt_sign(const uint8_t *secret, size_t secret_len, const char *claims_json, char *out,
                size_t outlen);

/* The claims segment of a token gw_jwt_verify() accepted, base64url-decoded into out[0..cap)
 * (cap >= GW_JWT_MAX_TOKEN covers any token): its length, or a negative gw_jwt_err. For claims
 * other modules read themselves (the channels claim); it verifies nothing. */
int gw_jwt_claims_json(const char *token, size_t token_len, uint8_t *out, size_t cap);

/* The same with a caller-chosen header JSON (tests: "alg":"none", "crit", ...). */
int gw_jwt_sign_with_header(const uint8_t *secret, size_t secret_len, const char *header_json,
                            const char *claims_json, char *out, size_t outlen);

/* A signing key for gw_jwt_sign_as: the secret for HS*, the private key for the others. */
typedef struct {
  gw_jwt_alg alg;
  const uint8_t *secret; /* borrowed; HS* only */
  size_t secret_len;
  EVP_PKEY *pkey;  /* borrowed private key; every other algorithm */
  const char *kid; /* borrowed; NULL: no "kid" in the header */
} gw_jwt_signer;

/*
 * Mints a token with any algorithm. header_json NULL: {"alg":<alg>,"kid":<kid>,"typ":"JWT"};
 * otherwise that header is signed as given (tests: a header that lies about the algorithm).
 * Returns the token length (NUL-terminated in out) or a negative gw_jwt_err. All borrowed.
 */
int gw_jwt_sign_as(const gw_jwt_signer *signer, const char *header_json, const char *claims_json,
                   char *out, size_t outlen);

#endif
