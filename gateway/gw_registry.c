/*
 * gw_registry: the gateway's slot lease, gateway record and Redis replies, on the loop thread
 * (gw_registry.h describes the behaviour); the connection entries and replay reads are
 * gw_regconn.c's, the state both share is in gw_registry_priv.h. The connection itself (name
 * resolution, handshake, watchdog, reconnection, Redis Cluster routing) is
 * common/wsg_redis_conn.c's and common/wsg_redis_cluster.c's; this file decides what to send on it
 * and reads the replies.
 *
 * Threads: the loop thread runs everything here.
 */
#include "gw_registry.h"

#include <ev.h>
#include <hiredis/hiredis.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#include "gw_metrics.h"
#include "gw_registry_priv.h"
#include "gw_replay_page.h"
#include "wsg_envelope.h"
#include "wsg_log.h"
#include "wsg_redis_cluster.h"
#include "wsg_redis_keys.h"
#include "wsg_time.h"

/* Reconnection backoff: from 50 ms, doubling to 2 s (wsg_redis_conn). */
#define BACKOFF_MIN_MS       50
#define BACKOFF_MAX_MS       2000
#define DEFAULT_MAX_INFLIGHT 65536
#define MAX_SLOTS            65536
/* A replay read's counter TTL when the options give none. */
#define DEFAULT_REPLAY_SEQ_TTL_MS ((uint64_t)24 * 3600 * 1000)

#define GW_REG_ERR_STR(name, value, msg)                                                           \
  case value:                                                                                      \
    return msg;
const char *gw_registry_strerror(int err) {
  switch (err) { GW_REG_ERRNO_MAP(GW_REG_ERR_STR) }
  return "unknown registry error";
}
#undef GW_REG_ERR_STR

#define GW_REG_ERR_NAME(name, value, msg)                                                          \
  case value:                                                                                      \
    return "GW_REG_" #name;
const char *gw_registry_err_name(int err) {
  switch (err) { GW_REG_ERRNO_MAP(GW_REG_ERR_NAME) }
  return "GW_REG_UNKNOWN";
}
#undef GW_REG_ERR_NAME

static void on_reply(void *arg, wsg_redis_conn_req *req, const redisReply *rep);
static void start_acquire(gw_registry *r);
static void finish_release(gw_registry *r, const char *why);
static void really_destroy(gw_registry *r);

/* --- small helpers ---------------------------------------------------------------------------- */

static void enter(gw_registry *r) {
  r->depth++;
}

/* Returns true if r was destroyed: the caller must not touch it again. */
static bool leave(gw_registry *r) {
  if (--r->depth == 0 && r->doomed) {
    really_destroy(r);
    return true;
  }
  return false;
}

static void gauge(wsg_gauge *g, int64_t v) {
  if (g != NULL)
    wsg_gauge_set(g, v);
}

static uint64_t rng_next(gw_registry *r) {
  /* xorshift64: jitter and a random first slot, nothing secret. */
  uint64_t x = r->rng;
  x ^= x << 13;
  x ^= x >> 7;
  x ^= x << 17;
  return r->rng = x;
}

static void timer_after(gw_registry *r, ev_timer *t, uint64_t ms) {
  ev_timer_stop(r->loop, t);
  ev_timer_set(t, (double)ms / 1000.0, 0.0);
  ev_timer_start(r->loop, t);
}

op *gw_registry__op_new(op_kind kind) {
  op *o = calloc(1, sizeof(*o));
  if (o != NULL) {
    o->req.cb = on_reply;
    o->kind = kind;
    o->slot = -1;
    o->sent_ms = wsg_now_mono_ms();
  }
  return o;
}

/* Queues one command for o. Returns false (nothing queued) if there is no usable connection. */
bool gw_registry__send_cmd(gw_registry *r, op *o, int argc, const char **argv, const size_t *lens) {
  if (wsg_redis_cluster_command(r->conn, &o->req, argc, argv, lens) != WSG_REDIS_CONN_OK)
    return false;
  o->pending++;
  o->sent++;
  return true;
}

/* Sends a single-command op, or frees it. Returns whether it was sent. */
bool gw_registry__send_single(gw_registry *r, op *o, int argc, const char **argv,
                              const size_t *lens) {
  if (gw_registry__send_cmd(r, o, argc, argv, lens))
    return true;
  free(o);
  return false;
}

