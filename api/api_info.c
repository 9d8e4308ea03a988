/*
 * api_info: the cluster's gateways from Redis (see api_info.h).
 *
 * Threads: any.
 */
#include "api_info.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "wsg_redis_keys.h"

/* Reads `n` pipelined replies into r[]; false (connection dropped) on a failure. */
static bool read_replies(api_redis *rd, redisContext *c, redisReply **r, int n, char *why,
                         size_t whylen) {
  for (int i = 0; i < n; i++) {
    void *rep = NULL;
    if (redisGetReply(c, &rep) != REDIS_OK) {
      snprintf(why, whylen, "%s", c->errstr);
      api_redis_failed(rd, why);
      return false;
    }
    r[i] = rep;
  }
  return true;
}

json_t *api_info_read(api_redis *rd, int slots, char *why, size_t whylen) {
  if (slots < 1) {
    snprintf(why, whylen, "the number of gateway slots is not known yet (outbound topic)");
    return NULL;
  }
  redisContext *c = api_redis_conn(rd, why, whylen);
  if (!c)
    return NULL;
  const char *prefix = api_redis_prefix(rd);
  char key[512];
  for (int k = 0; k < slots; k++) {
    wsg_key_slot(key, sizeof key, prefix, (uint32_t)k);
    redisAppendCommand(c, "GET %s", key);
  }
  redisReply **held = calloc((size_t)slots, sizeof *held);
  redisReply **recs = calloc((size_t)slots, sizeof *recs);
  json_t *out = NULL;
  int nrec = 0;
  if (!held || !recs) {
    snprintf(why, whylen, "out of memory");
    goto done;
  }
  if (!read_replies(rd, c, held, slots, why, whylen))
    goto done;
  for (int k = 0; k < slots; k++) {
    if (held[k]->type != REDIS_REPLY_STRING)
      continue;
    if (wsg_key_gateway(key, sizeof key, prefix, held[k]->str) < 0)
      continue;
    redisAppendCommand(c, "HGETALL %s", key);
    nrec++;
  }
  if (!read_replies(rd, c, recs, nrec, why, whylen))
    goto done;
  out = json_object();
  json_t *gws = json_array();
  long long total = 0;
  for (int k = 0, i = 0; k < slots; k++) {
    if (held[k]->type != REDIS_REPLY_STRING)
      continue;
    if (wsg_key_gateway(key, sizeof key, prefix, held[k]->str) < 0)
      continue;
    redisReply *h = recs[i++];
    json_t *g = json_pack("{s:s,s:i}", "id", held[k]->str, "slot", k);
    for (size_t f = 0; h->type == REDIS_REPLY_ARRAY && f + 1 < h->elements; f += 2) {
      const char *name = h->element[f]->str, *val = h->element[f + 1]->str;
      if (!name || !val)
        continue;
      if (strcmp(name, "conns") == 0) {
        long long n = atoll(val);
        total += n;
        json_object_set_new(g, "conns", json_integer(n));
      } else if (strcmp(name, "addr") == 0 || strcmp(name, "started") == 0 ||
                 strcmp(name, "version") == 0) {
        json_object_set_new(g, name, json_string(val));
      }
    }
    json_array_append_new(gws, g);
  }
  json_object_set_new(out, "slots", json_integer(slots));
  json_object_set_new(out, "slots_held", json_integer((json_int_t)json_array_size(gws)));
  json_object_set_new(out, "connections", json_integer(total));
  json_object_set_new(out, "gateways", gws);
done:
  for (int k = 0; held && k < slots; k++)
    freeReplyObject(held[k]);
  for (int i = 0; recs && i < nrec; i++)
    freeReplyObject(recs[i]);
  free(held);
  free(recs);
  return out;
}
