/*
 * gw_reguser: the per-user connection limit at registration (--max-conns-per-user, issue 16
 * item 5), kept in Redis so it holds across gateways: the user's entry hash `user:<u>` (conn ->
 * gateway) already lists every live connection, so its length is the count, and no other key is
 * needed. WSG_LUA_CONN_ADD adds the entry only while the hash holds fewer; over the limit it
 * returns the entries' gateways, and entries of gateways whose lease is gone (killed, never
 * removed their entries) are pruned (WSG_LUA_CONN_PRUNE) before the add is tried once more. So
 * a gateway that died does not lock its users out, and the count cleans itself.
 *
 * The add also sets the key's TTL (GW_REG_USER_TTL_MS, gw_registry.h), with or without a limit.
 *
 * Steps, each an op of gw_registry.c's: OP_CONN_ADD (the script) -> over the limit,
 * OP_USER_GWS (EXISTS gw:<id> of each other gateway named) -> some dead, OP_USER_PRUNE -> some
 * pruned, OP_CONN_ADD again (no second prune) -> the caller's callback with GW_REG_OK or
 * GW_REG_USER_LIMIT. The connection counts once in conn_inflight all along.
 *
 * Threads: the loop thread only.
 */
#include <hiredis/hiredis.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gw_registry_priv.h"
#include "wsg_envelope.h"
#include "wsg_log.h"

/* Other gateways checked per refusal: a user's connections sit on a few gateways; past this
 * many distinct ones the rest are taken as alive (refused, never wrongly pruned). */
#define MAX_GWS 16

struct gw_reguser {
  gw_registry_conn_cb cb;
  void *arg;
  uint32_t cb_epoch;
  uint64_t conn_id;
  bool retried;
  uint32_t ngws;
  char *gws[MAX_GWS];
  bool dead[MAX_GWS];
  size_t ulen;
  char user[]; /* ulen bytes and a NUL */
};

gw_reguser *gw_reguser_new(const char *user, size_t ulen, uint64_t conn_id, gw_registry_conn_cb cb,
                           void *arg, uint32_t cb_epoch) {
  gw_reguser *u = calloc(1, sizeof(*u) + ulen + 1);
  if (u == NULL)
    return NULL;
  u->cb = cb;
  u->arg = arg;
  u->cb_epoch = cb_epoch;
  u->conn_id = conn_id;
  u->ulen = ulen;
  memcpy(u->user, user, ulen);
  return u;
}

void gw_reguser_free(gw_reguser *u) {
  if (u == NULL)
    return;
  for (uint32_t i = 0; i < u->ngws; i++)
    free(u->gws[i]);
  free(u);
}

/* A new op of `kind` carrying u. */
static op *op_with(op_kind kind, gw_reguser *u) {
  op *o = gw_registry__op_new(kind);
  if (o != NULL) {
    o->conn_id = u->conn_id;
    o->ext = u;
  }
  return o;
}

bool gw_reguser_send_add(gw_registry *r, op *o) {
  gw_reguser *u = o->ext;
  char key[WSG_REDIS_KEY_MAX], cid[24];
  int klen = wsg_key_user(key, sizeof(key), r->prefix, u->user, u->ulen);
  int clen = wsg_conn_id_format(cid, sizeof(cid), u->conn_id);
  if (klen < 0 || clen < 0)
    return false;
  const char *argv[] = {
      "EVAL", WSG_LUA_CONN_ADD, "1", key, cid, r->gw_id, r->user_limit_text, r->user_ttl_text};
  size_t lens[8];
  for (int i = 0; i < 8; i++)
    lens[i] = strlen(argv[i]);
  lens[3] = (size_t)klen; /* user ids may hold any byte */
  return gw_registry__send_cmd(r, o, 8, argv, lens);
}

/* The end of a registration: the callback, once, and the in-flight count. u: taken. */
static void finish(gw_registry *r, gw_reguser *u, int status) {
  r->conn_inflight--;
  if (status == GW_REG_USER_LIMIT)
    count(r->m_user_limit);
  if (u->cb != NULL && !r->doomed && u->cb_epoch == r->cb_epoch)
    u->cb(u->arg, u->conn_id, status);
  gw_reguser_free(u);
}

/* Sends o (built by the caller) or, failing that, ends the registration with `status`. */
static void send_or_finish(gw_registry *r, op *o, bool sent, int status) {
  if (sent)
    return;
  gw_reguser *u = o->ext;
  o->ext = NULL;
  if (o->pending == 0)
    free(o);
  finish(r, u, status);
}