/* SCRIPT LOAD of the replay read script; its reply sets replay_sha. Fire and forget. */
static void send_script_load(gw_registry *r) {
  const char *argv[] = {"SCRIPT", "LOAD", WSG_LUA_REPLAY_READ};
  size_t lens[] = {6, 4, strlen(WSG_LUA_REPLAY_READ)};
  op *o = gw_registry__op_new(OP_SCRIPT);
  if (o != NULL)
    gw_registry__send_single(r, o, 3, argv, lens);
}

static const char *reply_text(const redisReply *rep) {
  if (rep == NULL)
    return "connection lost";
  if (rep->type == REDIS_REPLY_ERROR || rep->type == REDIS_REPLY_STATUS ||
      rep->type == REDIS_REPLY_STRING)
    return rep->str;
  return "unexpected reply type";
}

static void notify_slot(gw_registry *r, int32_t slot) {
  gauge(r->m_slot, slot);
  if (r->on_slot != NULL && !r->doomed)
    r->on_slot(r->arg, slot);
}

/* --- connection hooks (wsg_redis_conn) -------------------------------------------------------- */

/* A new connection, before its PING: EVALSHA sends 40 bytes where EVAL sends the whole script;
 * until the reply, reads use EVAL (docs/notes/hiredis.md#script-cache). */
static void on_conn_handshake(void *arg) {
  gw_registry *r = arg;
  r->replay_sha[0] = '\0';
  send_script_load(r);
}

static void on_conn_ready(void *arg) {
  gw_registry *r = arg;
  enter(r);
  /* Redis may have restarted empty while we were away: write everything again. */
  r->need_rereg = true;
  if (r->backlog_len > 0)
    gw_regconn_backlog_flush(r, NULL);
  start_acquire(r); /* writes the gateway record once it has a slot, or at the next renewal */
  leave(r);
}

/* The slot is kept until its lease timer says otherwise: a short outage must not move the slot. */
static void on_conn_down(void *arg) {
  gw_registry *r = arg;
  r->acquiring = false;
  r->renewing = false;
}

/* --- lease ------------------------------------------------------------------------------------ */

static void write_record(gw_registry *r) {
  char slot[16], started[24], conns[24];
  snprintf(slot, sizeof(slot), "%" PRId32, r->slot);
  snprintf(started, sizeof(started), "%" PRIu64, r->started_s);
  snprintf(conns, sizeof(conns), "%" PRIu64, r->conn_count);
  const char *addr = r->advertise != NULL ? r->advertise : "";
  /* boot: presence readers take a member of another boot for a previous life (wsg_chkeys.h). */
  /* direct last: left out (12 + 2 arguments) when there is no direct listener. */
  const char *hset[] = {"HSET",  r->gw_key, "slot",    slot,
                        "addr",  addr,      "started", started,
                        "conns", conns,     "version", WSG_VERSION,
                        "boot",  r->boot,   "direct",  r->direct ? r->direct : ""};
  int nargs = r->direct ? 16 : 14;
  size_t hlen[16];
  for (int i = 0; i < nargs; i++)
    hlen[i] = strlen(hset[i]);
  const char *pexp[] = {"PEXPIRE", r->gw_key, r->lease_ms_text};
  size_t plen[] = {7, strlen(r->gw_key), strlen(r->lease_ms_text)};
  op *o = gw_registry__op_new(OP_RECORD);
  if (o == NULL)
    return;
  gw_registry__send_cmd(r, o, nargs, hset, hlen);
  gw_registry__send_cmd(r, o, 3, pexp, plen);
  if (o->pending == 0)
    free(o);
}

static void lose_slot(gw_registry *r, const char *why) {
  if (r->slot < 0)
    return;
  WSG_WARN(SUBSYS, "lost outbound slot %" PRId32 ": %s", r->slot, why);
  r->pref_slot = r->slot;
  r->slot = -1;
  r->need_rereg = true;
  r->renewing = false;
  ev_timer_stop(r->loop, &r->lease_timer);
  count(r->m_lease_losses);
  notify_slot(r, -1);
}

/* The lease is ours until sent_ms + lease_ms at the latest: Redis started its TTL when it ran
 * the command, after we sent it, so timing from the send errs on the side of giving up early. */
static void lease_extended(gw_registry *r, uint64_t sent_ms) {
  uint64_t now = wsg_now_mono_ms();
  uint64_t until = sent_ms + r->lease_ms;
  timer_after(r, &r->lease_timer, until > now ? until - now : 0);
}

