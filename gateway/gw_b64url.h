/*
 * gw_b64url: base64url without padding (RFC 4648 §5), the encoding of every JWS segment and of
 * every JWK member, strict on decode so each byte string has exactly one accepted spelling.
 *
 * Threads: reentrant; no state.
 */
#ifndef GW_B64URL_H
#define GW_B64URL_H

#include <stddef.h>
#include <stdint.h>

/* Characters gw_b64url_encode writes for n bytes (no NUL). */
size_t gw_b64url_encoded_len(size_t n);

/* Writes gw_b64url_encoded_len(n) characters to out (no NUL). in, out: borrowed. */
void gw_b64url_encode(const uint8_t *in, size_t n, char *out);

/*
 * Strict decode: alphabet only, no padding, no length of 1 mod 4, and the unused low bits of the
 * last character zero (a signature cannot be re-encoded into a second valid token). Returns the
 * decoded length, or -1 (bad input or more than cap bytes). in, out: borrowed.
 */
long gw_b64url_decode(const char *in, size_t n, uint8_t *out, size_t cap);

/* Whether c is a base64url character. */
int gw_b64url_is_char(unsigned char c);

#endif
