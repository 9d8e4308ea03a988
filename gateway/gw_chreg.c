/*
 * gw_chreg: the per-channel set of gateways in Redis (see gw_chreg.h).
 *
 * Threads: the loop thread only.
 */
#include <hiredis/hiredis.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gw_chreg.h"
#include "gw_metrics.h"
#include "wsg_chkeys.h"
#include "wsg_envelope.h"
#include "wsg_log.h"
#include "wsg_redis_cluster.h"
#include "wsg_redis_keys.h"

struct gw_chreg {
  wsg_redis_cluster *conn; /* owned: one node or a Redis Cluster */
  gw_chreg_options o;
  char *prefix, *gw_id;
  char member[WSG_PRESENCE_MEMBER_MAX + 1]; /* <gw id>#<boot> */
  char ttl[24];                             /* key_ttl_ms in decimal; "" for none */
  wsg_counter *m_ok, *m_error, *m_lost;
  wsg_counter *m_wd_waiting, *m_wd_late; /* watchdog deferrals, by reason */
};

typedef struct {
  wsg_redis_conn_req req; /* first: the callback gets it back */
  unsigned pending;       /* replies still due: the write and its PEXPIRE share the request */
} chreq;

static void on_reply(void *arg, wsg_redis_conn_req *req, const redisReply *rep) {
  gw_chreg *r = arg;
  chreq *q = (chreq *)req;
  if (--q->pending == 0)
    free(q);
  if (!r || !rep)
    return; /* destroyed, or lost: the next reconnect adds what is held */
  if (rep->type == REDIS_REPLY_ERROR)
    WSG_WARN("chreg", "Redis refused a channel update: %s", rep->str);
}

/* Sends argv (a write on key) and, when `expire` and a TTL is set, PEXPIRE key in the same
 * pipeline: the write that creates a key never leaves it without a TTL. Fire and forget. */
static void write_key(gw_chreg *r, int argc, const char **argv, const size_t *lens, bool expire) {
  chreq *q = malloc(sizeof *q);
  if (!q)
    return;
  q->req.cb = on_reply;
  q->pending = 0;
  if (wsg_redis_cluster_command(r->conn, &q->req, argc, argv, lens) == WSG_REDIS_CONN_OK)
    q->pending++;
  if (q->pending && expire && r->ttl[0]) {
    const char *pv[3] = {"PEXPIRE", argv[1], r->ttl};
    size_t pl[3] = {7, lens[1], strlen(r->ttl)};
    if (wsg_redis_cluster_command(r->conn, &q->req, 3, pv, pl) == WSG_REDIS_CONN_OK)
      q->pending++;
  }
  if (q->pending == 0)
    free(q);
}

void gw_chreg_update(gw_chreg *r, const char *name, size_t len, bool add) {
  if (!r)
    return;
  /* <prefix>ch:{c:<channel>}:gws: the tag keeps every key of a channel in one cluster slot. */
  char key[WSG_REDIS_KEY_MAX];
  int kn = wsg_key_channel(key, sizeof key, r->prefix, name, len, "gws");
  /* Only the key's node need answer: updates go on while another primary fails over. */
  if (kn < 0 || !wsg_redis_cluster_key_ready(r->conn, key, (size_t)kn))
    return;
  const char *argv[3] = {add ? "SADD" : "SREM", key, r->gw_id};
  size_t lens[3] = {4, (size_t)kn, strlen(r->gw_id)};
  write_key(r, 3, argv, lens, add);
}

static void on_ready(void *arg) {
  gw_chreg *r = arg;
  if (r->o.resync)
    r->o.resync(r->o.arg);
}

#define CHREG_CMDS "wsgate_gateway_channel_redis_commands_total"
#define CHREG_CMDS_HELP                                                                            \
  "Channel registry commands sent to Redis (SADD/SREM of gateway ids), by result."
#define CHREG_DEFERRALS "wsgate_gateway_channel_redis_watchdog_deferrals_total"
#define CHREG_DEFERRALS_HELP                                                                       \
  "The channel registry's Redis watchdog ticks past --redis-timeout that kept the connection, "    \
  "by reason (as wsgate_gateway_redis_watchdog_deferrals_total)."

