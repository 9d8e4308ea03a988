/*
 * wsg_redis_cluster: asynchronous Redis on one node or a Redis Cluster (wsg_redis_cluster.h).
 *
 * A cluster command travels in a `fwd`: the caller's request plus a copy of its arguments, so a
 * MOVED or ASK can send it again. A fwd holds a reference to a `token` that outlives the cluster:
 * a reply arriving after destroy (hiredis may deliver it later when destroy ran inside one of its
 * callbacks) finds token->cl NULL and only releases the caller's request.
 *
 * Threads: the loop thread.
 */
#include "wsg_redis_cluster.h"

#include <ev.h>
#include <hiredis/hiredis.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "wsg_log.h"
#include "wsg_redis_slots.h"

#define SUBSYS        "redis"
#define SEEDS_MAX     16
#define REDIRECTS_MAX 5
#define REFRESH_MS    1000

typedef struct {
  int refs;
  wsg_redis_cluster *cl; /* NULL once destroyed */
} token;

typedef struct {
  wsg_redis_cluster *cl;
  int idx; /* index in the map; -1: the discovery connection to a seed */
  wsg_redis_conn *conn;
  bool ready;
} node;

typedef struct {
  wsg_redis_conn_req req; /* first: the node connection gives it back */
  token *tok;
  wsg_redis_conn_req *user; /* NULL: our own CLUSTER SLOTS */
  int hops;
  int argc;
  const char **argv;
  size_t *lens;
} fwd;

struct wsg_redis_cluster {
  struct ev_loop *loop;
  wsg_redis_conn *single; /* one node: everything is delegated to it */

  wsg_redis_conn_options base; /* hooks, arg, metrics, timeouts; strings below */
  char *password, *user;
  wsg_redis_node seeds[SEEDS_MAX];
  int nseeds, seed_next;

  wsg_redis_slot_map *map; /* owned */
  bool have_map;
  node *nodes[WSG_REDIS_NODES_MAX];     /* per map node; NULL: no connection */
  uint16_t served[WSG_REDIS_NODES_MAX]; /* slots each map node serves (kept with owner[]) */
  node *disc;                           /* connection to a seed while no node can be asked */
  bool all_ready, stopped, refreshing, map_stale;
  int handshake_node; /* node whose on_handshake runs now, or -1 */

  token *tok;
  int depth;
  bool doomed;
  ev_timer refresh_timer;
  wsg_redis_cluster_stats st;
  wsg_redis_cluster_metrics m; /* borrowed handles */
};

static void really_destroy(wsg_redis_cluster *c);
static void on_fwd_reply(void *arg, wsg_redis_conn_req *req, const redisReply *rep);

static void enter(wsg_redis_cluster *c) {
  c->depth++;
}

static void leave(wsg_redis_cluster *c) {
  if (--c->depth == 0 && c->doomed)
    really_destroy(c);
}

static void released(void *arg, wsg_redis_conn_req *req, const redisReply *rep) {
  (void)arg;
  (void)req;
  (void)rep;
}
static wsg_redis_conn_req asking_req = {released};

static void token_unref(token *t) {
  if (--t->refs == 0)
    free(t);
}

static void fwd_free(fwd *f) {
  token_unref(f->tok);
  free(f);
}

/* A copy of the command (one allocation), or NULL. */
static fwd *fwd_new(wsg_redis_cluster *c, wsg_redis_conn_req *user, int argc, const char **argv,
                    const size_t *lens) {
  size_t bytes = 0;
  for (int i = 0; i < argc; i++)
    bytes += (lens != NULL ? lens[i] : strlen(argv[i])) + 1;
  fwd *f = malloc(sizeof(*f) + (size_t)argc * (sizeof(char *) + sizeof(size_t)) + bytes);
  if (f == NULL)
    return NULL;
  f->req.cb = on_fwd_reply;
  f->tok = c->tok;
  c->tok->refs++;
  f->user = user;
  f->hops = 0;
  f->argc = argc;
  f->argv = (const char **)(f + 1);
  f->lens = (size_t *)(f->argv + argc);
  char *p = (char *)(f->lens + argc);
  for (int i = 0; i < argc; i++) {
    f->lens[i] = lens != NULL ? lens[i] : strlen(argv[i]);
    memcpy(p, argv[i], f->lens[i]);
    p[f->lens[i]] = '\0';
    f->argv[i] = p;
    p += f->lens[i] + 1;
  }
  return f;
}

