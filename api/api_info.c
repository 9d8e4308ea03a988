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

/* Builds the pipelines: GET of slot key i (gws == NULL), or HGETALL of gateway gws[i]'s record.
 * Each key is its own command, so on a cluster wsg_redis_sync sends each to its slot's node. */
typedef struct {
  const char *prefix;
  redisReply **held; /* the slot keys' replies, for the second pipeline */
  int *gws;          /* slots whose holder's record is read; NULL: the first pipeline */
  char key[512];
  const char *argv[2];
  size_t lens[2];
} info_build;

static bool build_cmd(void *ctx, size_t i, int *argc, const char ***argv, const size_t **lens) {
  info_build *b = ctx;
  if (!b->gws) {
    wsg_key_slot(b->key, sizeof b->key, b->prefix, (uint32_t)i);
    b->argv[0] = "GET";
  } else {
    if (wsg_key_gateway(b->key, sizeof b->key, b->prefix, b->held[b->gws[i]]->str) < 0)
      return false;
    b->argv[0] = "HGETALL";
  }
  b->argv[1] = b->key;
  b->lens[0] = strlen(b->argv[0]);
  b->lens[1] = strlen(b->key);
  *argc = 2;
  *argv = b->argv;
  *lens = b->lens;
  return true;
}

json_t *api_info_read(api_redis *rd, int slots, char *why, size_t whylen) {
  if (slots < 1) {
    snprintf(why, whylen, "the number of gateway slots is not known yet (outbound topic)");
    return NULL;
  }
  const char *prefix = api_redis_prefix(rd);
  char key[512];
  redisReply **held = calloc((size_t)slots, sizeof *held);
  redisReply **recs = calloc((size_t)slots, sizeof *recs);
  int *holders = calloc((size_t)slots, sizeof *holders);
  info_build b = {.prefix = prefix, .held = held};
  json_t *out = NULL;
  int nrec = 0;
  if (!held || !recs || !holders) {
    snprintf(why, whylen, "out of memory");
    goto done;
  }
  if (api_redis_pipeline(rd, (size_t)slots, build_cmd, &b, "GET of the slot keys", held, why,
                         whylen) != 0)
    goto done;
  for (int k = 0; k < slots; k++) {
    if (held[k]->type != REDIS_REPLY_STRING)
      continue;
    if (wsg_key_gateway(key, sizeof key, prefix, held[k]->str) < 0)
      continue;
    holders[nrec++] = k;
  }
  b.gws = holders;
  if (api_redis_pipeline(rd, (size_t)nrec, build_cmd, &b, "HGETALL of the gateway records", recs,
                         why, whylen) != 0) {
    nrec = 0; /* recs[] is NULL-filled */
    goto done;
  }
  out = json_object();
  json_t *gws = json_array();
  long long total = 0;
  for (int i = 0; i < nrec; i++) {
    int k = holders[i];
    redisReply *h = recs[i];
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
  free(holders);
  return out;
}
