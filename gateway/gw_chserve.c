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
  if (!s->channels) {
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
      .timeout_ms = s->cfg->redis.timeout_ms,
      .resync = gw_chresync_start,
      .arg = s,
  };
  /* The resync first: the registry calls it once connected. */
  if (gw_chresync_init(s, err, errlen) != 0 ||
      gw_chreg_create(&s->chreg, s->o.loop, &co, s->o.metrics, err, errlen) != 0)
    return -1;
  if (gw_chjlserve_init(s, err, errlen) != 0)
    return -1;
  return gw_chpresq_init(s, err, errlen);
}

void gw_chserve_finish(gw_server *s) {
  gw_chreg_destroy(s->chreg); /* first: recoveries' reads and presence queries end with it */
  s->chreg = NULL;
  gw_chpresq_finish(s);
  gw_chresync_finish(s);
  gw_chjlserve_finish(s);
  gw_chrecover_finish(s);
  gw_channels_destroy(s->channels);
  s->channels = NULL;
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

static int subscribe(gw_server *s, gw_session *ss, const gw_chop *op) {
  if (!gw_chperm_allows(ss->chperm, op->channel, op->channel_len))
    return GW_CHOP_FORBIDDEN;
  bool created;
  bool already = gw_channels_sub_of(ss->subs, op->channel, op->channel_len) != NULL;
  int rc = gw_channels_subscribe(s->channels, &ss->subs, ss->conn_id, op->channel, op->channel_len,
                                 op->msgpack ? GW_CHSUB_MSGPACK : 0, &created);
  if (rc == GW_CHOP_OK && (created || gw_chresync_due(s, op->channel, op->channel_len)))
    gw_chreg_update(s->chreg, op->channel, op->channel_len, true);
  if (rc == GW_CHOP_OK && !already &&
      wsg_chns_of(s->chns, op->channel, op->channel_len)->presence) {
    gw_chreg_presence(s->chreg, op->channel, op->channel_len, ss->conn_id, ss->user->id, true);
    presence_count(s, op->channel, op->channel_len, 0);
  }
  if (rc == GW_CHOP_OK && !already)
    gw_chjlserve_local(s, ss, op->channel, op->channel_len, true);
  if (rc == GW_CHOP_OK && op->has_since && !already) {
    /* Answered by the recovery, once the history says whether it covers the gap. */
    gw_chrecover_start(s, ss, gw_channels_sub_of(ss->subs, op->channel, op->channel_len), op);
    return GW_CHOP_RECOVERING;
  }
  return rc;
}

bool gw_chserve_op(gw_server *s, gw_session *ss, const uint8_t *d, size_t len, bool binary) {
  gw_chop op;
  int rc = gw_chops_parse(d, len, binary, &op);
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
    rc = subscribe(s, ss, &op);
  } else if (rc == GW_CHOP_OK && op.kind == GW_CHOP_PRESENCE) {
    gw_chpresq_op(s, ss, &op); /* answers, now or when Redis does */
    return false;
  } else if (rc == GW_CHOP_OK && op.kind == GW_CHOP_UNSUBSCRIBE) {
    bool emptied;
    bool was =
        gw_channels_unsubscribe(s->channels, &ss->subs, op.channel, op.channel_len, &emptied);
    if (was && wsg_chns_of(s->chns, op.channel, op.channel_len)->presence) {
      gw_chreg_presence(s->chreg, op.channel, op.channel_len, ss->conn_id, NULL, false);
      presence_count(s, op.channel, op.channel_len, 0);
    }
    if (was)
      gw_chjlserve_local(s, ss, op.channel, op.channel_len, false);
    if (emptied)
      gw_chreg_update(s->chreg, op.channel, op.channel_len, false);
  }
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
  uint8_t out[GW_CHOP_ANSWER_MAX];
  size_t n = gw_chops_answer(op, err, out, sizeof out);
  gw_msg *m = n ? gw_msg_create(out, n, op->msgpack) : NULL;
  if (!m) {
    gw__close_async(s, ss, GW_CLOSE_INTERNAL, NULL, false);
    return;
  }
  gw_outbound_queue(s, ss, m, 0, wsg_now_mono_ms());
  gw_msg_unref(m);
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
