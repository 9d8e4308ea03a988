/*
 * gw_regconn: the registry's connection entries (add, remove and its backlog while disconnected,
 * re-registration) and replay reads, in Redis; the loop thread runs it. Their replies are handled
 * by gw_registry.c's on_reply(); the shared state is in gw_registry_priv.h.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gw_registry.h"
#include "gw_registry_priv.h"
#include "wsg_envelope.h"
#include "wsg_log.h"
#include "wsg_redis_cluster.h"
#include "wsg_redis_keys.h"

/* Removals kept while disconnected. Beyond this conn_remove fails (GW_REG_BUSY, counted) and the
 * closed connection's entry stays in Redis: deliveries to it reach this gateway, which drops them
 * as addressed to an unknown connection. */
#define BACKLOG_MAX 65536

static void emit_rereg(void *ctx, const char *user, size_t ulen, uint64_t conn_id) {
  void **c = ctx;
  gw_registry *r = c[0];
  op *o = c[1];
  char key[WSG_REDIS_KEY_MAX], cid[24];
  int klen = wsg_key_user(key, sizeof(key), r->prefix, user, ulen);
  int clen = wsg_conn_id_format(cid, sizeof(cid), conn_id);
  if (klen < 0 || clen < 0 || ulen == 0 || ulen > WSG_MAX_USER_LEN) {
    o->failed++;
    return;
  }
  const char *argv[] = {"HSET", key, cid, r->gw_id};
  size_t lens[] = {4, (size_t)klen, (size_t)clen, strlen(r->gw_id)};
  const char *pexp[] = {"PEXPIRE", key, r->user_ttl_text};
  size_t plens[] = {7, (size_t)klen, strlen(r->user_ttl_text)};
  if (!gw_registry__send_cmd(r, o, 4, argv, lens) || !gw_registry__send_cmd(r, o, 3, pexp, plens))
    o->failed++;
}

/* Writes every live connection's entry again. One HSET per connection, all pipelined at once:
 * bounded by the number of live connections, which max-connections bounds. */
void gw_regconn_reregister(gw_registry *r) {
  r->need_rereg = false;
  if (r->foreach_conn == NULL)
    return;
  op *o = gw_registry__op_new(OP_REREG);
  if (o == NULL) {
    r->need_rereg = true;
    return;
  }
  void *ctx[2] = {r, o};
  r->foreach_conn(r->arg, emit_rereg, ctx);
  if (o->failed > 0)
    WSG_WARN(SUBSYS, "could not queue %" PRIu32 " connection re-registrations", o->failed);
  if (o->sent > 0)
    WSG_INFO(SUBSYS, "re-registering %" PRIu32 " live connections", o->sent);
  if (o->pending == 0)
    free(o);
}

/* --- connections ------------------------------------------------------------------------------ */

bool gw_regconn_send_conn_delete(gw_registry *r, op *o, const char *user, size_t ulen,
                                 uint64_t conn_id) {
  char key[WSG_REDIS_KEY_MAX], cid[24];
  int klen = wsg_key_user(key, sizeof(key), r->prefix, user, ulen);
  int clen = wsg_conn_id_format(cid, sizeof(cid), conn_id);
  if (klen < 0 || clen < 0)
    return false;
  const char *argv[] = {"EVAL", WSG_LUA_CONN_DELETE, "1", key, cid, r->gw_id};
  size_t lens[] = {4, strlen(WSG_LUA_CONN_DELETE), 1, (size_t)klen, (size_t)clen, strlen(r->gw_id)};
  return gw_registry__send_cmd(r, o, 6, argv, lens);
}