static void on_lease_timer(struct ev_loop *loop, ev_timer *w, int revents) {
  gw_registry *r = w->data;
  enter(r);
  lose_slot(r, "no successful renewal within the lease time");
  start_acquire(r);
  leave(r);
}

static void send_lease_script(gw_registry *r, op_kind kind, const char *script, uint32_t k) {
  char key[WSG_REDIS_KEY_MAX];
  int klen = wsg_key_slot(key, sizeof(key), r->prefix, k);
  op *o = gw_registry__op_new(kind);
  if (o == NULL || klen < 0) {
    free(o);
    return;
  }
  o->slot = (int32_t)k;
  const char *argv[] = {"EVAL", script, "1", key, r->gw_id, r->lease_ms_text};
  size_t lens[] = {4, strlen(script), 1, (size_t)klen, strlen(r->gw_id), strlen(r->lease_ms_text)};
  if (!gw_registry__send_single(r, o, 6, argv, lens))
    return;
  if (kind == OP_ACQUIRE)
    r->acquiring = true;
  else
    r->renewing = true;
}

/* Tries slots one at a time from the current one (when reconnecting), the last one held, or a
 * random one: a restarted gateway usually gets its slot back, new ones spread out. */
static void start_acquire(gw_registry *r) {
  if (!wsg_redis_cluster_ready(r->conn) || r->release != REL_NONE || r->acquiring || r->doomed)
    return;
  r->acq_tries = 0;
  if (r->slot >= 0)
    r->acq_k = (uint32_t)r->slot;
  else if (r->pref_slot >= 0)
    r->acq_k = (uint32_t)r->pref_slot;
  else
    r->acq_k = (uint32_t)(rng_next(r) % r->slots);
  send_lease_script(r, OP_ACQUIRE, WSG_LUA_LEASE_ACQUIRE, r->acq_k);
}

/* EVAL lease release of `slot` as part of batch `o`, or on its own (o NULL: fire and forget). */
static bool send_lease_release(gw_registry *r, op *o, int32_t slot) {
  char key[WSG_REDIS_KEY_MAX];
  int klen = wsg_key_slot(key, sizeof(key), r->prefix, (uint32_t)slot);
  if (klen < 0)
    return false;
  const char *argv[] = {"EVAL", WSG_LUA_LEASE_RELEASE, "1", key, r->gw_id};
  size_t lens[] = {4, strlen(WSG_LUA_LEASE_RELEASE), 1, (size_t)klen, strlen(r->gw_id)};
  if (o != NULL)
    return gw_registry__send_cmd(r, o, 5, argv, lens);
  op *single = gw_registry__op_new(OP_RECORD);
  return single != NULL && gw_registry__send_single(r, single, 5, argv, lens);
}

static void on_acquire_reply(gw_registry *r, const op *o, const redisReply *rep) {
  r->acquiring = false;
  if (rep == NULL)
    return;
  if (r->release != REL_NONE) {
    /* Won a slot after the drain began: hand it back at once rather than hold it to expiry. */
    if (rep->type == REDIS_REPLY_INTEGER && rep->integer == 1 && o->slot != r->slot)
      send_lease_release(r, NULL, o->slot);
    return;
  }
  if (rep->type == REDIS_REPLY_INTEGER && rep->integer == 1) {
    bool changed = r->slot != o->slot;
    if (changed && r->slot >= 0)
      lose_slot(r, "acquired another slot");
    r->slot = o->slot;
    r->pref_slot = o->slot;
    r->all_taken_logged = false;
    lease_extended(r, o->sent_ms);
    write_record(r);
    if (changed) {
      WSG_INFO(SUBSYS, "holding outbound slot %" PRId32 " of %" PRIu32 " as %s", r->slot, r->slots,
               r->gw_id);
      notify_slot(r, r->slot);
    }
    if (r->need_rereg && !r->doomed && wsg_redis_cluster_open(r->conn))
      gw_regconn_reregister(r);
    return;
  }
  if (rep->type == REDIS_REPLY_INTEGER && rep->integer == 0) {
    if (r->slot == o->slot)
      lose_slot(r, "another gateway holds it now");
    if (++r->acq_tries < r->slots) {
      r->acq_k = (r->acq_k + 1) % r->slots;
      send_lease_script(r, OP_ACQUIRE, WSG_LUA_LEASE_ACQUIRE, r->acq_k);
    } else if (!r->all_taken_logged) {
      r->all_taken_logged = true;
      WSG_ERROR(SUBSYS,
                "all %" PRIu32 " outbound slots are held by other gateways; retrying every %" PRIu64
                " ms (run fewer gateways or give the outbound topic more partitions)",
                r->slots, r->renew_ms);
    }
    return;
  }
  WSG_WARN(SUBSYS, "acquiring slot %" PRId32 " failed: %s", o->slot, reply_text(rep));
}

