/*
 * api_keys: API keys from a file, matched in constant time (see api_keys.h).
 *
 * Threads: api_keyring_auth() on the HTTP threads under the read lock; the rest on the main
 * thread (reload takes the write lock only for the pointer swap).
 */
#include "api_keys.h"

#include <errno.h>
#include <openssl/crypto.h>
#include <openssl/sha.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

#define MAX_FILE (1u << 20)

typedef struct {
  char name[API_KEY_NAME_MAX + 1];
  unsigned char digest[SHA256_DIGEST_LENGTH]; /* of the secret: the secret itself is not kept */
} key;

struct api_keys {
  key *keys;
  size_t n;
};

static bool name_char(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' ||
         c == '_' || c == '.';
}

static bool secret_char(char c) {
  return c > ' ' && c < 0x7f; /* printable ASCII without space: safe in a header */
}

int api_keys_parse(api_keys **out, const char *text, size_t len, char *err, size_t errlen) {
  *out = NULL;
  api_keys *k = calloc(1, sizeof *k);
  if (!k) {
    snprintf(err, errlen, "out of memory");
    return -1;
  }
  size_t cap = 0, lineno = 0;
  const char *p = text, *end = text + len;
  while (p < end) {
    const char *eol = memchr(p, '\n', (size_t)(end - p));
    const char *le = eol ? eol : end;
    lineno++;
    const char *a = p, *b = le;
    while (a < b && (*a == ' ' || *a == '\t'))
      a++;
    while (b > a && (b[-1] == ' ' || b[-1] == '\t' || b[-1] == '\r'))
      b--;
    p = eol ? eol + 1 : end;
    if (a == b || *a == '#')
      continue;
    const char *ne = a;
    while (ne < b && name_char(*ne))
      ne++;
    const char *s = ne;
    while (s < b && (*s == ' ' || *s == '\t'))
      s++;
    size_t nlen = (size_t)(ne - a), slen = (size_t)(b - s);
    if (nlen == 0 || nlen > API_KEY_NAME_MAX || s == ne) {
      snprintf(err, errlen,
               "line %zu: expected \"<name> <secret>\" with a name of 1..%d letters, digits, "
               "'-', '_' or '.'",
               lineno, API_KEY_NAME_MAX);
      goto fail;
    }
    if (slen < API_KEY_SECRET_MIN || slen > API_KEY_SECRET_MAX) {
      snprintf(err, errlen,
               "line %zu: the secret of key %.*s has %zu bytes; use %d..%d (e.g. openssl rand "
               "-hex 32)",
               lineno, (int)nlen, a, slen, API_KEY_SECRET_MIN, API_KEY_SECRET_MAX);
      goto fail;
    }
    for (size_t i = 0; i < slen; i++)
      if (!secret_char(s[i])) {
        snprintf(err, errlen, "line %zu: the secret of key %.*s has a space or a non-ASCII byte",
                 lineno, (int)nlen, a);
        goto fail;
      }
    if (k->n == API_KEYS_MAX) {
      snprintf(err, errlen, "more than %d keys", API_KEYS_MAX);
      goto fail;
    }
    if (k->n == cap) {
      cap = cap ? cap * 2 : 8;
      key *nk = realloc(k->keys, cap * sizeof *nk);
      if (!nk) {
        snprintf(err, errlen, "out of memory");
        goto fail;
      }
      k->keys = nk;
    }
    key *e = &k->keys[k->n];
    memcpy(e->name, a, nlen);
    e->name[nlen] = '\0';
    SHA256((const unsigned char *)s, slen, e->digest);
    for (size_t i = 0; i < k->n; i++) {
      if (strcmp(k->keys[i].name, e->name) == 0 ||
          memcmp(k->keys[i].digest, e->digest, sizeof e->digest) == 0) {
        snprintf(err, errlen, "line %zu: key %s repeats the name or the secret of key %s", lineno,
                 e->name, k->keys[i].name);
        goto fail;
      }
    }
    k->n++;
  }
  if (k->n == 0) {
    snprintf(err, errlen, "no key in the file (one \"<name> <secret>\" per line)");
    goto fail;
  }
  *out = k;
  return 0;
fail:
  api_keys_destroy(k);
  return -1;
}

void api_keys_destroy(api_keys *k) {
  if (!k)
    return;
  OPENSSL_cleanse(k->keys, k->n * sizeof *k->keys);
  free(k->keys);
  free(k);
}

size_t api_keys_count(const api_keys *k) {
  return k->n;
}

