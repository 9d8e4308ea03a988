/*
 * api_keys: the bearer API keys of wsgate-api, read from a file (--keys-file): one key per line,
 * "<name> <secret>", '#' starts a comment. Several keys may be valid at once, which is how a key
 * is rotated: add the new one, move the clients, remove the old one. The name identifies the
 * caller in logs, metrics and rate limits; the secret is what clients send
 * ("Authorization: Bearer <secret>"), at least 16 bytes, no spaces.
 *
 * Matching is constant-time: the presented token and every secret are compared as SHA-256
 * digests with CRYPTO_memcmp, all of them every time, so neither the timing nor the secrets'
 * lengths tell an attacker how close a guess was.
 *
 * A keyring holds the current set and swaps in a new one on reload (SIGHUP, or the file's
 * size, mtime or inode changed); a file that fails to parse leaves the old set in place (logged).
 *
 * Threads: api_keyring_auth() from any thread (a read lock); create, reload and destroy from the
 * main thread.
 */
#ifndef API_KEYS_H
#define API_KEYS_H

#include <stdbool.h>
#include <stddef.h>

#define API_KEY_NAME_MAX   64
#define API_KEY_SECRET_MIN 16
#define API_KEY_SECRET_MAX 256
#define API_KEYS_MAX       1024

typedef struct api_keys api_keys;

/* Parses the text of a key file. Returns 0, or -1 with "line N: what is wrong" in `err`. */
int api_keys_parse(api_keys **out, const char *text, size_t len, char *err, size_t errlen);
void api_keys_destroy(api_keys *k); /* NULL is a no-op */
size_t api_keys_count(const api_keys *k);
/* The name of the key whose secret is token[0..len), or NULL. Constant time in the keys' content.
 * Borrowed from `k`. */
const char *api_keys_match(const api_keys *k, const char *token, size_t len);

typedef struct api_keyring api_keyring;

/* Loads `path` (copied). Returns 0, or -1 with what is wrong in `err`. */
int api_keyring_create(api_keyring **out, const char *path, char *err, size_t errlen);
void api_keyring_destroy(api_keyring *r); /* NULL is a no-op */
/*
 * Reloads when `force` or when the file changed since the last load. Returns 1 when a new set
 * is in place, 0 when nothing changed, -1 when the file is unreadable or invalid (the old set
 * stays; `err` says why).
 */
int api_keyring_reload(api_keyring *r, bool force, char *err, size_t errlen);
size_t api_keyring_count(api_keyring *r);
/*
 * Checks an Authorization header value ("Bearer <secret>"; NULL: none). Returns true and the
 * key's name in `name` when a key matches.
 */
bool api_keyring_auth(api_keyring *r, const char *authorization, char *name, size_t namelen);

#endif
