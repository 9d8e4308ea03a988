/*
 * api_redis: a wsg_redis_sync per thread (see api_redis.h).
 *
 * Threads: any.
 */
#include "api_redis.h"

#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define ARGS_MAX API_REDIS_ARGS_MAX

struct api_redis {
  wsg_redis_sync_options so; /* strings owned by the fields below */
  char *host, *cluster, *user, *password, *prefix;
  pthread_key_t sync_key; /* this thread's wsg_redis_sync (owned by the thread) */
  pthread_mutex_t mu;
  char status[256];                    /* "" when the last exchange worked; under mu */
  wsg_redis_cluster_metrics m_cluster; /* owned by the registry; shared by every thread's client */
};

/* primaries_ready has no row: wsg_redis_sync connects to a node when a command needs it. */
static const wsg_metric_def metric_rows[] = {
    WSG_REDIS_CLUSTER_METRIC_ROWS(api_redis, m_cluster, "wsgate_api"),
};

const wsg_metric_table api_redis_metric_table = WSG_METRIC_TABLE("api/api_redis.c", metric_rows);

static void sync_free(void *p) {
  wsg_redis_sync_destroy(p);
}

/* strdup of an optional string; false when out of memory. */
static bool dup_opt(char **dst, const char *src) {
  *dst = src ? strdup(src) : NULL;
  return !src || *dst;
}

/* Frees r and its strings (not the key nor the mutex). */
static void free_all(api_redis *r) {
  free(r->host);
  free(r->cluster);
  free(r->user);
  free(r->password);
  free(r->prefix);
  free(r);
}

int api_redis_create(api_redis **out, const api_redis_options *o, char *err, size_t errlen) {
  *out = NULL;
  api_redis *r = calloc(1, sizeof *r);
  if (!r) {
    snprintf(err, errlen, "out of memory");
    return -1;
  }
  if (!dup_opt(&r->host, o->host) || !dup_opt(&r->cluster, o->cluster) ||
      !dup_opt(&r->user, o->user) || !dup_opt(&r->password, o->password) ||
      !dup_opt(&r->prefix, o->prefix) || !r->prefix ||
      pthread_key_create(&r->sync_key, sync_free) != 0) {
    snprintf(err, errlen, "out of memory");
    goto fail;
  }
  wsg_metrics_register_table(o->metrics, &api_redis_metric_table, r);
  r->so = (wsg_redis_sync_options){.host = r->host,
                                   .port = o->port,
                                   .seeds = r->cluster,
                                   .user = r->user,
                                   .password = r->password,
                                   .db = o->db,
                                   .timeout_ms = o->timeout_ms,
                                   .metrics = r->m_cluster};
  /* A thread's wsg_redis_sync is made on first use: make one now so bad options fail at start. */
  wsg_redis_sync *check;
  char e2[200];
  if (wsg_redis_sync_create(&check, &r->so, e2, sizeof e2) != 0) {
    snprintf(err, errlen, "redis: %s", e2);
    pthread_key_delete(r->sync_key);
    goto fail;
  }
  wsg_redis_sync_destroy(check);
  pthread_mutex_init(&r->mu, NULL);
  *out = r;
  return 0;
fail:
  free_all(r);
  return -1;
}

void api_redis_destroy(api_redis *r) {
  if (!r)
    return;
  wsg_redis_sync_destroy(pthread_getspecific(r->sync_key));
  pthread_key_delete(r->sync_key);
  pthread_mutex_destroy(&r->mu);
  free_all(r);
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

/* This thread's wsg_redis_sync, made on first use; NULL with `why`. */
static wsg_redis_sync *thread_sync(api_redis *r, char *why, size_t whylen) {
  wsg_redis_sync *s = pthread_getspecific(r->sync_key);
  if (s)
    return s;
  if (wsg_redis_sync_create(&s, &r->so, why, whylen) != 0)
    return NULL;
  if (pthread_setspecific(r->sync_key, s) != 0) {
    wsg_redis_sync_destroy(s);
    snprintf(why, whylen, "out of memory");
    return NULL;
  }
  return s;
}

int api_redis_pipeline(api_redis *r, size_t n, wsg_redis_sync_build_fn build, void *ctx,
                       const char *what, redisReply **reps, char *why, size_t whylen) {
  for (size_t i = 0; i < n; i++)
    reps[i] = NULL;
  wsg_redis_sync *s = thread_sync(r, why, whylen);
  if (!s || wsg_redis_sync_pipeline(s, 0, n, build, ctx, what, reps, why, whylen) != 0) {
    if (s)
      set_status(r, why);
    return -1;
  }
  set_status(r, "");
  return 0;
}

typedef struct {
  int argc;
  const char **argv;
  size_t lens[ARGS_MAX];
} one_cmd;

static bool build_one(void *ctx, size_t i, int *argc, const char ***argv, const size_t **lens) {
  (void)i;
  one_cmd *c = ctx;
  *argc = c->argc;
  *argv = c->argv;
  *lens = c->lens;
  return true;
}

redisReply *api_redis_command(api_redis *r, char *why, size_t whylen, int argc, const char **argv) {
  if (argc < 1 || argc > ARGS_MAX) {
    snprintf(why, whylen, "a command of %d arguments (1..%d)", argc, ARGS_MAX);
    return NULL;
  }
  one_cmd c = {argc, argv, {0}};
  for (int i = 0; i < argc; i++)
    c.lens[i] = strlen(argv[i]);
  redisReply *rep;
  if (api_redis_pipeline(r, 1, build_one, &c, argv[0], &rep, why, whylen) != 0)
    return NULL;
  if (rep->type == REDIS_REPLY_ERROR) {
    snprintf(why, whylen, "%s", rep->str);
    freeReplyObject(rep);
    return NULL;
  }
  return rep;
}
