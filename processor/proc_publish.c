/*
 * proc_publish: numbering, storing and addressing a batch's publications (see proc_publish.h).
 *
 * Threads: the consumer thread.
 */
#include "proc_publish.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "proc_util.h"
#include "wsg_chkeys.h"
#include "wsg_redis_keys.h"
#include "wsg_log.h"

/* Publications per pipelined round trip. */
#define PUB_CHUNK 256
#define PUB_ARGS  10

/* The keys and texts of one EVALSHA, alive until its pipeline is sent. */
typedef struct {
  char m[WSG_REDIS_KEY_MAX], h[WSG_REDIS_KEY_MAX], g[WSG_REDIS_KEY_MAX];
  char size[16], ttl[24];
  const char *argv[PUB_ARGS];
  size_t lens[PUB_ARGS];
} pub_cmd;

struct proc_publisher {
  proc_redis *r;
  const wsg_chns *ns;
  char sha[48]; /* of WSG_LUA_CHANNEL_PUBLISH on the server, "" until loaded */
  pub_cmd *cmds;
  wsgate_redis_cmd *wcmds;
  proc_routes rt;      /* gateway lookups' scratch */
  proc_route_gw *live; /* the live gateways of every publication, by publication */
  size_t nlive, live_cap;
  uint32_t *first; /* per publication of a store: its first index in live */
  size_t first_cap;
  wsg_log_ratelimit rl;
  wsg_counter *m_stored, *m_nobody, *m_failed, *m_records, *m_stale;
  wsg_counter *m_jl, *m_jl_records;
};

#define PUBS      "wsgate_processor_channel_publications_total"
#define PUBS_HELP "Publications to channels, by result (nobody: no gateway has subscribers)"

static const wsg_metric_def metric_rows[] = {
    WSG_COUNTER_ROW(proc_publisher, m_stored, PUBS, PUBS_HELP, "result=\"stored\""),
    WSG_COUNTER_ROW(proc_publisher, m_nobody, PUBS, PUBS_HELP, "result=\"nobody\""),
    WSG_COUNTER_ROW(proc_publisher, m_failed, PUBS, PUBS_HELP, "result=\"refused\""),
    WSG_COUNTER_ROW(proc_publisher, m_records, "wsgate_processor_channel_publish_records_total",
                    "publish records addressed to gateways (one per gateway with subscribers per "
                    "publication)",
                    NULL),
    WSG_COUNTER_ROW(proc_publisher, m_stale, "wsgate_processor_channel_stale_gateways_total",
                    "Gateway ids removed from a channel's gateway set because their lease is gone",
                    NULL),
    WSG_COUNTER_ROW(proc_publisher, m_jl, "wsgate_processor_channel_joinleave_batches_total",
                    "Batches of join/leave events from gateways, addressed to the channel's "
                    "gateways (neither numbered nor stored).",
                    NULL),
    WSG_COUNTER_ROW(
        proc_publisher, m_jl_records, "wsgate_processor_channel_joinleave_records_total",
        "joinleave records produced: one per gateway with subscribers per batch.", NULL),
};

const wsg_metric_table proc_publish_metric_table =
    WSG_METRIC_TABLE("processor/proc_publish.c", metric_rows);

proc_publisher *proc_publisher_create(proc_redis *r, const wsg_chns *ns, wsg_metrics *metrics) {
  proc_publisher *pp = calloc(1, sizeof *pp);
  if (!pp)
    return NULL;
  pp->cmds = calloc(PUB_CHUNK, sizeof(pub_cmd));
  pp->wcmds = calloc(PUB_CHUNK, sizeof(wsgate_redis_cmd));
  if (!pp->cmds || !pp->wcmds) {
    proc_publisher_destroy(pp);
    return NULL;
  }
  pp->r = r;
  pp->ns = ns;
  proc_routes_init(&pp->rt);
  wsg_metrics_register_table(metrics, &proc_publish_metric_table, pp);
  return pp;
}

void proc_publisher_destroy(proc_publisher *pp) {
  if (!pp)
    return;
  proc_routes_finish(&pp->rt);
  free(pp->cmds);
  free(pp->wcmds);
  free(pp->live);
  free(pp->first);
  free(pp);
}

static void count(wsg_counter *c, uint64_t n) {
  if (c && n)
    wsg_counter_add(c, n);
}