static void on_renew_reply(gw_registry *r, const op *o, const redisReply *rep) {
  r->renewing = false;
  if (rep == NULL || o->slot != r->slot || r->release != REL_NONE)
    return;
  if (rep->type == REDIS_REPLY_INTEGER && rep->integer == 1) {
    lease_extended(r, o->sent_ms);
  } else if (rep->type == REDIS_REPLY_INTEGER && rep->integer == 0) {
    lose_slot(r, "its lease key is gone or names another gateway (Redis restarted or was "
                 "flushed, or this gateway stalled past the lease)");
    start_acquire(r);
  } else {
    WSG_WARN(SUBSYS, "renewing slot %" PRId32 " failed: %s", o->slot, reply_text(rep));
  }
}

/* While a Redis Cluster primary fails over, the lease is still renewed if the node of its own
 * key answers: the slot (and every delivery to this gateway) survives another node's failover. */
static void renew_on_partial_cluster(gw_registry *r) {
  char key[WSG_REDIS_KEY_MAX];
  int klen = r->slot >= 0 ? wsg_key_slot(key, sizeof(key), r->prefix, (uint32_t)r->slot) : -1;
  if (klen < 0 || r->acquiring || r->renewing ||
      !wsg_redis_cluster_key_ready(r->conn, key, (size_t)klen))
    return;
  enter(r);
  send_lease_script(r, OP_RENEW, WSG_LUA_LEASE_RENEW, (uint32_t)r->slot);
  leave(r);
}

static void on_renew_timer(struct ev_loop *loop, ev_timer *w, int revents) {
  gw_registry *r = w->data;
  if (r->release != REL_NONE)
    return;
  if (!wsg_redis_cluster_ready(r->conn)) {
    renew_on_partial_cluster(r);
    return;
  }
  enter(r);
  write_record(r);
  if (r->slot < 0)
    start_acquire(r);
  else if (!r->acquiring && !r->renewing)
    send_lease_script(r, OP_RENEW, WSG_LUA_LEASE_RENEW, (uint32_t)r->slot);
  leave(r);
}

void gw_registry_set_conn_count(gw_registry *r, uint64_t n) {
  r->conn_count = n;
}

int32_t gw_registry_slot(const gw_registry *r) {
  return r->slot;
}

bool gw_registry_connected(const gw_registry *r) {
  return wsg_redis_cluster_ready(r->conn);
}

/* --- replies ---------------------------------------------------------------------------------- */

