/*
 * gw_chserve: the WebSocket server's channel layer: answers clients' subscribe / unsubscribe ops
 * (gw_chops), keeps the local index (gw_channels) and tells Redis which channels have subscribers
 * here (gw_chreg). A connection's subscriptions end with it.
 *
 * Threads: the loop thread only.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gw_chperm.h"
#include "gw_session.h"
#include "wsg_time.h"

static void update_gauges(gw_server *s) {
  wsg_gauge_set(s->m_channels, (int64_t)gw_channels_count(s->channels));
  wsg_gauge_set(s->m_chsubs, (int64_t)gw_channels_subs(s->channels));
  wsg_gauge_set(s->m_chbytes, (int64_t)gw_channels_bytes(s->channels));
}

int gw_chserve_init(gw_server *s, char *err, size_t errlen) {
  if (wsg_chns_resolve(&s->cfg->channels, &s->chns, err, errlen) != 0)
    return -1;
  gw_channels_limits lim = {(uint32_t)s->cfg->channel_max_per_conn, (uint64_t)s->cfg->channel_max,
                            gw_chpub_pos_free, s};
  s->channels = gw_channels_create(&lim);
  if (!s->channels || gw_chpend_init(s) != 0 || gw_chtail_init(s) != 0) {
    snprintf(err, errlen, "out of memory");
    return -1;
  }
  gw_chreg_options co = {
      .host = s->cfg->redis.host,
      .port = (int)s->cfg->redis.port,
      .password = s->cfg->redis.password,
      .user = s->cfg->redis.user,
      .cluster = s->cfg->redis.cluster,
      .db = (int)s->cfg->redis.db,
      .prefix = s->cfg->redis.prefix,
      .gw_id = s->cfg->gateway_id,
      .boot = s->cfg->gateway_boot,
      .timeout_ms = s->cfg->redis.timeout_ms,
      .key_ttl_ms = s->cfg->channel_key_ttl_ms,
      .resync = gw_chresync_start,
      .arg = s,
  };
  /* The resync first: the registry calls it once connected. */
  if (gw_chresync_init(s, err, errlen) != 0 ||
      gw_chreg_create(&s->chreg, s->o.loop, &co, s->o.metrics, err, errlen) != 0 ||
      gw_chrenew_init(s, err, errlen) != 0)
    return -1;
  if (gw_chjlserve_init(s, err, errlen) != 0)
    return -1;
  return gw_chpresq_init(s, err, errlen);
}

void gw_chserve_finish(gw_server *s) {
  gw_chreg_destroy(s->chreg); /* first: recoveries' reads and presence queries end with it */
  s->chreg = NULL;
  gw_chrenew_finish(s);
  gw_chpresq_finish(s);
  gw_chresync_finish(s);
  gw_chjlserve_finish(s);
  gw_chrecover_finish(s);
  gw_chpend_finish(s);
  gw_channels_destroy(s->channels);
  s->channels = NULL;
  gw_chtail_finish(s); /* after the index: freeing a channel unlinks it from the queue */
  wsg_chns_destroy(s->chns);
  s->chns = NULL;
}

/* This gateway's subscriptions of a presence channel into its :pc field; `leaving` of them are
 * about to go (a connection that ends is still in the index). */
static void presence_count(gw_server *s, const char *name, size_t len, size_t leaving) {
  gw_channel *ch = gw_channels_find(s->channels, name, len);
  size_t n = ch ? gw_channel_nsubs(ch) : 0;
  gw_chreg_presence_count(s->chreg, name, len, n > leaving ? n - leaving : 0);
}

/* What a new or ended subscription tells others, whoever made it (the client, the handler's
 * decision, wsgate_subscribe): its presence entry, this gateway's count, a join/leave event. */