static const wsg_metric_def metric_rows[] = {
    WSG_COUNTER_ROW(gw_chreg, m_ok, CHREG_CMDS, CHREG_CMDS_HELP, "result=\"ok\""),
    WSG_COUNTER_ROW(gw_chreg, m_error, CHREG_CMDS, CHREG_CMDS_HELP, "result=\"error\""),
    WSG_COUNTER_ROW(gw_chreg, m_lost, CHREG_CMDS, CHREG_CMDS_HELP, "result=\"lost\""),
    WSG_COUNTER_ROW(gw_chreg, m_wd_waiting, CHREG_DEFERRALS, CHREG_DEFERRALS_HELP,
                    "reason=\"replies_waiting\""),
    WSG_COUNTER_ROW(gw_chreg, m_wd_late, CHREG_DEFERRALS, CHREG_DEFERRALS_HELP,
                    "reason=\"loop_late\""),
};

const wsg_metric_table gw_chreg_metric_table = WSG_METRIC_TABLE("gateway/gw_chreg.c", metric_rows);

int gw_chreg_create(gw_chreg **out, struct ev_loop *loop, const gw_chreg_options *o,
                    wsg_metrics *metrics, char *err, size_t errlen) {
  *out = NULL;
  gw_chreg *r = calloc(1, sizeof *r);
  if (!r || !(r->prefix = strdup(o->prefix ? o->prefix : "")) || !(r->gw_id = strdup(o->gw_id))) {
    snprintf(err, errlen, "out of memory");
    gw_chreg_destroy(r);
    return -1;
  }
  r->o = *o;
  if (o->key_ttl_ms)
    snprintf(r->ttl, sizeof r->ttl, "%llu", (unsigned long long)o->key_ttl_ms);
  if (wsg_presence_member(r->member, sizeof r->member, o->gw_id, o->boot) < 0) {
    snprintf(err, errlen, "gateway id %s with boot %s makes no presence member", o->gw_id,
             o->boot ? o->boot : "(none)");
    gw_chreg_destroy(r);
    return -1;
  }
  wsg_metrics_register_table(metrics, &gw_chreg_metric_table, r);
  wsg_redis_cluster_options co = {.seeds = o->cluster};
  co.conn = (wsg_redis_conn_options){
      .host = o->host,
      .port = o->port,
      .password = o->password,
      .user = o->user,
      .db = o->db,
      .timeout_ms = o->timeout_ms,
      .on_ready = on_ready,
      .arg = r,
      .metrics = {.ok = r->m_ok,
                  .error = r->m_error,
                  .lost = r->m_lost,
                  .replies_waiting = r->m_wd_waiting,
                  .loop_late = r->m_wd_late},
  };
  if (wsg_redis_cluster_create(&r->conn, loop, &co, err, errlen) != WSG_REDIS_CONN_OK) {
    gw_chreg_destroy(r);
    return -1;
  }
  *out = r;
  return 0;
}

void gw_chreg_destroy(gw_chreg *r) {
  if (!r)
    return;
  wsg_redis_cluster_destroy(r->conn);
  free(r->prefix);
  free(r->gw_id);
  free(r);
}

wsg_redis_cluster *gw_chreg_conn(gw_chreg *r) {
  return r ? r->conn : NULL;
}

const char *gw_chreg_prefix(const gw_chreg *r) {
  return r->prefix;
}

const char *gw_chreg_member(const gw_chreg *r) {
  return r->member;
}

void gw_chreg_presence(gw_chreg *r, const char *name, size_t len, uint64_t conn, const char *user,
                       bool add) {
  if (!r)
    return;
  char key[WSG_REDIS_KEY_MAX], id[24];
  int kn = wsg_key_presence(key, sizeof key, r->prefix, name, len, r->member);
  int in = wsg_conn_id_format(id, sizeof id, conn);
  size_t vn = add && user ? strlen(user) : 0;
  if (kn < 0 || in < 0 || (add && vn == 0) ||
      !wsg_redis_cluster_key_ready(r->conn, key, (size_t)kn))
    return;
  const char *argv[4] = {add ? "HSET" : "HDEL", key, id, user};
  size_t lens[4] = {4, (size_t)kn, (size_t)in, vn};
  write_key(r, add ? 4 : 3, argv, lens, add);
}