/* Every reply of every op (wsg_redis_conn counted it and marked a lost connection). */
static void on_reply(void *arg, wsg_redis_conn_req *req, const redisReply *rep) {
  op *o = (op *)req;
  gw_registry *r = arg;
  o->pending--;
  if (r == NULL) { /* connection destroyed: it is failing what was left */
    if (o->pending == 0) {
      gw_reguser_free(o->ext);
      free(o);
    }
    return;
  }
  enter(r);
  if (rep == NULL || rep->type == REDIS_REPLY_ERROR)
    o->failed++;

  switch (o->kind) {
  case OP_ACQUIRE:
    on_acquire_reply(r, o, rep);
    break;
  case OP_RENEW:
    on_renew_reply(r, o, rep);
    break;
  case OP_RECORD:
    if (rep != NULL && rep->type == REDIS_REPLY_ERROR)
      WSG_WARN(SUBSYS, "writing the gateway record %s failed: %s", r->gw_key, rep->str);
    break;
  case OP_CONN_DEL:
    r->conn_inflight--;
    if (rep != NULL && rep->type == REDIS_REPLY_ERROR)
      WSG_WARN(SUBSYS, "removing connection %" PRIu64 " failed: %s", o->conn_id, rep->str);
    break;
  case OP_REREG:
    if (o->pending == 0 && o->failed > 0)
      WSG_WARN(SUBSYS, "%" PRIu32 " of %" PRIu32 " connection re-registrations failed", o->failed,
               o->sent);
    break;
  case OP_CONN_ADD: {
    int status = rep == NULL                      ? GW_REG_LOST
                 : rep->type == REDIS_REPLY_ERROR ? GW_REG_REPLY
                                                  : GW_REG_OK;
    if (status == GW_REG_OK && rep->type == REDIS_REPLY_ARRAY) {
      if (gw_reguser_over_limit(r, o, rep))
        break; /* checking for entries of dead gateways first (gw_reguser.c) */
      status = GW_REG_USER_LIMIT;
    }
    if (status == GW_REG_REPLY)
      WSG_WARN(SUBSYS, "registering connection %" PRIu64 " failed: %s", o->conn_id, rep->str);
    gw_reguser_finish_add(r, o, status); /* every add carries its gw_reguser */
    break;
  }
  case OP_USER_GWS:
  case OP_USER_PRUNE:
    gw_reguser_on_reply(r, o, rep);
    break;
  case OP_USER_TOUCH:
    break; /* counted above; the next touch, hours later at worst, tries again */
  case OP_REPLAY: {
    r->conn_inflight--;
    gw_replay_page page;
    int status = rep == NULL                      ? GW_REG_LOST
                 : rep->type == REDIS_REPLY_ERROR ? GW_REG_REPLY
                                                  : GW_REG_OK;
    if (status == GW_REG_REPLY && strncmp(rep->str, "NOSCRIPT", 8) == 0) {
      /* The server's script cache was flushed (SCRIPT FLUSH) under us: load it again; this read
       * failed for a transient reason, and the client's next connection reads again. */
      r->replay_sha[0] = '\0';
      send_script_load(r);
      status = GW_REG_LOST;
    } else if (status == GW_REG_REPLY) {
      WSG_WARN(SUBSYS, "reading the replay stream for connection %" PRIu64 " failed: %s",
               o->conn_id, rep->str);
    }
    if (status == GW_REG_OK && !gw__replay_page_parse(rep, o->position_only, &page)) {
      WSG_WARN(SUBSYS,
               "the replay read for connection %" PRIu64 " returned an unexpected reply (another "
               "version's script, or foreign data under the key prefix?)",
               o->conn_id);
      status = GW_REG_REPLY;
    }
    if (o->replay_cb != NULL && !r->doomed && o->cb_epoch == r->cb_epoch)
      o->replay_cb(o->arg, o->conn_id, status, status == GW_REG_OK ? &page : NULL);
    break;
  }
  case OP_SCRIPT:
    if (rep != NULL && rep->type == REDIS_REPLY_STRING && rep->len < sizeof(r->replay_sha)) {
      memcpy(r->replay_sha, rep->str, rep->len);
      r->replay_sha[rep->len] = '\0';
    } else if (rep != NULL) {
      WSG_WARN(SUBSYS, "SCRIPT LOAD of the replay read failed (%s); reads send the whole script",
               reply_text(rep));
    }
    break;
  case OP_RELEASE:
    if (o->pending == 0 && r->release == REL_RUNNING) {
      char why[64];
      snprintf(why, sizeof(why), "%" PRIu32 " of %" PRIu32 " commands failed", o->failed, o->sent);
      finish_release(r, o->failed > 0 ? why : NULL);
    }
    break;
  }
  if (o->pending == 0) {
    gw_reguser_free(o->ext); /* NULL unless a step could not be taken: no callback then */
    free(o);
  }
  leave(r);
}

/* --- release ---------------------------------------------------------------------------------- */

static void finish_release(gw_registry *r, const char *why) {
  if (r->release != REL_RUNNING)
    return;
  r->release = REL_DONE;
  ev_timer_stop(r->loop, &r->release_timer);
  ev_timer_stop(r->loop, &r->lease_timer);
  wsg_redis_cluster_stop(r->conn);
  if (why != NULL)
    WSG_WARN(SUBSYS,
             "released Redis entries incompletely (%s); the processors' stale-entry "
             "cleanup removes what is left once this gateway's lease expires",
             why);
  else
    WSG_INFO(SUBSYS, "released the slot, the gateway record and every connection entry");
  if (r->slot >= 0) {
    r->slot = -1;
    notify_slot(r, -1);
  }
  if (r->release_done != NULL && !r->doomed) {
    void (*done)(void *) = r->release_done;
    r->release_done = NULL;
    done(r->release_arg);
  }
}