static void membership_changed(gw_server *s, gw_session *ss, const char *name, size_t len,
                               bool joined) {
  if (wsg_chns_of(s->chns, name, len)->presence) {
    /* Joining, the count first: a crash between the two leaves no hash that :pc does not name. */
    if (joined)
      presence_count(s, name, len, 0);
    gw_chreg_presence(s->chreg, name, len, ss->conn_id, joined ? ss->user->id : NULL, joined);
    if (!joined)
      presence_count(s, name, len, 0);
  }
  gw_chjlserve_local(s, ss, name, len, joined);
}

/* Adds the subscription, after whatever permission check the caller made: the local index, the
 * gateway set in Redis when the channel is new here, presence, join/leave, and a recovery from
 * `since`, also for a channel the connection already holds (the handler may have subscribed it at
 * connect). The one path of every subscribe: client ops, handler decisions, server ops. A new
 * subscription to a channel whose position is unknown here is answered once Redis gives it
 * (gw_chrecover), so that every "subscribed" carries the position it starts after. */
int gw__chserve_join(gw_server *s, gw_session *ss, const gw_chop *op) {
  bool created;
  gw_chsub *held = gw_channels_sub_of(ss->subs, op->channel, op->channel_len);
  int rc = gw_channels_subscribe(s->channels, &ss->subs, ss->conn_id, op->channel, op->channel_len,
                                 op->msgpack ? GW_CHSUB_MSGPACK : 0, &created);
  if (rc != GW_CHOP_OK)
    return rc;
  if (created)
    gw_chrenew_wake(s);
  if (created || gw_chresync_due(s, op->channel, op->channel_len))
    gw_chreg_update(s->chreg, op->channel, op->channel_len, true);
  if (!held)
    membership_changed(s, ss, op->channel, op->channel_len, true);
  if (op->has_since) {
    gw_chsub *sub = gw_channels_sub_of(ss->subs, op->channel, op->channel_len);
    if (held && (gw_chsub_flags(held) & GW_CHSUB_RECOVERING))
      gw_chrecover_cancel(s, ss, op->channel, op->channel_len);
    /* Frames follow the format of the op that asked for them. */
    gw_chsub_set_flags(sub, (uint8_t)((gw_chsub_flags(sub) & ~GW_CHSUB_MSGPACK) |
                                      (op->msgpack ? GW_CHSUB_MSGPACK : 0)));
    /* Answered by the recovery, once the history says whether it covers the gap. */
    gw_chrecover_start(s, ss, sub, op);
    return GW_CHOP_RECOVERING;
  }
  if (!held) {
    gw_chsub *sub = gw_channels_sub_of(ss->subs, op->channel, op->channel_len);
    const gw_chpos *pos = gw_channel_pos(gw_chsub_channel(sub));
    if (pos->epoch == 0 && pos->next == 0) { /* unknown here (gw_chpos) */
      gw_chrecover_start(s, ss, sub, op);
      return GW_CHOP_RECOVERING;
    }
  }
  return GW_CHOP_OK;
}

/* Removes the subscription; false when there was none. */
static bool leave(gw_server *s, gw_session *ss, const gw_chop *op) {
  bool emptied = false;
  bool was =
      gw_channels_unsubscribe(s->channels, &ss->subs, op->channel, op->channel_len, &emptied);
  if (was)
    membership_changed(s, ss, op->channel, op->channel_len, false);
  if (emptied)
    gw_chreg_update(s->chreg, op->channel, op->channel_len, false);
  return was;
}

