/*
 * proc_redis_reply: handler pipelines' hiredis replies as wsgate_redis_reply views in one block
 * (proc_redis_reply.h).
 *
 * Threads: any (pure).
 */
#include "proc_redis_reply.h"

#include <hiredis/hiredis.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "wsg_err.h"

/* Nodes and string bytes a converted reply needs. */
static void measure(const redisReply *rep, size_t *nodes, size_t *bytes) {
  (*nodes)++;
  switch (rep->type) {
  case REDIS_REPLY_STRING:
  case REDIS_REPLY_STATUS:
  case REDIS_REPLY_ERROR:
    *bytes += rep->len + 1;
    break;
  case REDIS_REPLY_ARRAY:
    for (size_t i = 0; i < rep->elements; i++)
      if (rep->element[i])
        measure(rep->element[i], nodes, bytes);
      else
        (*nodes)++;
    break;
  default:
    break;
  }
}

typedef struct {
  wsgate_redis_reply *nodes; /* next free node */
  char *bytes;               /* next free byte */
} convert_pool;

static void convert(const redisReply *rep, wsgate_redis_reply *dst, convert_pool *pool) {
  memset(dst, 0, sizeof(*dst));
  if (!rep) {
    dst->type = WSGATE_REDIS_NIL;
    return;
  }
  switch (rep->type) {
  case REDIS_REPLY_INTEGER:
    dst->type = WSGATE_REDIS_INTEGER;
    dst->integer = rep->integer;
    break;
  case REDIS_REPLY_STRING:
  case REDIS_REPLY_STATUS:
  case REDIS_REPLY_ERROR:
    dst->type = rep->type == REDIS_REPLY_STRING   ? WSGATE_REDIS_STRING
                : rep->type == REDIS_REPLY_STATUS ? WSGATE_REDIS_STATUS
                                                  : WSGATE_REDIS_ERROR;
    memcpy(pool->bytes, rep->str, rep->len);
    pool->bytes[rep->len] = '\0';
    dst->str = pool->bytes;
    dst->len = rep->len;
    pool->bytes += rep->len + 1;
    break;
  case REDIS_REPLY_ARRAY: {
    dst->type = WSGATE_REDIS_ARRAY;
    dst->count = rep->elements;
    wsgate_redis_reply *items = pool->nodes;
    pool->nodes += rep->elements;
    dst->items = items;
    for (size_t i = 0; i < rep->elements; i++)
      convert(rep->element[i], &items[i], pool);
    break;
  }
  default:
    dst->type = WSGATE_REDIS_NIL;
  }
}

int proc_redis_reply_convert(const redisReply *const *reps, size_t n,
                             const wsgate_redis_reply **replies, void **block, char *err,
                             size_t errlen) {
  *block = NULL;
  size_t nodes = 0, bytes = 0;
  for (size_t i = 0; i < n; i++)
    if (reps[i])
      measure(reps[i], &nodes, &bytes);
    else
      nodes++;
  /* Top-level replies first, so replies[i] = &base[i]; nested items follow, then the strings. */
  size_t node_bytes = nodes * sizeof(wsgate_redis_reply);
  uint8_t *mem = malloc(node_bytes + bytes + 1);
  if (!mem) {
    wsg_err_set(err, errlen, "out of memory for %zu reply bytes", node_bytes + bytes);
    return WSGATE_E_NOMEM;
  }
  wsgate_redis_reply *base = (wsgate_redis_reply *)mem;
  convert_pool pool = {.nodes = base + n, .bytes = (char *)mem + node_bytes};
  for (size_t i = 0; i < n; i++) {
    convert(reps[i], &base[i], &pool);
    replies[i] = &base[i];
  }
  *block = mem;
  return WSGATE_OK;
}