static void start_prune(gw_registry *r, gw_reguser *u) {
  const char *argv[4 + MAX_GWS]; /* EVAL, script, 1, key, then the dead gateways */
  size_t lens[4 + MAX_GWS];
  char key[WSG_REDIS_KEY_MAX];
  int klen = wsg_key_user(key, sizeof(key), r->prefix, u->user, u->ulen);
  int argc = 0;
  argv[argc] = "EVAL", lens[argc++] = 4;
  argv[argc] = WSG_LUA_CONN_PRUNE, lens[argc++] = strlen(WSG_LUA_CONN_PRUNE);
  argv[argc] = "1", lens[argc++] = 1;
  argv[argc] = key, lens[argc++] = (size_t)(klen > 0 ? klen : 0);
  for (uint32_t i = 0; i < u->ngws; i++)
    if (u->dead[i])
      argv[argc] = u->gws[i], lens[argc++] = strlen(u->gws[i]);
  op *o = op_with(OP_USER_PRUNE, u);
  if (o == NULL) {
    finish(r, u, GW_REG_NOMEM);
    return;
  }
  send_or_finish(r, o, klen > 0 && gw_registry__send_cmd(r, o, argc, argv, lens),
                 GW_REG_NOT_CONNECTED);
}

bool gw_reguser_over_limit(gw_registry *r, op *o, const redisReply *rep) {
  gw_reguser *u = o->ext;
  if (u == NULL || u->retried)
    return false;
  /* The distinct other gateways the user's entries name. */
  for (size_t i = 0; i < rep->elements && u->ngws < MAX_GWS; i++) {
    const redisReply *e = rep->element[i];
    if (e->type != REDIS_REPLY_STRING || e->len == 0 || e->len > WSG_MAX_GATEWAY_LEN ||
        strcmp(e->str, r->gw_id) == 0)
      continue;
    bool seen = false;
    for (uint32_t k = 0; k < u->ngws && !seen; k++)
      seen = strcmp(u->gws[k], e->str) == 0;
    if (!seen && (u->gws[u->ngws] = strdup(e->str)) != NULL)
      u->ngws++;
  }
  if (u->ngws == 0)
    return false; /* all on this gateway, which is alive */
  op *q = op_with(OP_USER_GWS, u);
  if (q == NULL)
    return false;
  o->ext = NULL; /* u moves to q */
  bool sent = true;
  for (uint32_t i = 0; i < u->ngws && sent; i++) {
    char key[WSG_REDIS_KEY_MAX];
    int klen = wsg_key_gateway(key, sizeof(key), r->prefix, u->gws[i]);
    const char *argv[] = {"EXISTS", key};
    size_t lens[] = {6, (size_t)(klen > 0 ? klen : 0)};
    sent = klen > 0 && gw_registry__send_cmd(r, q, 2, argv, lens);
  }
  if (!sent && q->pending > 0) {
    q->failed++; /* the replies already due end it (on_reply sees failed) */
    return true;
  }
  send_or_finish(r, q, sent, GW_REG_NOT_CONNECTED);
  return true;
}

void gw_reguser_on_reply(gw_registry *r, op *o, const redisReply *rep) {
  gw_reguser *u = o->ext;
  if (u == NULL)
    return;
  if (o->kind == OP_USER_GWS) {
    uint32_t i = o->sent - o->pending - 1; /* replies come in order */
    if (rep != NULL && rep->type == REDIS_REPLY_INTEGER && rep->integer == 0 && i < u->ngws)
      u->dead[i] = true;
    if (o->pending > 0)
      return;
    o->ext = NULL;
    bool any = false;
    for (uint32_t k = 0; k < u->ngws; k++)
      any |= u->dead[k];
    if (o->failed > 0)
      finish(r, u, rep == NULL ? GW_REG_LOST : GW_REG_REPLY);
    else if (!any)
      finish(r, u, GW_REG_USER_LIMIT);
    else
      start_prune(r, u);
    return;
  }
  /* OP_USER_PRUNE: try the add once more if something was removed. */
  o->ext = NULL;
  if (rep == NULL || rep->type != REDIS_REPLY_INTEGER) {
    finish(r, u, rep == NULL ? GW_REG_LOST : GW_REG_REPLY);
    return;
  }
  if (rep->integer <= 0) {
    finish(r, u, GW_REG_USER_LIMIT);
    return;
  }
  count(r->m_user_pruned);
  WSG_INFO(SUBSYS, "removed %lld entries of user %s left by gateways whose lease is gone",
           (long long)rep->integer, u->user);
  u->retried = true;
  op *a = op_with(OP_CONN_ADD, u);
  if (a == NULL) {
    finish(r, u, GW_REG_NOMEM);
    return;
  }
  send_or_finish(r, a, gw_reguser_send_add(r, a), GW_REG_NOT_CONNECTED);
}

void gw_reguser_finish_add(gw_registry *r, op *o, int status) {
  gw_reguser *u = o->ext;
  o->ext = NULL;
  if (u != NULL)
    finish(r, u, status);
}