void gw_chreg_presence_count(gw_chreg *r, const char *name, size_t len, uint64_t n) {
  if (!r)
    return;
  char key[WSG_REDIS_KEY_MAX], num[24];
  int kn = wsg_key_channel(key, sizeof key, r->prefix, name, len, "pc");
  int nn = snprintf(num, sizeof num, "%llu", (unsigned long long)n);
  if (kn < 0 || !wsg_redis_cluster_key_ready(r->conn, key, (size_t)kn))
    return;
  const char *argv[4] = {n ? "HSET" : "HDEL", key, r->member, num};
  size_t lens[4] = {4, (size_t)kn, strlen(r->member), (size_t)nn};
  write_key(r, n ? 4 : 3, argv, lens, n > 0);
}

typedef struct {
  wsg_redis_conn_req req; /* first: the callback gets it back */
  gw_chreg_renew_cb cb;
  void *arg;
  unsigned pending;
  bool ok;
} renew_req;

static void on_renew(void *arg, wsg_redis_conn_req *req, const redisReply *rep) {
  renew_req *q = (renew_req *)req;
  if (!arg || !rep || rep->type != REDIS_REPLY_INTEGER)
    q->ok = false; /* destroyed, lost, or refused (an error reply; a wrong type) */
  if (--q->pending > 0)
    return;
  q->cb(q->arg, q->ok, !arg);
  free(q);
}

int gw_chreg_renew(gw_chreg *r, const char *name, size_t len, uint64_t presence_n,
                   gw_chreg_renew_cb cb, void *arg) {
  char kg[WSG_REDIS_KEY_MAX], kc[WSG_REDIS_KEY_MAX], kp[WSG_REDIS_KEY_MAX], num[24];
  int lg = wsg_key_channel(kg, sizeof kg, r->prefix, name, len, "gws");
  int lc = 0, lp = 0; /* the presence keys only where they are written: they are longer */
  if (presence_n) {
    lc = wsg_key_channel(kc, sizeof kc, r->prefix, name, len, "pc");
    lp = wsg_key_presence(kp, sizeof kp, r->prefix, name, len, r->member);
  }
  int nn = snprintf(num, sizeof num, "%llu", (unsigned long long)presence_n);
  if (lg < 0 || lc < 0 || lp < 0 || !r->ttl[0] ||
      !wsg_redis_cluster_key_ready(r->conn, kg, (size_t)lg))
    return -1;
  renew_req *q = calloc(1, sizeof *q);
  if (!q)
    return -1;
  q->req.cb = on_renew;
  q->cb = cb;
  q->arg = arg;
  q->ok = true;
  size_t tl = strlen(r->ttl), gl = strlen(r->gw_id), ml = strlen(r->member);
  /* One slot (the channel's tag), one connection, in order: a pipeline, not a script. These
   * plain commands cost Redis what one EVALSHA doing the same does, and need no script cache
   * (docs/BENCHMARKS.md, "Subscriptions that are never published to"). */
  const char *cmds[5][4] = {{"SADD", kg, r->gw_id},
                            {"PEXPIRE", kg, r->ttl},
                            {"HSET", kc, r->member, num},
                            {"PEXPIRE", kc, r->ttl},
                            {"PEXPIRE", kp, r->ttl}};
  const size_t lens[5][4] = {{4, (size_t)lg, gl},
                             {7, (size_t)lg, tl},
                             {4, (size_t)lc, ml, (size_t)nn},
                             {7, (size_t)lc, tl},
                             {7, (size_t)lp, tl}};
  const int argc[5] = {3, 3, 4, 3, 3};
  int ncmds = presence_n ? 5 : 2;
  for (int i = 0; i < ncmds; i++) {
    if (wsg_redis_cluster_command(r->conn, &q->req, argc[i], cmds[i], lens[i]) == WSG_REDIS_CONN_OK)
      q->pending++;
    else
      q->ok = false;
  }
  if (q->pending == 0) {
    free(q);
    return -1;
  }
  return 0;
}