/* --- nodes ------------------------------------------------------------------------------------ */

/* Counted once per map and kept up to date by MOVED: readiness and open() ask it often (the
 * registry's backlog flush asks per removal). */
static bool owns_slots(const wsg_redis_cluster *c, int idx) {
  return c->served[idx] > 0;
}

static void count_served(wsg_redis_cluster *c) {
  memset(c->served, 0, sizeof(c->served));
  for (size_t s = 0; s < WSG_REDIS_SLOTS; s++)
    if (c->map->owner[s] != WSG_REDIS_NO_NODE)
      c->served[c->map->owner[s]]++;
}

/* Ready = a map, and every primary that serves a slot answered its handshake. Runs the owner's
 * on_ready/on_down on a change. */
static void update_ready(wsg_redis_cluster *c) {
  int64_t primaries = 0, up = 0;
  for (uint32_t i = 0; c->have_map && i < c->map->nnodes; i++)
    if (owns_slots(c, (int)i)) {
      primaries++;
      up += c->nodes[i] != NULL && c->nodes[i]->ready;
    }
  if (c->m.primaries != NULL)
    wsg_gauge_set(c->m.primaries, primaries);
  if (c->m.primaries_ready != NULL)
    wsg_gauge_set(c->m.primaries_ready, up);
  bool ready = c->have_map && !c->doomed && up == primaries;
  if (ready == c->all_ready)
    return;
  c->all_ready = ready;
  if (c->base.metrics.connected != NULL)
    wsg_gauge_set(c->base.metrics.connected, ready ? 1 : 0);
  if (ready)
    WSG_INFO(SUBSYS, "Redis Cluster ready: %u primaries", c->map->nnodes);
  void (*hook)(void *) = ready ? c->base.on_ready : c->base.on_down;
  if (hook != NULL && !c->doomed)
    hook(c->base.arg);
}

static void send_slots(wsg_redis_cluster *c, node *n) {
  if (c->refreshing || n == NULL || !n->ready)
    return;
  const char *argv[] = {"CLUSTER", "SLOTS"};
  fwd *f = fwd_new(c, NULL, 2, argv, NULL);
  if (f == NULL)
    return;
  if (wsg_redis_conn_command(n->conn, &f->req, 2, f->argv, f->lens) != WSG_REDIS_CONN_OK) {
    fwd_free(f);
    return;
  }
  c->refreshing = true;
}

static void node_handshake(void *arg) {
  node *n = arg;
  wsg_redis_cluster *c = n->cl;
  if (n->idx < 0 || c->base.on_handshake == NULL)
    return;
  enter(c);
  c->handshake_node = n->idx;
  c->base.on_handshake(c->base.arg);
  c->handshake_node = -1;
  leave(c);
}

static void node_ready(void *arg) {
  node *n = arg;
  wsg_redis_cluster *c = n->cl;
  enter(c);
  n->ready = true;
  if (n->idx < 0)
    send_slots(c, n);
  else
    update_ready(c);
  leave(c);
}

static void node_down(void *arg) {
  node *n = arg;
  wsg_redis_cluster *c = n->cl;
  enter(c);
  n->ready = false;
  if (n->idx >= 0) {
    c->map_stale = true; /* maybe a failover: the refresh timer asks a live primary */
    update_ready(c);
  }
  leave(c);
}

static node *node_new(wsg_redis_cluster *c, int idx, const char *host, int port) {
  node *n = calloc(1, sizeof(*n));
  if (n == NULL)
    return NULL;
  n->cl = c;
  n->idx = idx;
  wsg_redis_conn_options o = c->base;
  o.host = host;
  o.port = port;
  o.password = c->password;
  o.user = c->user;
  o.on_handshake = node_handshake;
  o.on_ready = node_ready;
  o.on_down = node_down;
  o.arg = n;
  o.metrics.connected = NULL; /* the cluster's readiness, set in update_ready */
  char err[128];
  if (wsg_redis_conn_create(&n->conn, c->loop, &o, err, sizeof(err)) != WSG_REDIS_CONN_OK) {
    WSG_ERROR(SUBSYS, "cannot create a connection to Redis node %s:%d: %s", host, port, err);
    free(n);
    return NULL;
  }
  if (c->stopped)
    wsg_redis_conn_stop(n->conn);
  return n;
}

/* Pending commands of a destroyed node connection come back with arg NULL; their fwd still
 * tells the caller "lost" (token->cl is alive). */
