/*
 * api_redis: wsgate-api's Redis (the only Redis code of the API), on one node or on a Redis
 * Cluster (--redis-cluster), through common/wsg_redis_sync: one wsg_redis_sync per thread
 * (a request runs on one of the --threads HTTP threads and wsg_redis_sync has one owner thread),
 * made on first use; it connects (AUTH, SELECT, or the slot map) when needed and drops its
 * connections after an error, so the next call starts over; a reply waits at most
 * --redis-timeout.
 * Used for the Idempotency-Key records (api_idem), GET /v1/info (api_info) and the channels'
 * presence and history (api_channels).
 *
 * Threads: any; each thread's wsg_redis_sync lives in thread-specific data, freed with its thread.
 */
#ifndef API_REDIS_H
#define API_REDIS_H

#include <hiredis.h>
#include <stddef.h>
#include <stdint.h>

#include "wsg_metrics.h"
#include "wsg_redis_sync.h"

typedef struct api_redis api_redis;

typedef struct {
  const char *host; /* one node (copied) */
  int port;
  const char *cluster;  /* seeds "h:p,h:p" (copied); NULL or "": one node at host:port */
  const char *user;     /* copied; NULL: AUTH with the password only */
  const char *password; /* copied; NULL: none */
  int db;               /* must be 0 on a cluster */
  const char *prefix;   /* copied */
  uint64_t timeout_ms;
  wsg_metrics *metrics; /* borrowed, must outlive the api_redis; NULL: none */
} api_redis_options;

/* The Redis Cluster series every thread's client updates (wsgate_api_redis_*: redirections, slot
 * map reads, primaries), as the gateway and the processor name them; they stay 0 on one node. */
extern const wsg_metric_table api_redis_metric_table;

/* Checks the options (a bad seed list or a db on a cluster fails here) but does not connect;
 * registers the metric table in o->metrics. */
int api_redis_create(api_redis **out, const api_redis_options *o, char *err, size_t errlen);
void api_redis_destroy(api_redis *r);             /* NULL is a no-op */
const char *api_redis_prefix(const api_redis *r); /* borrowed */

/* The most strings of one command: the largest is a presence DROP (api_channels.c), 5 plus a
 * dead member per member a read returns (WSG_PRESENCE_GWS_MAX). */
#define API_REDIS_ARGS_MAX 264

/* One command of `argc` strings (argv[0] is its name; at most API_REDIS_ARGS_MAX), a pipeline of
 * one. NULL with `why` on a failure or an error reply; the caller frees the reply with
 * freeReplyObject(). */
redisReply *api_redis_command(api_redis *r, char *why, size_t whylen, int argc, const char **argv);

/* Commands [0, n) made by build(), on this thread's wsg_redis_sync (one pipeline per node on a
 * cluster), replies in reps[0 .. n) (the caller frees them; error replies are replies). -1 with
 * `why` on a failure (reps[] NULL-filled; `what` names the commands). */
int api_redis_pipeline(api_redis *r, size_t n, wsg_redis_sync_build_fn build, void *ctx,
                       const char *what, redisReply **reps, char *why, size_t whylen);

/* 0 if the last exchange of any thread worked (or none happened), else -1 and why. */
int api_redis_status(api_redis *r, char *why, size_t whylen);

#endif