/* SCRIPT LOAD once per server (EVALSHA then sends 40 bytes instead of the script). */
static int load_script(proc_publisher *pp, char *err, size_t errlen) {
  if (pp->sha[0])
    return 0;
  const char *argv[] = {"SCRIPT", "LOAD", WSG_LUA_CHANNEL_PUBLISH};
  wsgate_redis_cmd c = {3, argv, NULL};
  const wsgate_redis_reply *rep;
  void *block;
  if (proc_redis_pipeline(pp->r, &c, 1, &rep, &block, err, errlen) != WSGATE_OK)
    return -1;
  int rc = 0;
  if (rep->type == WSGATE_REDIS_STRING && rep->len < sizeof pp->sha) {
    memcpy(pp->sha, rep->str, rep->len);
    pp->sha[rep->len] = '\0';
  } else {
    snprintf(err, errlen, "redis: SCRIPT LOAD of the channel publish script failed: %s",
             rep->type == WSGATE_REDIS_ERROR ? rep->str : "unexpected reply");
    rc = -1;
  }
  free(block);
  return rc;
}

/* EVALSHA (or EVAL, when the server lost the script) of publication p into c. */
static void build(proc_publisher *pp, pub_cmd *c, wsgate_redis_cmd *w, const proc_pub *p,
                  bool eval) {
  const char *prefix = proc_redis_prefix(pp->r);
  const wsg_chns_opts *o = wsg_chns_of(pp->ns, p->channel, p->channel_len);
  int lm = wsg_key_channel(c->m, sizeof c->m, prefix, p->channel, p->channel_len, "m");
  int lh = wsg_key_channel(c->h, sizeof c->h, prefix, p->channel, p->channel_len, "h");
  int lg = wsg_key_channel(c->g, sizeof c->g, prefix, p->channel, p->channel_len, "gws");
  snprintf(c->size, sizeof c->size, "%u", o->history_size);
  snprintf(c->ttl, sizeof c->ttl, "%llu", (unsigned long long)o->history_ttl_ms);
  if (p->joinleave)
    eval = true; /* short: never cached */
  const char *script = p->joinleave ? WSG_LUA_CHANNEL_GATEWAYS
                       : eval       ? WSG_LUA_CHANNEL_PUBLISH
                                    : pp->sha;
  const char *argv[PUB_ARGS] = {eval ? "EVAL" : "EVALSHA",
                                script,
                                "3",
                                c->m,
                                c->h,
                                c->g,
                                c->size,
                                c->ttl,
                                p->binary ? "b" : "d",
                                p->data && !p->joinleave ? (const char *)p->data : ""};
  /* Names are bounded (200 bytes) and so is the prefix: the keys fit; an empty key still keeps
   * the pipeline aligned, and Redis refuses it. */
  size_t lens[PUB_ARGS] = {eval ? 4 : 7,
                           strlen(script),
                           1,
                           (size_t)(lm > 0 ? lm : 0),
                           (size_t)(lh > 0 ? lh : 0),
                           (size_t)(lg > 0 ? lg : 0),
                           strlen(c->size),
                           strlen(c->ttl),
                           1,
                           p->joinleave ? 0 : p->len};
  memcpy(c->argv, argv, sizeof argv);
  memcpy(c->lens, lens, sizeof lens);
  *w = (wsgate_redis_cmd){PUB_ARGS, c->argv, c->lens};
}

/* Runs the scripts of p[0..n) (n <= PUB_CHUNK); replies into *reps (one block, caller frees). */
static int run(proc_publisher *pp, const proc_pub *p, size_t n, bool eval,
               const wsgate_redis_reply **reps, void **block, char *err, size_t errlen) {
  for (size_t i = 0; i < n; i++)
    build(pp, &pp->cmds[i], &pp->wcmds[i], &p[i], eval);
  return proc_redis_pipeline(pp->r, pp->wcmds, n, reps, block, err, errlen) == WSGATE_OK ? 0 : -1;
}

static bool noscript(const wsgate_redis_reply *r) {
  return r->type == WSGATE_REDIS_ERROR && strncmp(r->str, "NOSCRIPT", 8) == 0;
}

/* Removes the ids of dead gateways from the sets of the channels that named them. Best effort:
 * a failure leaves them for the next publication. */