static void node_free(node *n) {
  if (n == NULL)
    return;
  wsg_redis_conn_destroy(n->conn);
  free(n);
}

/* --- slot map --------------------------------------------------------------------------------- */

static void apply_map(wsg_redis_cluster *c, const redisReply *rep, const char *asked) {
  wsg_redis_slot_map *m = malloc(sizeof(*m));
  char err[160];
  int covered = m != NULL ? wsg_redis_slot_map_parse(m, rep, asked, err, sizeof(err)) : -1;
  if (covered < 0) {
    WSG_WARN(SUBSYS, "reading the Redis Cluster slot map failed: %s; retrying",
             m != NULL ? err : "out of memory");
    free(m);
    return;
  }
  c->st.map_reads++;
  if (c->m.map_reads != NULL)
    wsg_counter_add(c->m.map_reads, 1);
  if (covered < WSG_REDIS_SLOTS)
    WSG_WARN(SUBSYS, "the Redis Cluster serves %d of %d slots (a failover in progress?)", covered,
             WSG_REDIS_SLOTS);
  node *kept[WSG_REDIS_NODES_MAX] = {0};
  for (uint32_t i = 0; c->have_map && i < c->map->nnodes; i++) {
    node *n = c->nodes[i];
    c->nodes[i] = NULL;
    if (n == NULL)
      continue;
    int j = -1;
    for (uint32_t k = 0; k < m->nnodes && j < 0; k++)
      if (m->nodes[k].port == c->map->nodes[i].port &&
          strcmp(m->nodes[k].host, c->map->nodes[i].host) == 0)
        j = (int)k;
    if (j >= 0) {
      n->idx = j;
      kept[j] = n;
    } else {
      node_free(n);
    }
  }
  free(c->map);
  c->map = m;
  c->have_map = true;
  c->map_stale = false;
  memcpy(c->nodes, kept, sizeof(kept));
  count_served(c);
  for (uint32_t k = 0; k < m->nnodes; k++)
    if (c->nodes[k] == NULL)
      c->nodes[k] = node_new(c, (int)k, m->nodes[k].host, m->nodes[k].port);
  c->st.nodes = m->nnodes;
  if (c->disc != NULL) {
    node_free(c->disc);
    c->disc = NULL;
  }
  update_ready(c);
}

/* Every second while the map may be wrong: ask a ready primary, or a seed when none is. */
static void on_refresh_timer(struct ev_loop *loop, ev_timer *w, int revents) {
  (void)loop;
  (void)revents;
  wsg_redis_cluster *c = w->data;
  if (c->stopped || (c->have_map && c->all_ready && !c->map_stale))
    return;
  enter(c);
  node *ask = NULL;
  for (uint32_t i = 0; c->have_map && i < c->map->nnodes && ask == NULL; i++)
    if (c->nodes[i] != NULL && c->nodes[i]->ready)
      ask = c->nodes[i];
  if (ask != NULL) {
    send_slots(c, ask);
  } else if (c->disc == NULL) {
    const wsg_redis_node *s = &c->seeds[c->seed_next++ % c->nseeds];
    c->disc = node_new(c, -1, s->host, s->port);
  } else if (!c->disc->ready && !wsg_redis_conn_open(c->disc->conn)) {
    node_free(c->disc); /* next tick: the next seed */
    c->disc = NULL;
  }
  leave(c);
}

/* --- commands --------------------------------------------------------------------------------- */

static int route(const wsg_redis_cluster *c, int argc, const char **argv, const size_t *lens) {
  if (!c->have_map)
    return -1;
  int idx = wsg_redis_slot_map_route(c->map, argc, argv, lens);
  if (idx != WSG_REDIS_ROUTE_ANY)
    return idx;
  if (c->handshake_node >= 0)
    return c->handshake_node;
  for (uint32_t i = 0; i < c->map->nnodes; i++)
    if (c->nodes[i] != NULL && c->nodes[i]->ready)
      return (int)i;
  return -1;
}