/* Closes ss when the answer cannot be made (out of memory). */
void gw__chserve_answer(gw_server *s, gw_session *ss, const gw_chop *op, int rc,
                        const char *message, uint64_t now_ms) {
  uint8_t out[GW_CHOP_ANSWER_MAX];
  /* A live subscription's answer says where its stream is: the channel's next offset here, or
   * past what a recovery gave it; epoch 0 offset 0 when known empty. Unknown (a recovery
   * running): none. */
  gw_chsub *sub = rc == GW_CHOP_OK && op->kind == GW_CHOP_SUBSCRIBE
                      ? gw_channels_sub_of(ss->subs, op->channel, op->channel_len)
                      : NULL;
  const gw_chpos *pos = sub ? gw_channel_pos(gw_chsub_channel(sub)) : NULL;
  size_t n;
  if (pos && (pos->epoch || pos->next) && !(gw_chsub_flags(sub) & GW_CHSUB_RECOVERING)) {
    uint64_t next = pos->next > gw_chsub_from(sub) ? pos->next : gw_chsub_from(sub);
    gw_chop_recovery at = {.fresh = true, .epoch = pos->epoch, .offset = next ? next - 1 : 0};
    n = gw_chops_answer_recovery(op, &at, out, sizeof out);
  } else {
    n = gw_chops_answer_msg(op, rc, message, out, sizeof out);
  }
  gw_msg *m = n ? gw_msg_create(out, n, op->msgpack) : NULL;
  if (!m) {
    gw__close_async(s, ss, GW_CLOSE_INTERNAL, NULL, false);
    return;
  }
  gw_outbound_queue(s, ss, m, 0, now_ms);
  gw_msg_unref(m);
}

bool gw_chserve_op(gw_server *s, gw_session *ss, const uint8_t *d, size_t len, bool binary) {
  gw_chop op;
  int rc = gw_chops_parse(d, len, binary, &op);
  ss->ops_msgpack = binary;
  if (rc == GW_CHOP_OK && op.kind == GW_CHOP_PUBLISH) {
    /* The token's claim and the namespace decide; a processor publishes it (proc_clientpub). */
    if (!gw_chperm_allows(ss->chperm, op.channel, op.channel_len))
      rc = GW_CHOP_FORBIDDEN;
    else if (!wsg_chns_of(s->chns, op.channel, op.channel_len)->client_publish)
      rc = GW_CHOP_PUBLISH_NOT_ALLOWED;
    if (rc == GW_CHOP_OK) {
      wsg_counter_add(s->m_chops[op.kind][0], 1);
      return true;
    }
  } else if (rc == GW_CHOP_OK && op.kind == GW_CHOP_SUBSCRIBE) {
    if (gw_channels_sub_of(ss->subs, op.channel, op.channel_len))
      rc = gw__chserve_join(s, ss, &op); /* held: the claim or the handler allowed it already */
    else if (wsg_chns_of(s->chns, op.channel, op.channel_len)->subscribe_handler)
      rc = gw_chpend_ask(s, ss, &op); /* the handler decides, not the claim */
    else if (gw_chperm_allows(ss->chperm, op.channel, op.channel_len))
      rc = gw__chserve_join(s, ss, &op);
    else
      rc = GW_CHOP_FORBIDDEN;
  } else if (rc == GW_CHOP_OK && op.kind == GW_CHOP_PRESENCE) {
    gw_chpresq_op(s, ss, &op); /* answers, now or when Redis does */
    return false;
  } else if (rc == GW_CHOP_OK && op.kind == GW_CHOP_UNSUBSCRIBE) {
    leave(s, ss, &op);
  }
  if (rc == GW_CHOP_PENDING)
    return false; /* counted and answered when the handler decides, or at the timeout */
  if (rc == GW_CHOP_RECOVERING) {
    wsg_counter_add(s->m_chops[op.kind][0], 1);
    update_gauges(s);
    return false;
  }
  update_gauges(s);
  gw_chserve_answer(s, ss, &op, rc);
  return false;
}

void gw_chserve_answer(gw_server *s, gw_session *ss, const gw_chop *op, int err) {
  wsg_counter_add(s->m_chops[op->kind][-err], 1);
  gw__chserve_answer(s, ss, op, err, NULL, wsg_now_mono_ms());
}

/* One target of a server op. A refusal (a limit) is counted, logged and told to the client, whose
 * handler thought it subscribed. Nothing that changes nothing is told. */