const char *api_keys_match(const api_keys *k, const char *token, size_t len) {
  unsigned char d[SHA256_DIGEST_LENGTH];
  SHA256((const unsigned char *)token, len, d);
  const char *found = NULL;
  /* Every key is compared; the branch only picks the result, after the constant-time compare. */
  for (size_t i = 0; i < k->n; i++) {
    int differs = CRYPTO_memcmp(d, k->keys[i].digest, sizeof d);
    found = differs ? found : k->keys[i].name;
  }
  return found;
}

/* --- the keyring ------------------------------------------------------------------------- */

struct api_keyring {
  char *path;
  pthread_rwlock_t lock;
  api_keys *keys; /* under lock */
  struct stat seen;
};

static int read_file(const char *path, char **text, size_t *len, struct stat *st, char *err,
                     size_t errlen) {
  FILE *f = fopen(path, "rb");
  if (!f) {
    snprintf(err, errlen, "cannot open the keys file %s: %s", path, strerror(errno));
    return -1;
  }
  if (fstat(fileno(f), st) != 0 || st->st_size > MAX_FILE) {
    snprintf(err, errlen, "the keys file %s is larger than 1 MiB or unreadable", path);
    fclose(f);
    return -1;
  }
  *text = malloc((size_t)st->st_size + 1);
  if (!*text) {
    fclose(f);
    snprintf(err, errlen, "out of memory");
    return -1;
  }
  *len = fread(*text, 1, (size_t)st->st_size, f);
  fclose(f);
  return 0;
}

static int load(api_keyring *r, char *err, size_t errlen) {
  char *text = NULL, perr[256];
  size_t len = 0;
  struct stat st;
  if (read_file(r->path, &text, &len, &st, err, errlen) != 0)
    return -1;
  api_keys *k = NULL;
  int rc = api_keys_parse(&k, text, len, perr, sizeof perr);
  OPENSSL_cleanse(text, len);
  free(text);
  if (rc != 0) {
    snprintf(err, errlen, "keys file %s: %s", r->path, perr);
    return -1;
  }
  pthread_rwlock_wrlock(&r->lock);
  api_keys *old = r->keys;
  r->keys = k;
  pthread_rwlock_unlock(&r->lock);
  api_keys_destroy(old);
  r->seen = st;
  return 0;
}

int api_keyring_create(api_keyring **out, const char *path, char *err, size_t errlen) {
  *out = NULL;
  api_keyring *r = calloc(1, sizeof *r);
  if (!r || !(r->path = strdup(path))) {
    free(r);
    snprintf(err, errlen, "out of memory");
    return -1;
  }
  pthread_rwlock_init(&r->lock, NULL);
  if (load(r, err, errlen) != 0) {
    api_keyring_destroy(r);
    return -1;
  }
  *out = r;
  return 0;
}

void api_keyring_destroy(api_keyring *r) {
  if (!r)
    return;
  api_keys_destroy(r->keys);
  pthread_rwlock_destroy(&r->lock);
  free(r->path);
  free(r);
}

int api_keyring_reload(api_keyring *r, bool force, char *err, size_t errlen) {
  struct stat st;
  if (!force) {
    if (stat(r->path, &st) != 0) {
      snprintf(err, errlen, "cannot stat the keys file %s: %s (the loaded keys stay)", r->path,
               strerror(errno));
      return -1;
    }
    /* A Kubernetes Secret update swaps a symlink: the inode changes, so does mtime. */
    if (st.st_ino == r->seen.st_ino && st.st_size == r->seen.st_size &&
        st.st_mtim.tv_sec == r->seen.st_mtim.tv_sec &&
        st.st_mtim.tv_nsec == r->seen.st_mtim.tv_nsec)
      return 0;
  }
  if (load(r, err, errlen) != 0) {
    if (!force && stat(r->path, &st) == 0)
      r->seen = st; /* say it once per change, not once per check */
    return -1;
  }
  return 1;
}

size_t api_keyring_count(api_keyring *r) {
  pthread_rwlock_rdlock(&r->lock);
  size_t n = r->keys ? r->keys->n : 0;
  pthread_rwlock_unlock(&r->lock);
  return n;
}

bool api_keyring_auth(api_keyring *r, const char *authorization, char *name, size_t namelen) {
  if (!authorization || strncasecmp(authorization, "Bearer ", 7) != 0)
    return false;
  const char *tok = authorization + 7;
  while (*tok == ' ')
    tok++;
  size_t len = strnlen(tok, API_KEY_SECRET_MAX + 1);
  while (len && tok[len - 1] == ' ')
    len--;
  if (len == 0 || len > API_KEY_SECRET_MAX)
    return false;
  pthread_rwlock_rdlock(&r->lock);
  const char *n = r->keys ? api_keys_match(r->keys, tok, len) : NULL;
  if (n)
    snprintf(name, namelen, "%s", n);
  pthread_rwlock_unlock(&r->lock);
  return n != NULL;
}
