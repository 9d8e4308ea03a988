/*
 * gw_chpresq: clients' presence op, asked of Redis without blocking the loop (docs/PROTOCOL.md,
 * "Presence"; docs/ARCHITECTURE.md, "Channels"). A query is one EVAL of WSG_LUA_PRESENCE_READ on
 * the channel registry's connection (so it follows this gateway's own HSETs), then one HGET
 * gw:<id> boot per other gateway named in the channel's presence: entries of a member whose lease
 * expired or whose gateway restarted (another boot) are left out of the answer and deleted
 * (WSG_LUA_PRESENCE_DROP), so a crashed gateway's subscribers vanish within its lease. Queries in
 * flight are bounded: GW_CHPRES_PER_CONN per connection, --channel-presence-inflight per gateway;
 * the connection may be gone when Redis answers (its id is looked up then, never a pointer kept).
 *
 * Threads: the loop thread only.
 */
#include <hiredis/hiredis.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gw_chpresence.h"
#include "gw_metrics.h"
#include "gw_session.h"
#include "wsg_chkeys.h"
#include "wsg_redis_cluster.h"
#include "wsg_redis_keys.h"
#include "wsg_time.h"

typedef struct pq pq;
typedef struct gw_chpresq gw_chpresq;

struct gw_chpresq {
  gw_server *s; /* borrowed: owns this */
  pq *head;     /* queries in flight */
  uint32_t n;   /* ... how many */
  wsg_gauge *m_inflight;
  wsg_counter *m_checks, *m_dropped;
};

struct pq {
  pq *next, *prev;
  gw_chpresq *owner;
  uint64_t conn;
  uint32_t refs; /* Redis commands not answered yet */
  bool failed;   /* a command failed: answer unavailable */
  bool destroyed;
  gw_chpres_read *rd; /* owned, once the script answered */
  gw_chop op;
};

typedef struct {
  wsg_redis_conn_req req; /* first: the callback gets it back */
  pq *q;
  uint32_t gw; /* HGET boot: the member's index in q->rd */
} pq_req;

#define PRES_INFLIGHT "wsgate_gateway_channel_presence_queries"
#define PRES_CHECKS   "wsgate_gateway_channel_presence_gateway_checks_total"
#define PRES_DROPPED  "wsgate_gateway_channel_presence_dropped_total"

static const wsg_metric_def metric_rows[] = {
    WSG_GAUGE_ROW(gw_chpresq, m_inflight, PRES_INFLIGHT,
                  "Client presence queries waiting for Redis.", NULL),
    WSG_COUNTER_ROW(gw_chpresq, m_checks, PRES_CHECKS,
                    "Other gateways' gw:<id> boots read to answer presence queries.", NULL),
    WSG_COUNTER_ROW(gw_chpresq, m_dropped, PRES_DROPPED,
                    "Presence entries of dead gateway lives (lease expired, or restarted under the "
                    "same id), deleted by this gateway.",
                    NULL),
};

const wsg_metric_table gw_chpresq_metric_table =
    WSG_METRIC_TABLE("gateway/gw_chpresq.c", metric_rows);

int gw_chpresq_init(gw_server *s, char *err, size_t errlen) {
  gw_chpresq *p = calloc(1, sizeof *p);
  if (!p) {
    snprintf(err, errlen, "out of memory");
    return -1;
  }
  p->s = s;
  wsg_metrics_register_table(s->o.metrics, &gw_chpresq_metric_table, p);
  s->chpresq = p;
  return 0;
}

/* After gw_chreg_destroy(): every query's commands were called back with `destroyed`, so none is
 * left; whatever is (a bug) is freed, not answered. */
void gw_chpresq_finish(gw_server *s) {
  gw_chpresq *p = s->chpresq;
  if (!p)
    return;
  while (p->head) {
    pq *q = p->head;
    p->head = q->next;
    gw_chpres_read_free(q->rd);
    free(q);
  }
  free(p);
  s->chpresq = NULL;
}

static uint32_t conn_inflight(const gw_chpresq *p, uint64_t conn) {
  uint32_t n = 0;
  for (const pq *q = p->head; q; q = q->next)
    n += q->conn == conn;
  return n;
}

typedef struct {
  wsg_redis_conn_req req; /* first */
  gw_chpresq *p;
} drop_req;

static void on_dropped(void *arg, wsg_redis_conn_req *req, const redisReply *rep) {
  drop_req *r = (drop_req *)req;
  if (arg && rep && rep->type == REDIS_REPLY_INTEGER && rep->integer > 0)
    wsg_counter_add(r->p->m_dropped, (uint64_t)rep->integer);
  free(r);
}

/* Deletes the entries of the gateways found dead, best effort: a failure leaves them to the next
 * reader (processors' wsgate_presence() drop them too). */
