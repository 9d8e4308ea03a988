/*
 * proc_presence: a channel's presence (see proc_presence.h).
 *
 * Threads: the consumer thread.
 */
#include "proc_presence.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "wsg_chkeys.h"
#include "wsg_log.h"
#include "wsg_redis_keys.h"
#include "wsg_time.h"

/* An item pair (<conn id>, <user>|<gw id>) into e and its gateway; false if not one. */
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
  if (!wsg_presence_split(v->str, v->len, &e->user_len, &gw->ptr, &gw->len))
    return false;
  e->conn = conn;
  e->user = v->str;
  return true;
}

/* The slot proc_redis_gateways() found for gateway g: -1 lease gone, -3 not among them. */
static int32_t slot_of(const proc_routes *rt, proc_strref g) {
  for (size_t i = 0; i < rt->ngws; i++)
    if (rt->gws[i].len == g.len && memcmp(rt->gws[i].id, g.ptr, g.len) == 0)
      return rt->gws[i].slot;
  return -3;
}

/* Deletes the entries and counts of the gateways whose lease is gone, best effort: a failure
 * leaves them to the next reader. */
static void drop_dead(proc_redis *r, const char *kp, const char *kc, const proc_routes *rt) {
  const char *argv[3 + 2 + WSG_PRESENCE_GWS_MAX];
  int argc = 0;
  argv[argc++] = "EVAL";
  argv[argc++] = WSG_LUA_PRESENCE_DROP;
  argv[argc++] = "2";
  argv[argc++] = kp;
  argv[argc++] = kc;
  for (size_t i = 0; i < rt->ngws && argc < (int)(sizeof argv / sizeof argv[0]); i++)
    if (rt->gws[i].slot == -1)
      argv[argc++] = rt->gws[i].id;
  if (argc == 5)
    return;
  wsgate_redis_cmd c = {argc, argv, NULL};
  const wsgate_redis_reply *rep;
  void *block = NULL;
  char err[128];
  proc_redis_pipeline(r, &c, 1, &rep, &block, err, sizeof err);
  free(block);
}

int proc_presence_read(proc_redis *r, proc_routes *rt, const char *channel, size_t len,
                       const wsgate_presence_entry **out, size_t *n, void **block, char *err,
                       size_t errlen) {
  *out = NULL;
  *n = 0;
  *block = NULL;
  const char *prefix = proc_redis_prefix(r);
  char kp[WSG_REDIS_KEY_MAX], kc[WSG_REDIS_KEY_MAX], cap[16];
  if (wsg_key_channel(kp, sizeof kp, prefix, channel, len, "p") < 0 ||
      wsg_key_channel(kc, sizeof kc, prefix, channel, len, "pc") < 0)
    return WSGATE_E_INVAL;
  snprintf(cap, sizeof cap, "%u", (unsigned)PROC_PRESENCE_MAX);
  const char *argv[] = {"EVAL", WSG_LUA_PRESENCE_READ, "2", kp, kc, cap, cap, "e"};
  wsgate_redis_cmd c = {8, argv, NULL};
  const wsgate_redis_reply *rep;
  void *rblock = NULL;
  int rc = proc_redis_pipeline(r, &c, 1, &rep, &rblock, err, errlen);
  if (rc != WSGATE_OK)
    return rc;
  const wsgate_redis_reply *it = rep->items;
  size_t ngws = rep->type == WSGATE_REDIS_ARRAY && rep->count >= 2 &&
                        it[1].type == WSGATE_REDIS_INTEGER && it[1].integer >= 0
                    ? (size_t)it[1].integer
                    : SIZE_MAX;
  if (ngws > WSG_PRESENCE_GWS_MAX || rep->count < 2 + 2 * ngws ||
      (rep->count - 2 - 2 * ngws) % 2 != 0) {
    snprintf(err, errlen, "the presence script of %s answered something unexpected", kp);
    free(rblock);
    return WSGATE_E_REDIS;
  }
  /* Only the gateways :pc counts are asked about: an entry naming another is not trusted (the
   * gateway op's rule, gw_chpresence.c). */
  proc_strref ids[WSG_PRESENCE_GWS_MAX];
  size_t nids = 0;
  for (size_t g = 0; g < ngws; g++)
    if (it[2 + 2 * g].type == WSGATE_REDIS_STRING && it[2 + 2 * g].len > 0)
      ids[nids++] = (proc_strref){it[2 + 2 * g].str, it[2 + 2 * g].len};
  if (proc_redis_gateways(r, ids, nids, wsg_now_mono_ms(), rt, err, errlen) != 0) {
    free(rblock);
    return WSGATE_E_REDIS;
  }
  drop_dead(r, kp, kc, rt);
  size_t pairs = (rep->count - 2 - 2 * ngws) / 2;
  /* One block: the reply block's pointer (the entries point into it), then the entries. */
  void **blk = malloc(sizeof(void *) + (pairs ? pairs : 1) * sizeof(wsgate_presence_entry));
  if (!blk) {
    free(rblock);
    return WSGATE_E_NOMEM;
  }
  blk[0] = rblock; /* freed with the entries (see proc_presence_free) */
  wsgate_presence_entry *ents = (wsgate_presence_entry *)(blk + 1);
  size_t live = 0;
  for (size_t i = 0, at = 2 + 2 * ngws; i < pairs; i++, at += 2) {
    proc_strref gw;
    if (!parse_entry(&it[at], &it[at + 1], &ents[live], &gw))
      continue;
    int32_t slot = slot_of(rt, gw);
    live += slot != -1 && slot != -3;
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