static void on_release_timer(struct ev_loop *loop, ev_timer *w, int revents) {
  gw_registry *r = w->data;
  enter(r);
  finish_release(r, wsg_redis_cluster_ready(r->conn) ? "Redis did not answer in time"
                                                     : "Redis is not connected");
  leave(r);
}

static void emit_release(void *ctx, const char *user, size_t ulen, uint64_t conn_id) {
  void **c = ctx;
  gw_registry *r = c[0];
  op *o = c[1];
  if (user == NULL || ulen == 0 || ulen > WSG_MAX_USER_LEN ||
      !gw_regconn_send_conn_delete(r, o, user, ulen, conn_id))
    o->failed++;
}

int gw_registry_release(gw_registry *r, void (*done)(void *arg), void *arg) {
  if (r->release != REL_NONE)
    return GW_REG_RELEASED;
  r->release = REL_RUNNING;
  r->release_done = done;
  r->release_arg = arg;
  ev_timer_stop(r->loop, &r->renew_timer);
  wsg_redis_cluster_cancel_retry(r->conn);
  op *o = wsg_redis_cluster_ready(r->conn) ? gw_registry__op_new(OP_RELEASE) : NULL;
  if (o == NULL) {
    /* Nothing to talk to: finish from the loop, not from inside this call. */
    timer_after(r, &r->release_timer, 0);
    return GW_REG_OK;
  }
  if (r->foreach_conn != NULL) {
    void *ctx[2] = {r, o};
    r->foreach_conn(r->arg, emit_release, ctx);
  }
  gw_regconn_backlog_flush(r, o);
  const char *del[] = {"DEL", r->gw_key};
  size_t dlen[] = {3, strlen(r->gw_key)};
  if (!gw_registry__send_cmd(r, o, 2, del, dlen))
    o->failed++;
  if (r->slot >= 0 && !send_lease_release(r, o, r->slot))
    o->failed++;
  if (o->pending == 0) {
    free(o);
    timer_after(r, &r->release_timer, 0);
  } else {
    timer_after(r, &r->release_timer, r->timeout_ms);
  }
  return GW_REG_OK;
}

/* --- lifecycle -------------------------------------------------------------------------------- */

static char *dup_or_null(const char *s) {
  return s != NULL && *s != '\0' ? strdup(s) : NULL;
}

static int fail(char *err, size_t errlen, int code, const char *msg) {
  if (err != NULL && errlen > 0)
    snprintf(err, errlen, "%s", msg);
  return code;
}

static int validate(const gw_registry_options *o, char *err, size_t errlen) {
  if (o->host == NULL || *o->host == '\0' || strlen(o->host) >= 256)
    return fail(err, errlen, GW_REG_INVALID, "redis host is empty or longer than 255 bytes");
  if (o->port <= 0 || o->port > 65535)
    return fail(err, errlen, GW_REG_INVALID, "redis port must be 1..65535");
  if (o->db < 0)
    return fail(err, errlen, GW_REG_INVALID, "redis db must be >= 0");
  if (o->prefix == NULL)
    return fail(err, errlen, GW_REG_INVALID, "redis key prefix is missing");
  if (o->gw_id == NULL || *o->gw_id == '\0' || strlen(o->gw_id) > WSG_MAX_GATEWAY_LEN)
    return fail(err, errlen, GW_REG_INVALID, "gateway id is empty or longer than 128 bytes");
  if (o->slots == 0 || o->slots > MAX_SLOTS)
    return fail(err, errlen, GW_REG_INVALID, "slots (outbound partitions) must be 1..65536");
  if (o->renew_ms == 0 || o->lease_ms <= o->renew_ms)
    return fail(err, errlen, GW_REG_INVALID,
                "lease renewal period must be > 0 and shorter than the lease TTL");
  if (o->timeout_ms == 0)
    return fail(err, errlen, GW_REG_INVALID, "redis timeout must be > 0");
  char key[WSG_REDIS_KEY_MAX];
  if (wsg_key_gateway(key, sizeof(key), o->prefix, o->gw_id) < 0 ||
      wsg_key_slot(key, sizeof(key), o->prefix, o->slots - 1) < 0)
    return fail(err, errlen, GW_REG_INVALID, "redis key prefix is too long");
  return GW_REG_OK;
}