void gw_regconn_backlog_flush(gw_registry *r, op *batch) {
  while (r->backlog_head != NULL && wsg_redis_cluster_open(r->conn)) {
    backlog_item *it = r->backlog_head;
    op *o = batch;
    if (o == NULL) {
      o = gw_registry__op_new(OP_CONN_DEL);
      if (o == NULL)
        return;
    }
    bool sent = gw_regconn_send_conn_delete(r, o, it->user, it->ulen, it->conn_id);
    if (batch == NULL) {
      if (!sent) {
        free(o);
        return;
      }
      r->conn_inflight++;
    } else if (!sent) {
      return;
    }
    r->backlog_head = it->next;
    if (r->backlog_head == NULL)
      r->backlog_tail = NULL;
    r->backlog_len--;
    free(it);
  }
}

void gw_regconn_backlog_clear(gw_registry *r) {
  while (r->backlog_head != NULL) {
    backlog_item *it = r->backlog_head;
    r->backlog_head = it->next;
    free(it);
  }
  r->backlog_tail = NULL;
  r->backlog_len = 0;
}

int gw_registry_conn_add(gw_registry *r, const char *user, size_t ulen, uint64_t conn_id,
                         gw_registry_conn_cb cb, void *arg) {
  if (r->release != REL_NONE)
    return GW_REG_RELEASED;
  if (user == NULL || ulen == 0 || ulen > WSG_MAX_USER_LEN)
    return GW_REG_INVALID;
  if (!wsg_redis_cluster_ready(r->conn))
    return GW_REG_NOT_CONNECTED;
  if (r->conn_inflight >= r->max_inflight)
    return GW_REG_BUSY;
  char key[WSG_REDIS_KEY_MAX];
  if (wsg_key_user(key, sizeof(key), r->prefix, user, ulen) < 0)
    return GW_REG_INVALID;
  /* Through WSG_LUA_CONN_ADD (gw_reguser.c): the per-user limit, when set, and the key's TTL. */
  op *o = gw_registry__op_new(OP_CONN_ADD);
  if (o == NULL)
    return GW_REG_NOMEM;
  o->conn_id = conn_id;
  o->ext = gw_reguser_new(user, ulen, conn_id, cb, arg, r->cb_epoch);
  if (o->ext == NULL) {
    free(o);
    return GW_REG_NOMEM;
  }
  if (!gw_reguser_send_add(r, o)) {
    gw_reguser_free(o->ext);
    free(o);
    return GW_REG_NOT_CONNECTED;
  }
  r->conn_inflight++;
  return GW_REG_OK;
}

int gw_registry_replay_read(gw_registry *r, const char *user, size_t ulen, uint64_t conn_id,
                            bool position_only, uint64_t after, const gw_replay_limits *lim,
                            gw_registry_replay_cb cb, void *arg) {
  if (r->release != REL_NONE)
    return GW_REG_RELEASED;
  if (user == NULL || ulen == 0 || ulen > WSG_MAX_USER_LEN || lim == NULL || lim->max_entries == 0)
    return GW_REG_INVALID;
  if (!wsg_redis_cluster_ready(r->conn))
    return GW_REG_NOT_CONNECTED;
  if (r->conn_inflight >= r->max_inflight)
    return GW_REG_BUSY;
  char skey[WSG_REDIS_KEY_MAX], qkey[WSG_REDIS_KEY_MAX];
  int slen = wsg_key_replay(skey, sizeof(skey), r->prefix, user, ulen);
  int qlen = wsg_key_replay_seq(qkey, sizeof(qkey), r->prefix, user, ulen);
  if (slen < 0 || qlen < 0)
    return GW_REG_INVALID;
  char a_after[24] = "", a_n[16], a_bytes[24], a_age[24], a_dist[24];
  if (!position_only)
    snprintf(a_after, sizeof(a_after), "%" PRIu64, after);
  snprintf(a_n, sizeof(a_n), "%" PRIu32, lim->max_entries);
  snprintf(a_bytes, sizeof(a_bytes), "%" PRIu64, lim->max_bytes);
  snprintf(a_age, sizeof(a_age), "%" PRIu64, lim->max_age_ms);
  snprintf(a_dist, sizeof(a_dist), "%" PRIu64, lim->max_distance);
  op *o = gw_registry__op_new(OP_REPLAY);
  if (o == NULL)
    return GW_REG_NOMEM;
  o->conn_id = conn_id;
  o->replay_cb = cb;
  o->position_only = position_only;
  o->arg = arg;
  o->cb_epoch = r->cb_epoch;
  bool sha = r->replay_sha[0] != '\0';
  const char *argv[] = {sha ? "EVALSHA" : "EVAL",
                        sha ? r->replay_sha : WSG_LUA_REPLAY_READ,
                        "2",
                        skey,
                        qkey,
                        a_after,
                        a_n,
                        a_bytes,
                        a_age,
                        a_dist,
                        r->replay_ttl_text};
  size_t lens[11];
  for (int i = 0; i < 11; i++)
    lens[i] = strlen(argv[i]);
  lens[3] = (size_t)slen; /* user ids may hold any byte */
  lens[4] = (size_t)qlen;
  if (!gw_registry__send_single(r, o, 11, argv, lens))
    return GW_REG_NOT_CONNECTED;
  r->conn_inflight++;
  return GW_REG_OK;
}