/* Sends f where a MOVED/ASK points. True if sent (f now waits there). */
static bool follow(wsg_redis_cluster *c, fwd *f, const redisReply *rep) {
  wsg_redis_redirect rd;
  if (f->hops >= REDIRECTS_MAX || !wsg_redis_redirect_parse(rep->str, rep->len, &rd))
    return false;
  const char *host = rd.host[0] != '\0' ? rd.host : c->seeds[0].host;
  int idx = wsg_redis_slot_map_node(c->map, host, strlen(host), rd.port);
  if (idx < 0)
    return false;
  if (rd.kind == WSG_REDIS_MOVED) {
    uint16_t was = c->map->owner[rd.slot];
    if (was != WSG_REDIS_NO_NODE)
      c->served[was]--;
    c->served[idx]++;
    c->map->owner[rd.slot] = (uint16_t)idx;
    c->map_stale = true;
    c->st.moved++;
    if (c->m.moved != NULL)
      wsg_counter_add(c->m.moved, 1);
    ev_feed_event(c->loop, &c->refresh_timer, EV_TIMER); /* re-read the whole map soon */
  } else {
    c->st.ask++;
    if (c->m.ask != NULL)
      wsg_counter_add(c->m.ask, 1);
  }
  if (c->nodes[idx] == NULL)
    c->nodes[idx] = node_new(c, idx, c->map->nodes[idx].host, c->map->nodes[idx].port);
  node *n = c->nodes[idx];
  if (n == NULL || !n->ready)
    return false;
  if (rd.kind == WSG_REDIS_ASK) {
    const char *asking[] = {"ASKING"};
    if (wsg_redis_conn_command(n->conn, &asking_req, 1, asking, NULL) != WSG_REDIS_CONN_OK)
      return false;
  }
  f->hops++;
  return wsg_redis_conn_command(n->conn, &f->req, f->argc, f->argv, f->lens) == WSG_REDIS_CONN_OK;
}

static void on_fwd_reply(void *arg, wsg_redis_conn_req *req, const redisReply *rep) {
  (void)arg;
  fwd *f = (fwd *)req;
  wsg_redis_cluster *c = f->tok->cl;
  if (c == NULL || c->doomed) {
    if (f->user != NULL)
      f->user->cb(NULL, f->user, NULL);
    fwd_free(f);
    return;
  }
  enter(c);
  if (f->user == NULL) {
    c->refreshing = false;
    if (rep != NULL)
      apply_map(c, rep, f->argc > 0 ? c->seeds[0].host : "");
    fwd_free(f);
    leave(c);
    return;
  }
  if (rep != NULL && rep->type == REDIS_REPLY_ERROR && follow(c, f, rep)) {
    leave(c);
    return;
  }
  f->user->cb(c->base.arg, f->user, rep);
  fwd_free(f);
  leave(c);
}

int wsg_redis_cluster_command(wsg_redis_cluster *c, wsg_redis_conn_req *req, int argc,
                              const char **argv, const size_t *lens) {
  if (c->single != NULL)
    return wsg_redis_conn_command(c->single, req, argc, argv, lens);
  if (req == NULL || req->cb == NULL || argc < 1 || argv == NULL)
    return WSG_REDIS_CONN_INVALID;
  int idx = route(c, argc, argv, lens);
  node *n = idx >= 0 ? c->nodes[idx] : NULL;
  if (n == NULL || c->doomed || !wsg_redis_conn_open(n->conn))
    return WSG_REDIS_CONN_NOT_CONNECTED;
  fwd *f = fwd_new(c, req, argc, argv, lens);
  if (f == NULL)
    return WSG_REDIS_CONN_NOMEM;
  int rc = wsg_redis_conn_command(n->conn, &f->req, f->argc, f->argv, f->lens);
  if (rc != WSG_REDIS_CONN_OK)
    fwd_free(f);
  return rc;
}

bool wsg_redis_cluster_ready(const wsg_redis_cluster *c) {
  return c->single != NULL ? wsg_redis_conn_ready(c->single) : c->all_ready;
}

bool wsg_redis_cluster_key_ready(const wsg_redis_cluster *c, const char *key, size_t klen) {
  if (c->single != NULL)
    return wsg_redis_conn_ready(c->single);
  if (!c->have_map)
    return false;
  uint16_t o = c->map->owner[wsg_redis_key_slot(key, klen)];
  return o != WSG_REDIS_NO_NODE && c->nodes[o] != NULL && c->nodes[o]->ready;
}

bool wsg_redis_cluster_open(const wsg_redis_cluster *c) {
  if (c->single != NULL)
    return wsg_redis_conn_open(c->single);
  if (!c->have_map)
    return false;
  for (uint32_t i = 0; i < c->map->nnodes; i++)
    if ((c->nodes[i] == NULL || !wsg_redis_conn_open(c->nodes[i]->conn)) && owns_slots(c, (int)i))
      return false;
  return true;
}

