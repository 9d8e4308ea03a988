/*
 * proc_presence: a channel's presence (see proc_presence.h).
 *
 * Threads: the consumer thread.
 */
#include "proc_presence.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "wsg_chkeys.h"
#include "wsg_log.h"
#include "wsg_redis_keys.h"

/* An item pair (<conn id>, <user>|<member>) into e and its member; false if not one. */
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

/* What the members' leases say, one pipelined HGET gw:<id> boot each; owned by the read. */
typedef struct {
  size_t n;
  proc_strref member[WSG_PRESENCE_GWS_MAX]; /* borrowed from the script's reply */
  bool dead[WSG_PRESENCE_GWS_MAX];          /* record gone, of another boot, or not a member */
  char key[WSG_PRESENCE_GWS_MAX][WSG_REDIS_KEY_MAX];
  const char *argv[WSG_PRESENCE_GWS_MAX][3];
  wsgate_redis_cmd cmds[WSG_PRESENCE_GWS_MAX];
} leases;

static int check_leases(proc_redis *r, leases *l, char *err, size_t errlen) {
  size_t nc = 0, at[WSG_PRESENCE_GWS_MAX];
  for (size_t g = 0; g < l->n; g++) {
    char id[WSG_PRESENCE_MEMBER_MAX + 1];
    size_t gl;
    const char *boot;
    l->dead[g] = !wsg_presence_member_split(l->member[g].ptr, l->member[g].len, &gl, &boot);
    if (l->dead[g])
      continue;
    memcpy(id, l->member[g].ptr, gl);
    id[gl] = '\0';
    if (wsg_key_gateway(l->key[nc], sizeof l->key[nc], proc_redis_prefix(r), id) < 0) {
      l->dead[g] = true;
      continue;
    }
    l->argv[nc][0] = "HGET";
    l->argv[nc][1] = l->key[nc];
    l->argv[nc][2] = "boot";
    l->cmds[nc] = (wsgate_redis_cmd){3, l->argv[nc], NULL};
    at[nc++] = g;
  }
  if (nc == 0)
    return 0;
  const wsgate_redis_reply *reps[WSG_PRESENCE_GWS_MAX];
  void *block = NULL;
  if (proc_redis_pipeline(r, l->cmds, nc, reps, &block, err, errlen) != WSGATE_OK)
    return -1;
  for (size_t c = 0; c < nc; c++) {
    const proc_strref *m = &l->member[at[c]];
    l->dead[at[c]] = reps[c]->type != WSGATE_REDIS_STRING || reps[c]->len != WSG_GW_BOOT_LEN ||
                     memcmp(m->ptr + m->len - WSG_GW_BOOT_LEN, reps[c]->str, WSG_GW_BOOT_LEN);
  }
  free(block);
  return 0;
}

/* Whether the entries of member m are to be shown: a member :pc counts whose lease holds (an
 * entry naming another is not trusted: the gateway op's rule, gw_chpresence.c). */
static bool member_live(const leases *l, proc_strref m) {
  for (size_t g = 0; g < l->n; g++)
    if (l->member[g].len == m.len && memcmp(l->member[g].ptr, m.ptr, m.len) == 0)
      return !l->dead[g];
  return false;
}

/* Deletes the hashes and counts of the dead members, best effort: a failure leaves them to the
 * next reader. */
static void drop_dead(proc_redis *r, const char *kp, const char *kc, const leases *l) {
  const char *argv[5 + WSG_PRESENCE_GWS_MAX] = {"EVAL", WSG_LUA_PRESENCE_DROP, "2", kp, kc};
  size_t lens[5 + WSG_PRESENCE_GWS_MAX] = {4, strlen(WSG_LUA_PRESENCE_DROP), 1, strlen(kp),
                                           strlen(kc)};
  int argc = 5;
  for (size_t g = 0; g < l->n; g++)
    if (l->dead[g]) {
      argv[argc] = l->member[g].ptr;
      lens[argc++] = l->member[g].len;
    }
  if (argc == 5)
    return;
  wsgate_redis_cmd c = {argc, argv, lens};
  const wsgate_redis_reply *rep;
  void *block = NULL;
  char err[128];
  proc_redis_pipeline(r, &c, 1, &rep, &block, err, sizeof err);
  free(block);
}

int proc_presence_read(proc_redis *r, const char *channel, size_t len,
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
  leases *l = calloc(1, sizeof *l);
  if (!l) {
    free(rblock);
    return WSGATE_E_NOMEM;
  }
  for (size_t g = 0; g < ngws; g++)
    if (it[2 + 2 * g].type == WSGATE_REDIS_STRING && it[2 + 2 * g].len > 0)
      l->member[l->n++] = (proc_strref){it[2 + 2 * g].str, it[2 + 2 * g].len};
  if (check_leases(r, l, err, errlen) != 0) {
    free(l);
    free(rblock);
    return WSGATE_E_REDIS;
  }
  drop_dead(r, kp, kc, l);
  size_t pairs = (rep->count - 2 - 2 * ngws) / 2;
  /* One block: the reply block's pointer (the entries point into it), then the entries. */
  void **blk = malloc(sizeof(void *) + (pairs ? pairs : 1) * sizeof(wsgate_presence_entry));
  if (!blk) {
    free(l);
    free(rblock);
    return WSGATE_E_NOMEM;
  }
  blk[0] = rblock; /* freed with the entries (see proc_presence_free) */
  wsgate_presence_entry *ents = (wsgate_presence_entry *)(blk + 1);
  size_t live = 0;
  for (size_t i = 0, at = 2 + 2 * ngws; i < pairs; i++, at += 2) {
    proc_strref m;
    if (parse_entry(&it[at], &it[at + 1], &ents[live], &m) && member_live(l, m))
      live++;
  }
  free(l);
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
