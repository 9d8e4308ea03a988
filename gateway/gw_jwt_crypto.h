/*
 * gw_jwt_crypto: the signature primitives of gw_jwt, one per algorithm family (HMAC, RSA
 * PKCS#1 v1.5, RSA-PSS, ECDSA with the JWS raw r||s form, EdDSA), over OpenSSL 3's EVP
 * interface. Internal to gw_jwt (hence the double underscore); nothing here parses a token.
 *
 * Threads: reentrant; no state.
 */
#ifndef GW_JWT_CRYPTO_H
#define GW_JWT_CRYPTO_H

#include "gw_jwt.h"

/* Largest signature made or accepted: an 8192-bit RSA modulus. */
#define GW_JWT_SIG_MAX 1024

/*
 * Checks sig[0..siglen) over data[0..len) with one key: the HMAC secret[0..secret_len) for HS*,
 * pkey for the others (its type already matched to alg by the caller). Returns GW_JWT_OK,
 * GW_JWT_BAD_SIGNATURE or GW_JWT_CRYPTO. All borrowed.
 */
int gw_jwt__verify_sig(gw_jwt_alg alg, const uint8_t *secret, size_t secret_len, EVP_PKEY *pkey,
                       const char *data, size_t len, const uint8_t *sig, size_t siglen);

/*
 * Signs data[0..len) as signer says into sig (GW_JWT_SIG_MAX bytes), the JWS form (ECDSA: r||s).
 * Returns the signature length or a negative gw_jwt_err. All borrowed.
 */
int gw_jwt__sign_sig(const gw_jwt_signer *signer, const char *data, size_t len,
                     uint8_t sig[GW_JWT_SIG_MAX]);

#endif