#define COMMANDS      "wsgate_gateway_redis_commands_total"
#define COMMANDS_HELP "Redis commands answered, by result (lost: connection dropped first)"
#define DEFERRALS     "wsgate_gateway_redis_watchdog_deferrals_total"
#define DEFERRALS_HELP                                                                             \
  "Redis watchdog ticks past --redis-timeout that kept the connection, by reason: the replies "    \
  "were waiting unread (replies_waiting), or the event loop had been too late to send or read "    \
  "(loop_late: a CPU-starved gateway)"

static const wsg_metric_def metric_rows[] = {
    WSG_COUNTER_ROW(gw_registry, m_ok, COMMANDS, COMMANDS_HELP, "result=\"ok\""),
    WSG_COUNTER_ROW(gw_registry, m_error, COMMANDS, COMMANDS_HELP, "result=\"error\""),
    WSG_COUNTER_ROW(gw_registry, m_lost, COMMANDS, COMMANDS_HELP, "result=\"lost\""),
    WSG_COUNTER_ROW(gw_registry, m_wd_waiting, DEFERRALS, DEFERRALS_HELP,
                    "reason=\"replies_waiting\""),
    WSG_COUNTER_ROW(gw_registry, m_wd_late, DEFERRALS, DEFERRALS_HELP, "reason=\"loop_late\""),
    WSG_COUNTER_ROW(gw_registry, m_reconnects, "wsgate_gateway_redis_connects_total",
                    "Redis connection attempts", NULL),
    WSG_COUNTER_ROW(gw_registry, m_lease_losses, "wsgate_gateway_lease_losses_total",
                    "Outbound slot leases lost", NULL),
    WSG_COUNTER_ROW(
        gw_registry, m_backlog_drops, "wsgate_gateway_redis_remove_drops_total",
        "Connection removals dropped while Redis was unreachable and the backlog was full", NULL),
    WSG_COUNTER_ROW(gw_registry, m_user_limit, "wsgate_gateway_user_limit_refusals_total",
                    "Connections closed with 4004 because their user already had "
                    "--max-conns-per-user connections across the gateways.",
                    NULL),
    WSG_COUNTER_ROW(gw_registry, m_user_pruned, "wsgate_gateway_user_entries_pruned_total",
                    "Times a user over --max-conns-per-user had entries of gateways whose lease "
                    "is gone removed before the connection was counted again.",
                    NULL),
    WSG_GAUGE_ROW(gw_registry, m_connected, "wsgate_gateway_redis_connected",
                  "1 while the Redis connection is usable", NULL),
    WSG_GAUGE_ROW(gw_registry, m_slot, "wsgate_gateway_slot",
                  "Outbound slot (partition) held, -1 if none", NULL),
    WSG_REDIS_CLUSTER_METRIC_ROWS(gw_registry, m_cluster, "wsgate_gateway"),
    WSG_GAUGE_ROW(gw_registry, m_cluster.primaries_ready, "wsgate_gateway_redis_primaries_ready",
                  "Redis Cluster primaries whose connection answered its handshake: below "
                  "wsgate_gateway_redis_primaries during a failover (their keys wait)",
                  NULL),
};

const wsg_metric_table gw_registry_metric_table =
    WSG_METRIC_TABLE("gateway/gw_registry.c", metric_rows);

static void register_metrics(gw_registry *r, wsg_metrics *m) {
  wsg_metrics_register_table(m, &gw_registry_metric_table, r);
  gauge(r->m_slot, -1);
  gauge(r->m_connected, 0);
}