static void remove_stale(proc_publisher *pp, const proc_pub *p, const wsgate_redis_reply *rep) {
  const char *prefix = proc_redis_prefix(pp->r);
  size_t n = 0;
  for (size_t k = 2; k < rep->count && n < PUB_CHUNK; k++) {
    const wsgate_redis_reply *id = &rep->items[k];
    for (size_t g = 0; g < pp->rt.ngws; g++) {
      const proc_route_gw *gw = &pp->rt.gws[g];
      if (gw->slot != -1 || gw->len != id->len || memcmp(gw->id, id->str, id->len) != 0)
        continue;
      pub_cmd *c = &pp->cmds[n];
      int lg = wsg_key_channel(c->g, sizeof c->g, prefix, p->channel, p->channel_len, "gws");
      const char *argv[3] = {"SREM", c->g, gw->id};
      size_t lens[3] = {4, (size_t)(lg > 0 ? lg : 0), gw->len};
      memcpy(c->argv, argv, sizeof argv);
      memcpy(c->lens, lens, sizeof lens);
      pp->wcmds[n++] = (wsgate_redis_cmd){3, c->argv, c->lens};
      break;
    }
  }
  const wsgate_redis_reply *reps[PUB_CHUNK];
  void *block = NULL;
  char err[256];
  if (n && proc_redis_pipeline(pp->r, pp->wcmds, n, reps, &block, err, sizeof err) == WSGATE_OK)
    count(pp->m_stale, n);
  free(block);
}

/* The live gateways named by one script reply, appended to pp->live. */
static int add_live(proc_publisher *pp, const wsgate_redis_reply *rep, bool *stale) {
  for (size_t k = 2; k < rep->count; k++) {
    const wsgate_redis_reply *id = &rep->items[k];
    for (size_t g = 0; g < pp->rt.ngws; g++) {
      const proc_route_gw *gw = &pp->rt.gws[g];
      if (gw->len != id->len || memcmp(gw->id, id->str, id->len) != 0)
        continue;
      if (gw->slot == -1)
        *stale = true;
      if (gw->slot < 0)
        break;
      if (proc__reserve((void **)&pp->live, &pp->live_cap, pp->nlive + 1, sizeof *pp->live) != 0)
        return -1;
      pp->live[pp->nlive++] = *gw;
      break;
    }
  }
  return 0;
}

/* Gateways of the chunk's replies: slots, then each publication's live list. */
static int address(proc_publisher *pp, proc_pub *p, size_t base, size_t n,
                   const wsgate_redis_reply **reps, uint64_t now_ms, char *err, size_t errlen) {
  size_t nids = 0;
  for (size_t i = 0; i < n; i++)
    if (reps[i]->type == WSGATE_REDIS_ARRAY && reps[i]->count > 2)
      nids += reps[i]->count - 2;
  proc_strref *ids = malloc((nids ? nids : 1) * sizeof *ids);
  if (!ids) {
    snprintf(err, errlen, "out of memory");
    return -1;
  }
  size_t k = 0;
  for (size_t i = 0; i < n; i++)
    if (reps[i]->type == WSGATE_REDIS_ARRAY)
      for (size_t j = 2; j < reps[i]->count; j++)
        ids[k++] = (proc_strref){reps[i]->items[j].str, reps[i]->items[j].len};
  int rc = proc_redis_gateways(pp->r, ids, k, now_ms, &pp->rt, err, errlen);
  free(ids);
  for (size_t i = 0; i < n && rc == 0; i++) {
    pp->first[base + i] = (uint32_t)pp->nlive;
    if (p[i].offset == 0)
      continue;
    bool stale = false;
    if (add_live(pp, reps[i], &stale) != 0) {
      snprintf(err, errlen, "out of memory");
      rc = -1;
    }
    p[i].ngws = (uint32_t)(pp->nlive - pp->first[base + i]);
    if (stale)
      remove_stale(pp, &p[i], reps[i]);
  }
  return rc;
}

/* Reads one script reply into p's offset and epoch; false when it is not one. */
static bool parse(const wsgate_redis_reply *rep, proc_pub *p) {
  if (rep->type != WSGATE_REDIS_ARRAY || rep->count < 2 ||
      rep->items[0].type != WSGATE_REDIS_INTEGER || rep->items[1].type != WSGATE_REDIS_INTEGER ||
      rep->items[0].integer <= 0 || rep->items[1].integer <= 0)
    return false;
  for (size_t k = 2; k < rep->count; k++)
    if (rep->items[k].type != WSGATE_REDIS_STRING || rep->items[k].len == 0 ||
        rep->items[k].len > WSG_MAX_GATEWAY_LEN)
      return false;
  p->offset = (uint64_t)rep->items[0].integer;
  p->epoch = (uint64_t)rep->items[1].integer;
  return true;
}

