/*
 * api_redis: per-thread synchronous Redis connections (see api_redis.h).
 *
 * Threads: any.
 */
#include "api_redis.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>

struct api_redis {
  api_redis_options o;
  char *host, *password, *prefix;
  pthread_key_t conn_key;
  pthread_mutex_t mu;
  char status[256]; /* "" when the last exchange worked; under mu */
};

static void conn_free(void *p) {
  redisFree(p);
}

int api_redis_create(api_redis **out, const api_redis_options *o, char *err, size_t errlen) {
  *out = NULL;
  api_redis *r = calloc(1, sizeof *r);
  if (!r) {
    snprintf(err, errlen, "out of memory");
    return -1;
  }
  r->o = *o;
  r->host = strdup(o->host);
  r->prefix = strdup(o->prefix);
  r->password = o->password ? strdup(o->password) : NULL;
  if (!r->host || !r->prefix || (o->password && !r->password) ||
      pthread_key_create(&r->conn_key, conn_free) != 0) {
    free(r->host);
    free(r->prefix);
    free(r->password);
    free(r);
    snprintf(err, errlen, "out of memory");
    return -1;
  }
  pthread_mutex_init(&r->mu, NULL);
  *out = r;
  return 0;
}

void api_redis_destroy(api_redis *r) {
  if (!r)
    return;
  redisFree(pthread_getspecific(r->conn_key));
  pthread_key_delete(r->conn_key);
  pthread_mutex_destroy(&r->mu);
  free(r->host);
  free(r->prefix);
  free(r->password);
  free(r);
}

const char *api_redis_prefix(const api_redis *r) {
  return r->prefix;
}

static void set_status(api_redis *r, const char *why) {
  pthread_mutex_lock(&r->mu);
  snprintf(r->status, sizeof r->status, "%s", why);
  pthread_mutex_unlock(&r->mu);
}

int api_redis_status(api_redis *r, char *why, size_t whylen) {
  pthread_mutex_lock(&r->mu);
  int rc = r->status[0] ? -1 : 0;
  if (rc)
    snprintf(why, whylen, "redis: %s", r->status);
  pthread_mutex_unlock(&r->mu);
  return rc;
}

/* AUTH and SELECT on a new connection; false with `why`. */
static bool setup(api_redis *r, redisContext *c, char *why, size_t whylen) {
  redisReply *rep = NULL;
  if (r->password) {
    rep = redisCommand(c, "AUTH %s", r->password);
    if (!rep || rep->type == REDIS_REPLY_ERROR) {
      snprintf(why, whylen, "AUTH failed: %s", rep ? rep->str : c->errstr);
      freeReplyObject(rep);
      return false;
    }
    freeReplyObject(rep);
  }
  if (r->o.db) {
    rep = redisCommand(c, "SELECT %d", r->o.db);
    if (!rep || rep->type == REDIS_REPLY_ERROR) {
      snprintf(why, whylen, "SELECT %d failed: %s", r->o.db, rep ? rep->str : c->errstr);
      freeReplyObject(rep);
      return false;
    }
    freeReplyObject(rep);
  }
  return true;
}

redisContext *api_redis_conn(api_redis *r, char *why, size_t whylen) {
  redisContext *c = pthread_getspecific(r->conn_key);
  if (c)
    return c;
  struct timeval tv = {(time_t)(r->o.timeout_ms / 1000),
                       (suseconds_t)(r->o.timeout_ms % 1000) * 1000};
  c = redisConnectWithTimeout(r->host, r->o.port, tv);
  if (!c || c->err) {
    snprintf(why, whylen, "cannot connect to %s:%d: %s", r->host, r->o.port,
             c ? c->errstr : "out of memory");
    redisFree(c);
    set_status(r, why);
    return NULL;
  }
  redisSetTimeout(c, tv);
  if (!setup(r, c, why, whylen)) {
    redisFree(c);
    set_status(r, why);
    return NULL;
  }
  pthread_setspecific(r->conn_key, c);
  return c;
}

void api_redis_failed(api_redis *r, const char *why) {
  redisFree(pthread_getspecific(r->conn_key));
  pthread_setspecific(r->conn_key, NULL);
  set_status(r, why);
}

redisReply *api_redis_command(api_redis *r, char *why, size_t whylen, const char *fmt, ...) {
  redisContext *c = api_redis_conn(r, why, whylen);
  if (!c)
    return NULL;
  va_list ap;
  va_start(ap, fmt);
  redisReply *rep = redisvCommand(c, fmt, ap);
  va_end(ap);
  if (!rep) {
    snprintf(why, whylen, "%s", c->errstr);
    api_redis_failed(r, why);
    return NULL;
  }
  if (rep->type == REDIS_REPLY_ERROR) {
    snprintf(why, whylen, "%s", rep->str);
    freeReplyObject(rep);
    return NULL;
  }
  set_status(r, "");
  return rep;
}