int gw_registry_create(gw_registry **out, struct ev_loop *loop, const gw_registry_options *o,
                       wsg_metrics *metrics, char *err, size_t errlen) {
  *out = NULL;
  int rc = validate(o, err, errlen);
  if (rc != GW_REG_OK)
    return rc;
  gw_registry *r = calloc(1, sizeof(*r));
  if (r == NULL)
    return fail(err, errlen, GW_REG_NOMEM, "out of memory");
  r->loop = loop;
  r->prefix = strdup(o->prefix);
  r->gw_id = strdup(o->gw_id);
  r->advertise = dup_or_null(o->advertise);
  r->direct = o->direct && *o->direct ? strdup(o->direct) : NULL;
  snprintf(r->boot, sizeof r->boot, "%s", o->boot ? o->boot : "");
  if (r->prefix == NULL || r->gw_id == NULL ||
      (o->advertise != NULL && *o->advertise != '\0' && r->advertise == NULL) ||
      (o->direct != NULL && *o->direct != '\0' && r->direct == NULL)) {
    really_destroy(r);
    return fail(err, errlen, GW_REG_NOMEM, "out of memory");
  }
  r->slots = o->slots;
  r->max_inflight = o->max_inflight != 0 ? o->max_inflight : DEFAULT_MAX_INFLIGHT;
  r->max_conns_per_user = o->max_conns_per_user;
  snprintf(r->user_limit_text, sizeof(r->user_limit_text), "%" PRIu32, o->max_conns_per_user);
  snprintf(r->user_ttl_text, sizeof(r->user_ttl_text), "%llu",
           (unsigned long long)GW_REG_USER_TTL_MS);
  r->lease_ms = o->lease_ms;
  r->renew_ms = o->renew_ms;
  r->timeout_ms = o->timeout_ms;
  r->on_slot = o->on_slot;
  r->foreach_conn = o->foreach_conn;
  r->arg = o->arg;
  snprintf(r->lease_ms_text, sizeof(r->lease_ms_text), "%" PRIu64, r->lease_ms);
  snprintf(r->replay_ttl_text, sizeof(r->replay_ttl_text), "%" PRIu64,
           o->replay_seq_ttl_ms != 0 ? o->replay_seq_ttl_ms : DEFAULT_REPLAY_SEQ_TTL_MS);
  wsg_key_gateway(r->gw_key, sizeof(r->gw_key), r->prefix, r->gw_id);
  r->started_s = (uint64_t)time(NULL);
  r->slot = -1;
  r->pref_slot = -1;
  if (getrandom(&r->rng, sizeof(r->rng), GRND_NONBLOCK) != sizeof(r->rng))
    r->rng = wsg_now_mono_us() ^ (uint64_t)(uintptr_t)r;
  r->rng |= 1; /* xorshift must not start at 0 */
  register_metrics(r, metrics);

  wsg_redis_cluster_options co = {.seeds = o->cluster, .metrics = r->m_cluster};
  co.conn = (wsg_redis_conn_options){
      .host = o->host,
      .port = o->port,
      .password = o->password,
      .user = o->user,
      .db = o->db,
      .timeout_ms = o->timeout_ms,
      .backoff_min_ms = BACKOFF_MIN_MS,
      .backoff_max_ms = BACKOFF_MAX_MS,
      .on_handshake = on_conn_handshake,
      .on_ready = on_conn_ready,
      .on_down = on_conn_down,
      .arg = r,
      .metrics = {.ok = r->m_ok,
                  .error = r->m_error,
                  .lost = r->m_lost,
                  .connects = r->m_reconnects,
                  .connected = r->m_connected,
                  .replies_waiting = r->m_wd_waiting,
                  .loop_late = r->m_wd_late},
  };
  /* Connects from the loop, so create never calls back into the caller. */
  rc = wsg_redis_cluster_create(&r->conn, loop, &co, err, errlen);
  if (rc != WSG_REDIS_CONN_OK) {
    really_destroy(r);
    return rc == WSG_REDIS_CONN_NOMEM ? GW_REG_NOMEM : GW_REG_INVALID;
  }

  ev_timer_init(&r->renew_timer, on_renew_timer, (double)r->renew_ms / 1000.0,
                (double)r->renew_ms / 1000.0);
  ev_timer_init(&r->lease_timer, on_lease_timer, 0.0, 0.0);
  ev_timer_init(&r->release_timer, on_release_timer, 0.0, 0.0);
  r->renew_timer.data = r->lease_timer.data = r->release_timer.data = r;
  ev_timer_start(loop, &r->renew_timer);
  *out = r;
  return GW_REG_OK;
}

static void really_destroy(gw_registry *r) {
  if (r->conn != NULL) {
    ev_timer_stop(r->loop, &r->renew_timer);
    ev_timer_stop(r->loop, &r->lease_timer);
    ev_timer_stop(r->loop, &r->release_timer);
  }
  /* Pending ops are freed by on_reply as the connection fails them (maybe later, if we are
   * inside one of its callbacks). */
  wsg_redis_cluster_destroy(r->conn);
  gw_regconn_backlog_clear(r);
  free(r->prefix);
  free(r->gw_id);
  free(r->advertise);
  free(r->direct);
  free(r);
}

void gw_registry_destroy(gw_registry *r) {
  if (r == NULL)
    return;
  if (r->depth > 0) {
    r->doomed = true;
    return;
  }
  really_destroy(r);
}