static void each_conn(wsg_redis_cluster *c, void (*fn)(wsg_redis_conn *)) {
  if (c->single != NULL) {
    fn(c->single);
    return;
  }
  for (uint32_t i = 0; c->have_map && i < c->map->nnodes; i++)
    if (c->nodes[i] != NULL)
      fn(c->nodes[i]->conn);
  if (c->disc != NULL)
    fn(c->disc->conn);
}

void wsg_redis_cluster_cancel_retry(wsg_redis_cluster *c) {
  each_conn(c, wsg_redis_conn_cancel_retry);
}

void wsg_redis_cluster_stop(wsg_redis_cluster *c) {
  c->stopped = true;
  if (c->single == NULL)
    ev_timer_stop(c->loop, &c->refresh_timer);
  each_conn(c, wsg_redis_conn_stop);
}

void wsg_redis_cluster_get_stats(const wsg_redis_cluster *c, wsg_redis_cluster_stats *out) {
  *out = c->st;
}

/* --- lifecycle -------------------------------------------------------------------------------- */

int wsg_redis_cluster_create(wsg_redis_cluster **out, struct ev_loop *loop,
                             const wsg_redis_cluster_options *o, char *err, size_t errlen) {
  *out = NULL;
  wsg_redis_cluster *c = calloc(1, sizeof(*c));
  if (c == NULL) {
    snprintf(err, errlen, "out of memory");
    return WSG_REDIS_CONN_NOMEM;
  }
  c->loop = loop;
  c->handshake_node = -1;
  if (o->seeds == NULL || *o->seeds == '\0') {
    int rc = wsg_redis_conn_create(&c->single, loop, &o->conn, err, errlen);
    if (rc != WSG_REDIS_CONN_OK) {
      free(c);
      return rc;
    }
    *out = c;
    return WSG_REDIS_CONN_OK;
  }
  c->nseeds = wsg_redis_seeds_parse(o->seeds, c->seeds, SEEDS_MAX, err, errlen);
  if (c->nseeds < 0 || o->conn.db != 0 || o->conn.timeout_ms == 0) {
    if (c->nseeds >= 0)
      snprintf(err, errlen, "%s",
               o->conn.db != 0 ? "a Redis Cluster has only db 0: drop --redis-db"
                               : "redis timeout must be > 0");
    free(c);
    return WSG_REDIS_CONN_INVALID;
  }
  c->base = o->conn;
  c->base.host = NULL;
  c->m = o->metrics;
  c->password = o->conn.password != NULL && *o->conn.password ? strdup(o->conn.password) : NULL;
  c->user = o->conn.user != NULL && *o->conn.user ? strdup(o->conn.user) : NULL;
  c->map = malloc(sizeof(*c->map));
  c->tok = calloc(1, sizeof(*c->tok));
  if (c->map == NULL || c->tok == NULL || (o->conn.password && *o->conn.password && !c->password) ||
      (o->conn.user && *o->conn.user && !c->user)) {
    free(c->map);
    free(c->tok);
    free(c->password);
    free(c->user);
    free(c);
    snprintf(err, errlen, "out of memory");
    return WSG_REDIS_CONN_NOMEM;
  }
  wsg_redis_slot_map_reset(c->map);
  c->tok->refs = 1;
  c->tok->cl = c;
  if (c->base.metrics.connected != NULL)
    wsg_gauge_set(c->base.metrics.connected, 0);
  ev_timer_init(&c->refresh_timer, on_refresh_timer, 0.0, (double)REFRESH_MS / 1000.0);
  c->refresh_timer.data = c;
  ev_timer_start(loop, &c->refresh_timer); /* the first tick connects to a seed, from the loop */
  *out = c;
  return WSG_REDIS_CONN_OK;
}

static void really_destroy(wsg_redis_cluster *c) {
  if (c->single != NULL) {
    wsg_redis_conn_destroy(c->single);
    free(c);
    return;
  }
  ev_timer_stop(c->loop, &c->refresh_timer);
  c->tok->cl = NULL;
  for (uint32_t i = 0; c->have_map && i < c->map->nnodes; i++)
    node_free(c->nodes[i]);
  node_free(c->disc);
  token_unref(c->tok);
  free(c->map);
  free(c->user);
  if (c->password != NULL) {
    explicit_bzero(c->password, strlen(c->password));
    free(c->password);
  }
  free(c);
}

void wsg_redis_cluster_destroy(wsg_redis_cluster *c) {
  if (c == NULL)
    return;
  c->doomed = true;
  if (c->depth == 0)
    really_destroy(c);
}
