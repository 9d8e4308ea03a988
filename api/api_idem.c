/*
 * api_idem: idempotency records in Redis (see api_idem.h).
 *
 * Threads: any; the per-thread connection lives in thread-specific data and is freed when its
 * thread ends.
 */
#include "api_idem.h"

#include <hiredis.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>

#define PENDING_TTL_MS 60000

struct api_idem {
  api_idem_options o;
  char *host, *password, *prefix;
  pthread_key_t conn_key;
  pthread_mutex_t mu;
  char status[256]; /* "" when the last exchange worked; under mu */
};

static void conn_free(void *p) {
  redisFree(p);
}

int api_idem_create(api_idem **out, const api_idem_options *o, char *err, size_t errlen) {
  *out = NULL;
  api_idem *d = calloc(1, sizeof *d);
  if (!d) {
    snprintf(err, errlen, "out of memory");
    return -1;
  }
  d->o = *o;
  d->host = strdup(o->host);
  d->prefix = strdup(o->prefix);
  d->password = o->password ? strdup(o->password) : NULL;
  if (!d->host || !d->prefix || (o->password && !d->password) ||
      pthread_key_create(&d->conn_key, conn_free) != 0) {
    free(d->host);
    free(d->prefix);
    free(d->password);
    free(d);
    snprintf(err, errlen, "out of memory");
    return -1;
  }
  pthread_mutex_init(&d->mu, NULL);
  *out = d;
  return 0;
}

void api_idem_destroy(api_idem *d) {
  if (!d)
    return;
  redisContext *c = pthread_getspecific(d->conn_key);
  redisFree(c);
  pthread_key_delete(d->conn_key);
  pthread_mutex_destroy(&d->mu);
  free(d->host);
  free(d->prefix);
  free(d->password);
  free(d);
}

static void set_status(api_idem *d, const char *why) {
  pthread_mutex_lock(&d->mu);
  snprintf(d->status, sizeof d->status, "%s", why);
  pthread_mutex_unlock(&d->mu);
}

int api_idem_status(api_idem *d, char *why, size_t whylen) {
  pthread_mutex_lock(&d->mu);
  int rc = d->status[0] ? -1 : 0;
  if (rc)
    snprintf(why, whylen, "redis: %s", d->status);
  pthread_mutex_unlock(&d->mu);
  return rc;
}

/* This thread's connection, made if needed; NULL with `why`. */
static redisContext *conn(api_idem *d, char *why, size_t whylen) {
  redisContext *c = pthread_getspecific(d->conn_key);
  if (c)
    return c;
  struct timeval tv = {(time_t)(d->o.timeout_ms / 1000),
                       (suseconds_t)(d->o.timeout_ms % 1000) * 1000};
  c = redisConnectWithTimeout(d->host, d->o.port, tv);
  if (!c || c->err) {
    snprintf(why, whylen, "cannot connect to %s:%d: %s", d->host, d->o.port,
             c ? c->errstr : "out of memory");
    redisFree(c);
    return NULL;
  }
  redisSetTimeout(c, tv);
  redisReply *r = NULL;
  if (d->password)
    r = redisCommand(c, "AUTH %s", d->password);
  if (d->password && (!r || r->type == REDIS_REPLY_ERROR)) {
    snprintf(why, whylen, "AUTH failed: %s", r ? r->str : c->errstr);
    freeReplyObject(r);
    redisFree(c);
    return NULL;
  }
  freeReplyObject(r);
  r = d->o.db ? redisCommand(c, "SELECT %d", d->o.db) : NULL;
  if (d->o.db && (!r || r->type == REDIS_REPLY_ERROR)) {
    snprintf(why, whylen, "SELECT %d failed: %s", d->o.db, r ? r->str : c->errstr);
    freeReplyObject(r);
    redisFree(c);
    return NULL;
  }
  freeReplyObject(r);
  pthread_setspecific(d->conn_key, c);
  return c;
}

/* Runs one command (printf-style, hiredis' %s/%b); NULL with `why` and the connection dropped. */
static redisReply *command(api_idem *d, char *why, size_t whylen, const char *fmt, ...) {
  redisContext *c = conn(d, why, whylen);
  if (!c) {
    set_status(d, why);
    return NULL;
  }
  va_list ap;
  va_start(ap, fmt);
  redisReply *r = redisvCommand(c, fmt, ap);
  va_end(ap);
  if (!r || r->type == REDIS_REPLY_ERROR) {
    snprintf(why, whylen, "%s", r ? r->str : c->errstr);
    freeReplyObject(r);
    if (!r) {
      redisFree(c);
      pthread_setspecific(d->conn_key, NULL);
    }
    set_status(d, why);
    return NULL;
  }
  set_status(d, "");
  return r;
}

static void key_of(const api_idem *d, const char *keyname, const char *idem, char *buf,
                   size_t len) {
  snprintf(buf, len, "%sapi:idem:{%s:%s}", d->prefix, keyname, idem);
}

api_idem_state api_idem_claim(api_idem *d, const char *keyname, const char *idem, const char *hash,
                              size_t *count, char *why, size_t whylen) {
  char key[512], val[160];
  key_of(d, keyname, idem, key, sizeof key);
  snprintf(val, sizeof val, "pending %s", hash);
  redisReply *r = command(d, why, whylen, "SET %s %s NX PX %d", key, val, PENDING_TTL_MS);
  if (!r)
    return API_IDEM_ERROR;
  bool claimed = r->type == REDIS_REPLY_STATUS;
  freeReplyObject(r);
  if (claimed)
    return API_IDEM_NEW;
  r = command(d, why, whylen, "GET %s", key);
  if (!r)
    return API_IDEM_ERROR;
  api_idem_state st = API_IDEM_PENDING; /* gone meanwhile (expired): let the client retry */
  if (r->type == REDIS_REPLY_STRING) {
    char state[16] = "", h[80] = "";
    unsigned long long n = 0;
    sscanf(r->str, "%15s %79s %llu", state, h, &n);
    if (strcmp(h, hash) != 0)
      st = API_IDEM_MISMATCH;
    else if (strcmp(state, "done") == 0) {
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
  redisReply *r =
      command(d, why, whylen, "SET %s %s PX %llu", key, val, (unsigned long long)d->o.ttl_ms);
  if (!r)
    return -1;
  freeReplyObject(r);
  return 0;
}

void api_idem_release(api_idem *d, const char *keyname, const char *idem) {
  char key[512], why[256];
  key_of(d, keyname, idem, key, sizeof key);
  redisReply *r = command(d, why, sizeof why, "DEL %s", key);
  freeReplyObject(r);
}