static void server_op_one(gw_server *s, gw_session *ss, gw_chop *op, uint64_t now_ms) {
  op->msgpack = ss->ops_msgpack;
  int rc = GW_CHOP_OK;
  bool changed;
  if (op->kind == GW_CHOP_SUBSCRIBE) {
    changed = !gw_channels_sub_of(ss->subs, op->channel, op->channel_len);
    rc = gw__chserve_join(s, ss, op);
    if (rc == GW_CHOP_RECOVERING) {
      wsg_counter_add(s->m_chsrv[0][0], 1);
      return; /* answered with the channel's position once Redis gives it */
    }
  } else {
    changed = leave(s, ss, op);
  }
  wsg_counter_add(s->m_chsrv[op->kind == GW_CHOP_SUBSCRIBE ? 0 : 1][-rc], 1);
  if (rc != GW_CHOP_OK)
    wsg_log_limited(&s->rl_misc, LOG_LIMIT_PER_S, now_ms, WSG_LOG_WARN, "channels",
                    "a handler subscribed connection %llu of user %s to %s: refused, %s",
                    (unsigned long long)ss->conn_id, ss->user->id, op->channel,
                    gw_chop_strerror(rc));
  if (rc != GW_CHOP_OK || changed)
    gw__chserve_answer(s, ss, op, rc, NULL, now_ms);
}

void gw_chserve_server_op(gw_server *s, const gw_outbound *it, uint64_t now_ms) {
  if (it->has_request) {
    gw_chpend_answer(s, it, now_ms); /* the handler decided a client's subscribe */
    update_gauges(s);
    return;
  }
  gw_chop op = {.kind = it->kind == WSG_ENV_SUBSCRIBE ? GW_CHOP_SUBSCRIBE : GW_CHOP_UNSUBSCRIBE,
                .server = true,
                .channel_len = it->user_len};
  memcpy(op.channel, it->user, it->user_len); /* the decoder bounded it by WSG_MAX_CHANNEL_LEN */
  op.channel[it->user_len] = '\0';
  uint32_t n = it->target == GW_TARGET_CONNS ? it->nconns : 1;
  for (uint32_t i = 0; i < n; i++) {
    uint64_t id = it->target == GW_TARGET_CONNS ? it->conns[i] : it->conn;
    gw_session *ss = gw_conn_map_get(&s->conns, id);
    if (!ss || !ss->user || (ss->flags & (F_CLOSING | F_RELEASED)))
      wsg_counter_add(s->m_out_nobody, 1);
    else
      server_op_one(s, ss, &op, now_ms);
  }
  update_gauges(s);
}

static void on_empty(void *arg, const char *name, size_t len) {
  gw_chreg_update(arg, name, len, false);
}

void gw_chserve_release(gw_server *s, gw_session *ss) {
  for (gw_chsub *sub = ss->subs; sub; sub = gw_chsub_snext(sub)) {
    size_t len;
    const char *name = gw_channel_name(gw_chsub_channel(sub), &len);
    if (wsg_chns_of(s->chns, name, len)->presence) {
      gw_chreg_presence(s->chreg, name, len, ss->conn_id, NULL, false); /* ss->user is gone */
      presence_count(s, name, len, 1);
    }
  }
  if (ss->subs) {
    gw_channels_drop_conn(s->channels, &ss->subs, on_empty, s->chreg);
    update_gauges(s);
  }
  gw__chperm_free(ss->chperm);
  ss->chperm = NULL;
}

char *gw__chperm_take(const gw_pending *p) {
  if (p->chperm_any)
    return (char *)GW_CHPERM_ANY; /* never freed: gw__chperm_free skips it */
  const char *list = p->user + p->len + 1;
  if (!*list)
    return NULL;
  size_t n = gw_chperm_size(list);
  char *copy = malloc(n);
  if (copy)
    memcpy(copy, list, n);
  return copy;
}

void gw__chperm_free(char *perm) {
  if (perm != GW_CHPERM_ANY)
    free(perm);
}
