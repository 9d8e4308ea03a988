/*
 * api_idem: idempotency records in Redis (see api_idem.h).
 *
 * Threads: any.
 */
#include "api_idem.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define PENDING_TTL_MS 60000

struct api_idem {
  api_redis *redis;
  uint64_t ttl_ms;
};

int api_idem_create(api_idem **out, api_redis *redis, uint64_t ttl_ms, char *err, size_t errlen) {
  *out = calloc(1, sizeof **out);
  if (!*out) {
    snprintf(err, errlen, "out of memory");
    return -1;
  }
  (*out)->redis = redis;
  (*out)->ttl_ms = ttl_ms;
  return 0;
}

void api_idem_destroy(api_idem *d) {
  free(d);
}

static void key_of(const api_idem *d, const char *keyname, const char *idem, char *buf,
                   size_t len) {
  snprintf(buf, len, "%sapi:idem:{%s:%s}", api_redis_prefix(d->redis), keyname, idem);
}

api_idem_state api_idem_claim(api_idem *d, const char *keyname, const char *idem, const char *hash,
                              size_t *count, char *why, size_t whylen) {
  char key[512], val[160];
  key_of(d, keyname, idem, key, sizeof key);
  snprintf(val, sizeof val, "pending %s", hash);
  char px[24];
  snprintf(px, sizeof px, "%d", PENDING_TTL_MS);
  redisReply *r = api_redis_command(d->redis, why, whylen, 6,
                                    (const char *[]){"SET", key, val, "NX", "PX", px});
  if (!r)
    return API_IDEM_ERROR;
  bool claimed = r->type == REDIS_REPLY_STATUS;
  freeReplyObject(r);
  if (claimed)
    return API_IDEM_NEW;
  r = api_redis_command(d->redis, why, whylen, 2, (const char *[]){"GET", key});
  if (!r)
    return API_IDEM_ERROR;
  api_idem_state st = API_IDEM_PENDING; /* gone meanwhile (expired): let the client retry */
  if (r->type == REDIS_REPLY_STRING) {
    char state[16] = "", h[80] = "";
    unsigned long long n = 0;
    sscanf(r->str, "%15s %79s %llu", state, h, &n);
    if (strcmp(h, hash) != 0) {
      st = API_IDEM_MISMATCH;
    } else if (strcmp(state, "done") == 0) {
      st = API_IDEM_DONE;
      *count = (size_t)n;
    }
  }
  freeReplyObject(r);
  return st;
}

int api_idem_done(api_idem *d, const char *keyname, const char *idem, const char *hash,
                  size_t count, char *why, size_t whylen) {
  char key[512], val[160];
  key_of(d, keyname, idem, key, sizeof key);
  snprintf(val, sizeof val, "done %s %zu", hash, count);
  char px[24];
  snprintf(px, sizeof px, "%llu", (unsigned long long)d->ttl_ms);
  redisReply *r =
      api_redis_command(d->redis, why, whylen, 5, (const char *[]){"SET", key, val, "PX", px});
  if (!r)
    return -1;
  freeReplyObject(r);
  return 0;
}

void api_idem_release(api_idem *d, const char *keyname, const char *idem) {
  char key[512], why[256];
  key_of(d, keyname, idem, key, sizeof key);
  freeReplyObject(api_redis_command(d->redis, why, sizeof why, 2, (const char *[]){"DEL", key}));
}