/* One chunk: scripts (EVALSHA; EVAL again for those the server did not know), then addresses. */
static int store_chunk(proc_publisher *pp, proc_pub *p, size_t base, size_t n, uint64_t now_ms,
                       char *err, size_t errlen) {
  const wsgate_redis_reply *reps[PUB_CHUNK];
  void *block = NULL, *block2 = NULL;
  if (run(pp, p, n, false, reps, &block, err, errlen) != 0)
    return -1;
  for (size_t i = 0; i < n; i++) {
    if (noscript(reps[i])) {
      /* The server restarted or flushed its scripts: this one ran nowhere. Load it again next
       * time; now run it in full. */
      pp->sha[0] = '\0';
      const wsgate_redis_reply *r2;
      void *b = NULL;
      if (run(pp, &p[i], 1, true, &r2, &b, err, errlen) != 0) {
        free(block);
        free(block2);
        return -1;
      }
      free(block2);
      block2 = b;
      reps[i] = r2;
    }
    if (!parse(reps[i], &p[i])) {
      count(pp->m_failed, 1);
      wsg_log_limited(&pp->rl, 1, now_ms, WSG_LOG_WARN, "publish",
                      "storing a publication to %.*s failed: %s; not sent", (int)p[i].channel_len,
                      p[i].channel,
                      reps[i]->type == WSGATE_REDIS_ERROR ? reps[i]->str : "unexpected reply");
    }
  }
  int rc = address(pp, p, base, n, reps, now_ms, err, errlen);
  free(block);
  free(block2);
  return rc;
}

int proc_publish_store(proc_publisher *pp, proc_pub *p, size_t n, uint64_t now_ms, char *err,
                       size_t errlen) {
  pp->nlive = 0;
  for (size_t i = 0; i < n; i++) {
    p[i].offset = p[i].epoch = 0;
    p[i].gws = NULL;
    p[i].ngws = 0;
  }
  if (n == 0)
    return 0;
  if (proc__reserve((void **)&pp->first, &pp->first_cap, n, sizeof *pp->first) != 0) {
    snprintf(err, errlen, "out of memory");
    return -1;
  }
  if (load_script(pp, err, errlen) != 0)
    return -1;
  for (size_t from = 0; from < n; from += PUB_CHUNK) {
    size_t k = n - from < PUB_CHUNK ? n - from : PUB_CHUNK;
    if (store_chunk(pp, p + from, from, k, now_ms, err, errlen) != 0)
      return -1;
  }
  /* pp->live is complete: point each publication at its part. */
  for (size_t i = 0; i < n; i++) {
    p[i].gws = p[i].ngws ? &pp->live[pp->first[i]] : NULL;
    if (p[i].offset && p[i].joinleave) {
      count(pp->m_jl, 1);
      count(pp->m_jl_records, p[i].ngws);
    } else if (p[i].offset) {
      count(p[i].ngws ? pp->m_stored : pp->m_nobody, 1);
      count(pp->m_records, p[i].ngws);
    }
  }
  return 0;
}

int proc_publish_encode(const proc_pub *p, const proc_route_gw *g, uint64_t now_us, wsg_buf *out) {
  wsg_envelope env = {
      .kind = p->joinleave ? WSG_ENV_JOINLEAVE : WSG_ENV_PUBLISH,
      .fields = WSG_F_GATEWAY | WSG_F_SLOT | WSG_F_CHANNEL | WSG_F_TS | WSG_F_DATA | WSG_F_BINARY |
                (p->joinleave ? 0 : WSG_F_CH_OFFSET | WSG_F_CH_EPOCH),
      .gateway = g->id,
      .gateway_len = g->len,
      .slot = (uint32_t)g->slot,
      .channel = p->channel,
      .channel_len = p->channel_len,
      .ch_offset = p->offset,
      .ch_epoch = p->epoch,
      .ts_us = now_us,
      .data = p->data,
      .data_len = p->len,
      .binary = p->binary,
  };
  return wsg_envelope_encode(&env, out);
}