void gw_registry_cancel_conn_callbacks(gw_registry *r) {
  if (r != NULL)
    r->cb_epoch++;
}

void gw_registry_user_touch(gw_registry *r, const char *user, size_t ulen, bool resumable) {
  char key[WSG_REDIS_KEY_MAX], qkey[WSG_REDIS_KEY_MAX];
  int klen = wsg_key_user(key, sizeof(key), r->prefix, user, ulen);
  int qlen = wsg_key_replay_seq(qkey, sizeof(qkey), r->prefix, user, ulen);
  if (r->release != REL_NONE || klen < 0 || qlen < 0 ||
      !wsg_redis_cluster_key_ready(r->conn, key, (size_t)klen))
    return;
  op *o = gw_registry__op_new(OP_USER_TOUCH);
  if (o == NULL)
    return;
  const char *argv[] = {"PEXPIRE", key, r->user_ttl_text};
  size_t lens[] = {7, (size_t)klen, strlen(r->user_ttl_text)};
  gw_registry__send_cmd(r, o, 3, argv, lens);
  if (resumable) {
    const char *qargv[] = {"EVAL", WSG_LUA_SEQ_TOUCH, "1", qkey, r->replay_ttl_text};
    size_t qlens[] = {4, strlen(WSG_LUA_SEQ_TOUCH), 1, (size_t)qlen, strlen(r->replay_ttl_text)};
    gw_registry__send_cmd(r, o, 5, qargv, qlens);
  }
  if (o->pending == 0)
    free(o);
}

int gw_registry_conn_remove(gw_registry *r, const char *user, size_t ulen, uint64_t conn_id) {
  if (user == NULL || ulen == 0 || ulen > WSG_MAX_USER_LEN)
    return GW_REG_INVALID;
  /* Not capped like conn_add: removals follow closes, which live connections bound. */
  if (wsg_redis_cluster_ready(r->conn)) {
    op *o = gw_registry__op_new(OP_CONN_DEL);
    if (o == NULL)
      return GW_REG_NOMEM;
    if (gw_regconn_send_conn_delete(r, o, user, ulen, conn_id)) {
      r->conn_inflight++;
      return GW_REG_OK;
    }
    free(o);
  }
  /* After a release the gateway's entries are gone or will be recognised as stale by its
   * missing lease: nothing to remember. */
  if (r->release != REL_NONE)
    return GW_REG_OK;
  if (r->backlog_len >= BACKLOG_MAX) {
    count(r->m_backlog_drops);
    return GW_REG_BUSY;
  }
  backlog_item *it = malloc(sizeof(*it) + ulen);
  if (it == NULL)
    return GW_REG_NOMEM;
  it->next = NULL;
  it->conn_id = conn_id;
  it->ulen = ulen;
  memcpy(it->user, user, ulen);
  if (r->backlog_tail != NULL)
    r->backlog_tail->next = it;
  else
    r->backlog_head = it;
  r->backlog_tail = it;
  r->backlog_len++;
  return GW_REG_OK;
}