static void drop_dead(gw_chpresq *p, const pq *q) {
  const char *argv[5 + WSG_PRESENCE_GWS_MAX];
  size_t lens[5 + WSG_PRESENCE_GWS_MAX];
  char key[WSG_REDIS_KEY_MAX], kc[WSG_REDIS_KEY_MAX];
  int kn = wsg_key_channel(key, sizeof key, gw_chreg_prefix(p->s->chreg), q->op.channel,
                           q->op.channel_len, "p");
  int cn = wsg_key_channel(kc, sizeof kc, gw_chreg_prefix(p->s->chreg), q->op.channel,
                           q->op.channel_len, "pc");
  if (kn < 0 || cn < 0)
    return;
  int argc = 0;
  argv[argc] = "EVAL";
  lens[argc++] = 4;
  argv[argc] = WSG_LUA_PRESENCE_DROP;
  lens[argc++] = strlen(WSG_LUA_PRESENCE_DROP);
  argv[argc] = "2";
  lens[argc++] = 1;
  argv[argc] = key;
  lens[argc++] = (size_t)kn;
  argv[argc] = kc;
  lens[argc++] = (size_t)cn;
  int head = argc;
  for (uint32_t g = 0; g < q->rd->ngws && argc < (int)(sizeof argv / sizeof argv[0]); g++)
    if (q->rd->gw[g].dead) {
      argv[argc] = q->rd->gw[g].id;
      lens[argc++] = strlen(q->rd->gw[g].id);
    }
  drop_req *r = argc > head ? malloc(sizeof *r) : NULL;
  if (!r)
    return;
  r->req.cb = on_dropped;
  r->p = p;
  if (wsg_redis_cluster_command(gw_chreg_conn(p->s->chreg), &r->req, argc, argv, lens) !=
      WSG_REDIS_CONN_OK)
    free(r);
}

static void answer(gw_chpresq *p, pq *q) {
  gw_server *s = p->s;
  gw_session *ss = gw_conn_map_get(&s->conns, q->conn);
  if (!q->failed && q->rd) {
    bool any_dead = false;
    for (uint32_t g = 0; g < q->rd->ngws; g++)
      any_dead |= q->rd->gw[g].dead;
    if (any_dead)
      drop_dead(p, q);
  }
  if (!ss || (ss->flags & F_CLOSING))
    return; /* it went away while Redis worked */
  if (q->failed || !q->rd) {
    gw_chserve_answer(s, ss, &q->op, GW_CHOP_UNAVAILABLE);
    return;
  }
  gw_chpres_result res;
  uint8_t *out = NULL;
  size_t n = 0;
  if (gw_chpres_tally(q->rd, (uint32_t)s->cfg->channel_presence_users, &res) == 0) {
    n = gw_chpres_answer(&q->op, &res, &out);
    gw_chpres_result_free(&res);
  }
  gw_msg *m = n ? gw_msg_create(out, n, q->op.msgpack) : NULL;
  free(out);
  if (!m) {
    gw_chserve_answer(s, ss, &q->op, GW_CHOP_UNAVAILABLE);
    return;
  }
  wsg_counter_add(s->m_chops[GW_CHOP_PRESENCE][0], 1);
  gw_outbound_queue(s, ss, m, 0, wsg_now_mono_ms());
  gw_msg_unref(m);
}

/* One command of q was answered (or lost, or destroyed): the last one ends the query. */
static void release(pq *q) {
  if (--q->refs > 0)
    return;
  gw_chpresq *p = q->owner;
  if (!q->destroyed)
    answer(p, q);
  if (q->prev)
    q->prev->next = q->next;
  else
    p->head = q->next;
  if (q->next)
    q->next->prev = q->prev;
  p->n--;
  wsg_gauge_set(p->m_inflight, p->n);
  gw_chpres_read_free(q->rd);
  free(q);
}

static bool send_cmd(pq *q, wsg_redis_conn_cb cb, uint32_t gw, int argc, const char **argv,
                     const size_t *lens) {
  pq_req *r = malloc(sizeof *r);
  if (!r)
    return false;
  r->req.cb = cb;
  r->q = q;
  r->gw = gw;
  if (wsg_redis_cluster_command(gw_chreg_conn(q->owner->s->chreg), &r->req, argc, argv, lens) !=
      WSG_REDIS_CONN_OK) {
    free(r);
    return false;
  }
  q->refs++;
  return true;
}

static void on_boot(void *arg, wsg_redis_conn_req *req, const redisReply *rep) {
  pq_req *r = (pq_req *)req;
  pq *q = r->q;
  uint32_t g = r->gw;
  free(r);
  size_t gl;
  const char *boot;
  if (!arg)
    q->destroyed = true;
  else if (!rep || (rep->type != REDIS_REPLY_NIL && rep->type != REDIS_REPLY_STRING))
    q->failed = true;
  else
    q->rd->gw[g].dead =
        rep->type == REDIS_REPLY_NIL || rep->len != WSG_GW_BOOT_LEN ||
        !wsg_presence_member_split(q->rd->gw[g].id, strlen(q->rd->gw[g].id), &gl, &boot) ||
        memcmp(boot, rep->str, WSG_GW_BOOT_LEN) != 0;
  release(q);
}

