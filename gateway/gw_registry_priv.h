/*
 * gw_registry_priv.h: the state gw_registry.c and gw_regconn.c share, and no one else (not an API:
 * gw_registry.h is). Cross-file internals are named gw_regconn_* (gw_regconn.c's) or
 * gw_registry__* (gw_registry.c's).
 *
 * Threads: the loop thread only.
 */
#ifndef GW_REGISTRY_PRIV_H
#define GW_REGISTRY_PRIV_H

#include <ev.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "gw_registry.h"
#include "wsg_chkeys.h"
#include "wsg_metrics.h"
#include "wsg_redis_cluster.h"
#include "wsg_redis_keys.h"

#define SUBSYS "redis"

typedef enum {
  OP_ACQUIRE,    /* EVAL lease acquire on one slot */
  OP_RENEW,      /* EVAL lease renew */
  OP_RECORD,     /* HSET + PEXPIRE of the gateway record */
  OP_CONN_ADD,   /* WSG_LUA_CONN_ADD of a user entry (gw_reguser.c), with a caller callback */
  OP_CONN_DEL,   /* EVAL connection delete */
  OP_REREG,      /* batch of HSETs re-registering every live connection */
  OP_RELEASE,    /* batch: every connection, the record and the slot, at drain */
  OP_REPLAY,     /* EVALSHA (or EVAL) replay read, with a caller callback */
  OP_SCRIPT,     /* SCRIPT LOAD of the replay read script */
  OP_USER_GWS,   /* EXISTS of the gateways a user over its limit has entries on (gw_reguser.c) */
  OP_USER_PRUNE, /* EVAL removing a user's entries of dead gateways (gw_reguser.c) */
  OP_USER_TOUCH, /* PEXPIRE of a live user's entry hash, fire and forget */
} op_kind;

typedef struct gw_reguser gw_reguser;

/* One command, or one batch of commands sharing a completion (pending counts the replies still
 * due). Freed when the last reply, or hiredis' NULL reply on disconnect, has arrived. */
typedef struct {
  wsg_redis_conn_req req; /* first: on_reply gets it back */
  op_kind kind;
  uint32_t pending;
  uint32_t failed;
  uint32_t sent;
  int32_t slot;
  uint64_t sent_ms;
  uint64_t conn_id;
  gw_registry_replay_cb replay_cb;
  bool position_only;
  void *arg;
  uint32_t cb_epoch; /* r->cb_epoch when queued: a later epoch means the owner is gone */
  gw_reguser *ext;   /* OP_CONN_ADD, OP_USER_*: the registration and its callback (owned) */
} op;

typedef struct backlog_item {
  struct backlog_item *next;
  uint64_t conn_id;
  size_t ulen;
  char user[];
} backlog_item;

typedef enum { REL_NONE, REL_RUNNING, REL_DONE } release_state;

struct gw_registry {
  struct ev_loop *loop;
  /* options, copied */
  char *prefix, *gw_id, *advertise, *direct;
  char boot[WSG_GW_BOOT_LEN + 1]; /* "" when the caller gave none */
  uint32_t slots, max_inflight;
  uint32_t max_conns_per_user; /* 0: no limit (plain HSET) */
  char user_limit_text[16];
  char user_ttl_text[24];
  uint64_t lease_ms, renew_ms, timeout_ms;
  char replay_ttl_text[24];
  char replay_sha[48]; /* SHA1 of WSG_LUA_REPLAY_READ on this connection, "" until loaded */
  void (*on_slot)(void *arg, int32_t slot);
  void (*foreach_conn)(void *arg, gw_registry_emit_fn emit, void *ctx);
  void *arg;
  char lease_ms_text[24];
  char gw_key[WSG_REDIS_KEY_MAX];
  uint64_t started_s;

  /* connection */
  wsg_redis_cluster *conn; /* owned: one node or a Redis Cluster */
  uint32_t conn_inflight;  /* conn_add/conn_remove/replay reads in flight (the capped ones) */
  uint64_t rng;

  /* lease */
  int32_t slot;      /* held slot, -1 if none */
  int32_t pref_slot; /* where acquisition starts next, -1: random */
  bool acquiring, renewing, need_rereg, all_taken_logged;
  uint32_t acq_tries;
  uint32_t acq_k;
  uint64_t conn_count;

  /* removals waiting for a connection */
  backlog_item *backlog_head, *backlog_tail;
  uint32_t backlog_len;

  /* drain */
  release_state release;
  void (*release_done)(void *arg);
  void *release_arg;

  /* reentrancy: destroy from inside one of our callbacks is deferred to the outermost frame */
  int depth;
  bool doomed;
  uint32_t cb_epoch; /* bumped by gw_registry_cancel_conn_callbacks() */

  ev_timer renew_timer, lease_timer, release_timer;

  /* metrics (all NULL without a registry of metrics) */
  wsg_counter *m_ok, *m_error, *m_lost, *m_reconnects, *m_lease_losses, *m_backlog_drops;
  wsg_counter *m_wd_waiting, *m_wd_late; /* watchdog deferrals, by reason */
  wsg_counter *m_user_limit, *m_user_pruned;
  wsg_gauge *m_connected, *m_slot;
  wsg_redis_cluster_metrics m_cluster;
};

static inline void count(wsg_counter *c) {
  if (c != NULL)
    wsg_counter_add(c, 1);
}

/* gw_registry.c */
op *gw_registry__op_new(op_kind kind);
/* Queues one command for o. Returns false (nothing queued) if there is no usable connection. */
bool gw_registry__send_cmd(gw_registry *r, op *o, int argc, const char **argv, const size_t *lens);
/* Sends a single-command op, or frees it. Returns whether it was sent. */
bool gw_registry__send_single(gw_registry *r, op *o, int argc, const char **argv,
                              const size_t *lens);

/* gw_regconn.c */
/* Writes every live connection's entry again (after a new slot or a reconnection). */
void gw_regconn_reregister(gw_registry *r);
/* EVAL connection delete of (user, conn_id) as one more command of o; false if not queued. */
bool gw_regconn_send_conn_delete(gw_registry *r, op *o, const char *user, size_t ulen,
                                 uint64_t conn_id);
/* Sends the removals kept while disconnected, on their own or as part of `batch` (may be NULL). */
void gw_regconn_backlog_flush(gw_registry *r, op *batch);
void gw_regconn_backlog_clear(gw_registry *r);

/* gw_reguser.c: registration under --max-conns-per-user. new: NULL without memory; user:
 * copied. send_add: queues the add script for o (o->ext set); false if not queued. over_limit:
 * the add was refused (rep: the script's array); true if it took over (o->ext moved on), false
 * if the limit stands. on_reply: OP_USER_GWS and OP_USER_PRUNE. finish_add: ends o's
 * registration with status (calls back, frees o->ext). */
gw_reguser *gw_reguser_new(const char *user, size_t ulen, uint64_t conn_id, gw_registry_conn_cb cb,
                           void *arg, uint32_t cb_epoch);
void gw_reguser_free(gw_reguser *u);
bool gw_reguser_send_add(gw_registry *r, op *o);
bool gw_reguser_over_limit(gw_registry *r, op *o, const struct redisReply *rep);
void gw_reguser_on_reply(gw_registry *r, op *o, const struct redisReply *rep);
void gw_reguser_finish_add(gw_registry *r, op *o, int status);

#endif
