/*
 * api_redis: wsgate-api's Redis connections (the only hiredis code of the API): one synchronous
 * connection per thread (wsgate-api runs a thread per HTTP connection), made on first use with
 * AUTH and SELECT, dropped after an error and made again by the next call. Used for the
 * Idempotency-Key records (api_idem) and GET /v1/info (api_info).
 *
 * Threads: any; each thread's connection lives in thread-specific data, freed with its thread.
 */
#ifndef API_REDIS_H
#define API_REDIS_H

#include <hiredis.h>
#include <stddef.h>
#include <stdint.h>

typedef struct api_redis api_redis;

typedef struct {
  const char *host; /* copied */
  int port;
  const char *password; /* copied; NULL: none */
  int db;
  const char *prefix; /* copied */
  uint64_t timeout_ms;
} api_redis_options;

int api_redis_create(api_redis **out, const api_redis_options *o, char *err, size_t errlen);
void api_redis_destroy(api_redis *r);             /* NULL is a no-op */
const char *api_redis_prefix(const api_redis *r); /* borrowed */

/* One command (hiredis' format: %s and %b are single arguments). NULL with `why` on a failure
 * or an error reply; the caller frees the reply with freeReplyObject(). */
redisReply *api_redis_command(api_redis *r, char *why, size_t whylen, const char *fmt, ...);

/* This thread's connection for a pipeline (redisAppendCommand / redisGetReply), or NULL with
 * `why`. After a failed exchange call api_redis_failed(). */
redisContext *api_redis_conn(api_redis *r, char *why, size_t whylen);
void api_redis_failed(api_redis *r, const char *why); /* drops this thread's connection */

/* 0 if the last exchange of any thread worked (or none happened), else -1 and why. */
int api_redis_status(api_redis *r, char *why, size_t whylen);

#endif