/* Whether member g needs its gateway's boot read; false with dead set when it does not. */
static bool needs_check(gw_chpresq *p, gw_chpres_read *rd, uint32_t g, char *id, size_t idlen) {
  const char *m = rd->gw[g].id, *boot;
  size_t gl;
  if (strcmp(m, gw_chreg_member(p->s->chreg)) == 0)
    return false; /* this life: it is answering */
  if (!wsg_presence_member_split(m, strlen(m), &gl, &boot) || gl >= idlen) {
    rd->gw[g].dead = true; /* cannot be a member */
    return false;
  }
  memcpy(id, m, gl);
  id[gl] = '\0';
  /* This gateway's id with another boot: its previous life (restarted under a fixed id). */
  rd->gw[g].dead = strcmp(id, p->s->cfg->gateway_id) == 0;
  return !rd->gw[g].dead;
}

static void on_read(void *arg, wsg_redis_conn_req *req, const redisReply *rep) {
  pq_req *r = (pq_req *)req;
  pq *q = r->q;
  free(r);
  if (!arg) {
    q->destroyed = true;
  } else if (!(q->rd = gw_chpres_read_parse(rep))) {
    if (rep && rep->type == REDIS_REPLY_ERROR)
      WSG_WARN("chpresq", "Redis refused a presence read: %s", rep->str);
    q->failed = true;
  } else {
    gw_chpresq *p = q->owner;
    for (uint32_t g = 0; g < q->rd->ngws && !q->failed; g++) {
      char id[WSG_PRESENCE_MEMBER_MAX + 1], key[WSG_REDIS_KEY_MAX];
      if (!needs_check(p, q->rd, g, id, sizeof id))
        continue;
      int kn = wsg_key_gateway(key, sizeof key, gw_chreg_prefix(p->s->chreg), id);
      if (kn < 0) {
        q->rd->gw[g].dead = true; /* cannot be a gateway's id */
        continue;
      }
      const char *argv[3] = {"HGET", key, "boot"};
      size_t lens[3] = {4, (size_t)kn, 4};
      if (!send_cmd(q, on_boot, g, 3, argv, lens))
        q->failed = true;
      else
        wsg_counter_add(p->m_checks, 1);
    }
  }
  release(q); /* the read's own reference: the HGETs sent above hold theirs */
}

void gw_chpresq_op(gw_server *s, gw_session *ss, const gw_chop *op) {
  gw_chpresq *p = s->chpresq;
  const wsg_chns_opts *ns = wsg_chns_of(s->chns, op->channel, op->channel_len);
  if (!ns->presence || !ns->client_presence) {
    gw_chserve_answer(s, ss, op, GW_CHOP_PRESENCE_NOT_ALLOWED);
    return;
  }
  if (!gw_channels_sub_of(ss->subs, op->channel, op->channel_len)) {
    gw_chserve_answer(s, ss, op, GW_CHOP_NOT_SUBSCRIBED);
    return;
  }
  if (p->n >= (uint64_t)s->cfg->channel_presence_inflight ||
      conn_inflight(p, ss->conn_id) >= GW_CHPRES_PER_CONN) {
    gw_chserve_answer(s, ss, op, GW_CHOP_PRESENCE_BUSY);
    return;
  }
  char key[WSG_REDIS_KEY_MAX], kc[WSG_REDIS_KEY_MAX], cap[16], budget[16];
  const char *prefix = gw_chreg_prefix(s->chreg);
  int kn = wsg_key_channel(key, sizeof key, prefix, op->channel, op->channel_len, "p");
  int kcn = wsg_key_channel(kc, sizeof kc, prefix, op->channel, op->channel_len, "pc");
  pq *q = kn < 0 || kcn < 0 ? NULL : calloc(1, sizeof *q);
  if (!q || !wsg_redis_cluster_key_ready(gw_chreg_conn(s->chreg), key, (size_t)kn)) {
    free(q);
    gw_chserve_answer(s, ss, op, GW_CHOP_UNAVAILABLE);
    return;
  }
  q->owner = p;
  q->conn = ss->conn_id;
  q->op = *op;
  int cn = snprintf(cap, sizeof cap, "%u",
                    (unsigned)(s->cfg->channel_presence_users * GW_CHPRES_PAIRS_PER_USER));
  int bn = snprintf(budget, sizeof budget, "%u", (unsigned)WSG_PRESENCE_SCAN_BUDGET);
  /* key: :p, the base name of the members' hashes; "u": distinct <user>|<member> values, all the
   * answer needs. */
  const char *argv[] = {"EVAL", WSG_LUA_PRESENCE_READ, "2", key, kc, cap, budget, "u"};
  size_t lens[] = {
      4, strlen(WSG_LUA_PRESENCE_READ), 1, (size_t)kn, (size_t)kcn, (size_t)cn, (size_t)bn, 1};
  if (!send_cmd(q, on_read, 0, 8, argv, lens)) {
    free(q);
    gw_chserve_answer(s, ss, op, GW_CHOP_UNAVAILABLE);
    return;
  }
  q->next = p->head;
  if (p->head)
    p->head->prev = q;
  p->head = q;
  p->n++;
  wsg_gauge_set(p->m_inflight, p->n);
}
