/*
 * load_token: where wsgate-load's connections get their bearer tokens: HS256 JWTs it signs itself
 * from a secret file (the gateway's and Centrifugo's format: {"sub": user, "iat", "exp"}), or the
 * output of a command run once per user. Both are done before the load starts, never on the hot
 * path.
 *
 * Threads: the load process's only thread.
 */
#ifndef LOAD_TOKEN_H
#define LOAD_TOKEN_H

#include <stddef.h>
#include <stdint.h>

/* Largest token accepted (the gateway's own limit is 8192 bytes). */
#define LOAD_TOKEN_MAX 8192

/*
 * Signs {"sub":"<user>","iat":now,"exp":now+ttl_s} with HMAC-SHA256. user must be plain
 * (letters, digits, '-', '_', '.'; it is not JSON-escaped). Returns the token length, or -1 when
 * cap is too small or the MAC failed. secret, user: borrowed.
 */
int load_token_jwt(const uint8_t *secret, size_t secret_len, const char *user, int64_t now,
                   int64_t ttl_s, char *out, size_t cap);

/*
 * Runs `cmd <user>` through /bin/sh and returns the first line it prints (trailing whitespace
 * removed). Returns the length, or -1 with a message in err when the command fails, prints
 * nothing or more than cap - 1 bytes. cmd, user: borrowed.
 */
int load_token_cmd(const char *cmd, const char *user, char *out, size_t cap, char *err,
                   size_t errlen);

/* Reads a secret file (one trailing newline ignored) into a malloc'd buffer (caller frees).
 * Returns NULL with a message in err. */
uint8_t *load_token_read_secret(const char *path, size_t *len, char *err, size_t errlen);

#endif
