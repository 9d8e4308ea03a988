/*
 * proc_presence: a channel's presence (see proc_presence.h).
 *
 * Threads: the consumer thread.
 */
#include "proc_presence.h"

#include <stdlib.h>
#include <string.h>

#include "wsg_chkeys.h"
#include "wsg_log.h"
#include "wsg_redis_keys.h"
#include "wsg_time.h"

/* A field <conn id> and value <user>|<gw id> into an entry and its gateway; false if not one. */
static bool parse_entry(const wsgate_redis_reply *f, const wsgate_redis_reply *v,
                        wsgate_presence_entry *e, proc_strref *gw) {
  if (f->type != WSGATE_REDIS_STRING || v->type != WSGATE_REDIS_STRING || f->len == 0 ||
      f->len > 20)
    return false;
  uint64_t conn = 0;
  for (size_t i = 0; i < f->len; i++) {
    if (f->str[i] < '0' || f->str[i] > '9')
      return false;
    conn = conn * 10 + (uint64_t)(f->str[i] - '0');
  }
  const char *bar = NULL;
  for (size_t i = v->len; i > 0; i--)
    if (v->str[i - 1] == '|') {
      bar = v->str + i - 1;
      break;
    }
  if (!bar || bar == v->str || (size_t)(v->str + v->len - bar - 1) == 0)
    return false;
  e->conn = conn;
  e->user = v->str;
  e->user_len = (size_t)(bar - v->str);
  *gw = (proc_strref){bar + 1, (size_t)(v->str + v->len - bar - 1)};
  return true;
}

/* Removes dead entries, best effort: a failure leaves them for the next reader. */
static void remove_dead(proc_redis *r, const char *key, const wsgate_redis_reply *fields,
                        const bool *dead, size_t n) {
  size_t k = 0;
  for (size_t i = 0; i < n; i++)
    k += dead[i];
  if (k == 0)
    return;
  const char **argv = malloc((k + 2) * sizeof *argv);
  size_t *lens = malloc((k + 2) * sizeof *lens);
  if (argv && lens) {
    argv[0] = "HDEL";
    lens[0] = 4;
    argv[1] = key;
    lens[1] = strlen(key);
    size_t a = 2;
    for (size_t i = 0; i < n; i++)
      if (dead[i]) {
        argv[a] = fields[2 * i].str;
        lens[a++] = fields[2 * i].len;
      }
    wsgate_redis_cmd c = {(int)a, argv, lens};
    const wsgate_redis_reply *rep;
    void *block = NULL;
    char err[128];
    proc_redis_pipeline(r, &c, 1, &rep, &block, err, sizeof err);
    free(block);
  }
  free(argv);
  free(lens);
}

int proc_presence_read(proc_redis *r, proc_routes *rt, const char *channel, size_t len,
                       const wsgate_presence_entry **out, size_t *n, void **block, char *err,
                       size_t errlen) {
  *out = NULL;
  *n = 0;
  *block = NULL;
  char key[WSG_REDIS_KEY_MAX];
  if (wsg_key_channel(key, sizeof key, proc_redis_prefix(r), channel, len, "p") < 0)
    return WSGATE_E_INVAL;
  const char *argv[] = {"HGETALL", key};
  wsgate_redis_cmd c = {2, argv, NULL};
  const wsgate_redis_reply *rep;
  void *rblock = NULL;
  int rc = proc_redis_pipeline(r, &c, 1, &rep, &rblock, err, errlen);
  if (rc != WSGATE_OK)
    return rc;
  size_t pairs = rep->type == WSGATE_REDIS_ARRAY ? rep->count / 2 : 0;
  /* One block: the entries, then the reply block's pointer (kept alive with them), then the
   * gateway refs and dead flags (scratch). */
  size_t head = (pairs ? pairs : 1) * sizeof(wsgate_presence_entry);
  head = (head + sizeof(void *) - 1) / sizeof(void *) * sizeof(void *);
  void **blk = malloc(sizeof(void *) + head);
  proc_strref *gws = malloc((pairs ? pairs : 1) * sizeof *gws);
  bool *dead = calloc(pairs ? pairs : 1, sizeof *dead);
  if (!blk || !gws || !dead) {
    free(blk);
    free(gws);
    free(dead);
    free(rblock);
    return WSGATE_E_NOMEM;
  }
  blk[0] = rblock; /* freed with the entries: they point into it (see proc_presence_free) */
  wsgate_presence_entry *ents = (wsgate_presence_entry *)(blk + 1);
  size_t k = 0;
  for (size_t i = 0; i < pairs; i++)
    if (parse_entry(&rep->items[2 * i], &rep->items[2 * i + 1], &ents[k], &gws[k]))
      k++;
  rc = proc_redis_gateways(r, gws, k, wsg_now_mono_ms(), rt, err, errlen) == 0 ? WSGATE_OK
                                                                               : WSGATE_E_REDIS;
  size_t live = 0;
  for (size_t i = 0; rc == WSGATE_OK && i < k; i++) {
    int32_t slot = -2;
    for (size_t g = 0; g < rt->ngws; g++)
      if (rt->gws[g].len == gws[i].len && memcmp(rt->gws[g].id, gws[i].ptr, gws[i].len) == 0) {
        slot = rt->gws[g].slot;
        break;
      }
    if (slot == -1)
      dead[i] = true;
    else
      ents[live++] = ents[i];
  }
  /* dead[] indexes parsed entries; map them back to the reply's fields for HDEL. */
  if (rc == WSGATE_OK && live < k) {
    bool *dead_fields = calloc(pairs ? pairs : 1, sizeof *dead_fields);
    if (dead_fields) {
      size_t j = 0;
      for (size_t i = 0; i < pairs && j < k; i++) {
        wsgate_presence_entry e;
        proc_strref g;
        if (parse_entry(&rep->items[2 * i], &rep->items[2 * i + 1], &e, &g))
          dead_fields[i] = dead[j++];
      }
      remove_dead(r, key, rep->items, dead_fields, pairs);
      free(dead_fields);
    }
  }
  free(gws);
  free(dead);
  if (rc != WSGATE_OK) {
    free(rblock);
    free(blk);
    return rc;
  }
  *out = ents;
  *n = live;
  *block = blk;
  return WSGATE_OK;
}

void proc_presence_free(void *block) {
  if (!block)
    return;
  free(((void **)block)[0]);
  free(block);
}
