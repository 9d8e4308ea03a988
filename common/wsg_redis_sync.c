/*
 * wsg_redis_sync: synchronous pipelines on one Redis node or a Redis Cluster (wsg_redis_sync.h).
 *
 * Connections are per node of the slot map (conns[i] belongs to map->nodes[i]) and made lazily.
 * A redirected command is rebuilt by the caller's builder and sent alone; redirections are rare
 * (a reshard or a failover), so the common path is one write and one read per node.
 */
#include "wsg_redis_sync.h"

#include <hiredis/hiredis.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "wsg_err.h"
#include "wsg_redis_slots.h"

#define SEEDS_MAX     16
#define SCRIPTS_MAX   8
#define REDIRECTS_MAX 5

struct wsg_redis_sync {
  bool cluster;
  wsg_redis_node seeds[SEEDS_MAX]; /* one node: seeds[0] is it */
  int nseeds;
  char *user, *password; /* owned; NULL: none */
  int db;
  uint64_t timeout_ms;
  char where[128];

  wsg_redis_slot_map *map;                  /* owned */
  redisContext *conns[WSG_REDIS_NODES_MAX]; /* owned, per map node; NULL: not connected */
  bool ready;                               /* map read (cluster) or node known (one node) */
  bool map_stale;                           /* a MOVED was seen: re-read after this pipeline */

  const char *scripts[SCRIPTS_MAX]; /* borrowed literals, loaded on every new connection */
  int nscripts;
  wsg_redis_sync_stats stats;
  wsg_redis_cluster_metrics m; /* borrowed handles */
};

int wsg_redis_sync_create(wsg_redis_sync **out, const wsg_redis_sync_options *o, char *err,
                          size_t errlen) {
  *out = NULL;
  if (o->timeout_ms == 0)
    return wsg_err_set(err, errlen, "redis timeout must be > 0");
  wsg_redis_sync *s = calloc(1, sizeof(*s));
  if (s == NULL || (s->map = malloc(sizeof(*s->map))) == NULL) {
    free(s);
    return wsg_err_set(err, errlen, "out of memory");
  }
  s->cluster = o->seeds != NULL && *o->seeds != '\0';
  s->m = o->metrics;
  if (s->cluster) {
    s->nseeds = wsg_redis_seeds_parse(o->seeds, s->seeds, SEEDS_MAX, err, errlen);
    if (s->nseeds < 0 || o->db != 0) {
      if (s->nseeds >= 0)
        wsg_err_set(err, errlen, "a Redis Cluster has only db 0: drop --redis-db");
      wsg_redis_sync_destroy(s);
      return -1;
    }
    snprintf(s->where, sizeof(s->where), "cluster %s", o->seeds);
  } else {
    if (o->host == NULL || strlen(o->host) >= WSG_REDIS_HOST_MAX || o->port <= 0 ||
        o->port > 65535) {
      wsg_redis_sync_destroy(s);
      return wsg_err_set(err, errlen, "redis: a host and a port (1..65535) are required");
    }
    snprintf(s->seeds[0].host, sizeof(s->seeds[0].host), "%s", o->host);
    s->seeds[0].port = o->port;
    s->nseeds = 1;
    snprintf(s->where, sizeof(s->where), "%s:%d", o->host, o->port);
  }
  s->user = o->user != NULL && *o->user != '\0' ? strdup(o->user) : NULL;
  s->password = o->password != NULL && *o->password != '\0' ? strdup(o->password) : NULL;
  if ((o->user != NULL && *o->user != '\0' && s->user == NULL) ||
      (o->password != NULL && *o->password != '\0' && s->password == NULL)) {
    wsg_redis_sync_destroy(s);
    return wsg_err_set(err, errlen, "out of memory");
  }
  s->db = o->db;
  s->timeout_ms = o->timeout_ms;
  wsg_redis_slot_map_reset(s->map);
  *out = s;
  return 0;
}

void wsg_redis_sync_drop(wsg_redis_sync *s) {
  for (uint32_t i = 0; i < WSG_REDIS_NODES_MAX; i++)
    if (s->conns[i] != NULL) {
      redisFree(s->conns[i]);
      s->conns[i] = NULL;
    }
  s->ready = false;
}

void wsg_redis_sync_destroy(wsg_redis_sync *s) {
  if (s == NULL)
    return;
  if (s->map != NULL)
    wsg_redis_sync_drop(s);
  free(s->map);
  free(s->user);
  if (s->password != NULL) {
    explicit_bzero(s->password, strlen(s->password));
    free(s->password);
  }
  free(s);
}

bool wsg_redis_sync_is_cluster(const wsg_redis_sync *s) {
  return s->cluster;
}

const char *wsg_redis_sync_where(const wsg_redis_sync *s) {
  return s->where;
}

bool wsg_redis_sync_connected(const wsg_redis_sync *s) {
  return s->ready;
}

void wsg_redis_sync_get_stats(const wsg_redis_sync *s, wsg_redis_sync_stats *out) {
  *out = s->stats;
}

/* --- one node's connection ------------------------------------------------------------------ */

/* One command during a connection's set-up: 0 if it did not answer with an error. */
static int setup_command(redisContext *c, int argc, const char **argv, redisReply **keep, char *err,
                         size_t errlen) {
  redisReply *rep = redisCommandArgv(c, argc, argv, NULL);
  if (rep == NULL)
    return wsg_err_set(err, errlen, "%s failed: %s", argv[0],
                       c->errstr[0] ? c->errstr : "no reply");
  if (rep->type == REDIS_REPLY_ERROR) {
    wsg_err_set(err, errlen, "%s refused: %.*s", argv[0], (int)rep->len, rep->str);
    freeReplyObject(rep);
    return -1;
  }
  if (keep != NULL)
    *keep = rep;
  else
    freeReplyObject(rep);
  return 0;
}

static int load_script(redisContext *c, const char *script, char *sha, size_t shalen, char *err,
                       size_t errlen) {
  const char *argv[] = {"SCRIPT", "LOAD", script};
  redisReply *rep = NULL;
  if (setup_command(c, 3, argv, &rep, err, errlen) != 0)
    return -1;
  int rc = 0;
  if (rep->type == REDIS_REPLY_STRING && rep->len < shalen) {
    if (sha != NULL) {
      memcpy(sha, rep->str, rep->len);
      sha[rep->len] = '\0';
    }
  } else {
    rc = wsg_err_set(err, errlen, "SCRIPT LOAD returned an unexpected reply");
  }
  freeReplyObject(rep);
  return rc;
}

/* A new connection to host:port with the handshake done, or NULL with a message. */
static redisContext *node_open(wsg_redis_sync *s, const char *host, int port, char *err,
                               size_t errlen) {
  struct timeval tv = {.tv_sec = (time_t)(s->timeout_ms / 1000),
                       .tv_usec = (suseconds_t)(s->timeout_ms % 1000) * 1000};
  redisContext *c = redisConnectWithTimeout(host, port, tv);
  char e2[200];
  if (c == NULL || c->err) {
    wsg_err_set(err, errlen, "cannot connect to %s:%d: %s", host, port,
                c ? c->errstr : "out of memory");
    goto fail;
  }
  if (redisSetTimeout(c, tv) != REDIS_OK || redisEnableKeepAlive(c) != REDIS_OK) {
    wsg_err_set(err, errlen, "cannot set up the connection to %s:%d: %s", host, port, c->errstr);
    goto fail;
  }
  if (s->password != NULL) {
    const char *argv[] = {"AUTH", s->user != NULL ? s->user : s->password, s->password};
    int argc = s->user != NULL ? 3 : 2;
    if (setup_command(c, argc, argv, NULL, e2, sizeof(e2)) != 0) {
      wsg_err_set(err, errlen, "%s:%d: %s (check --redis-user and --redis-password)", host, port,
                  e2);
      goto fail;
    }
  }
  if (s->db != 0) {
    char db[16];
    snprintf(db, sizeof(db), "%d", s->db);
    const char *argv[] = {"SELECT", db};
    if (setup_command(c, 2, argv, NULL, e2, sizeof(e2)) != 0) {
      wsg_err_set(err, errlen, "%s:%d: %s (check --redis-db)", host, port, e2);
      goto fail;
    }
  }
  for (int i = 0; i < s->nscripts; i++)
    if (load_script(c, s->scripts[i], NULL, 64, e2, sizeof(e2)) != 0) {
      wsg_err_set(err, errlen, "%s:%d: %s", host, port, e2);
      goto fail;
    }
  return c;
fail:
  if (c != NULL)
    redisFree(c);
  return NULL;
}

static redisContext *node_conn(wsg_redis_sync *s, uint32_t idx, char *err, size_t errlen) {
  if (s->conns[idx] == NULL)
    s->conns[idx] = node_open(s, s->map->nodes[idx].host, s->map->nodes[idx].port, err, errlen);
  return s->conns[idx];
}

/* --- slot map ------------------------------------------------------------------------------- */

/* Reads CLUSTER SLOTS from `c` (asked at host) into a fresh map and swaps it in, keeping the
 * connections of nodes that are still in it. 0, or -1 with a message. */
static int map_read_from(wsg_redis_sync *s, redisContext *c, const char *host, char *err,
                         size_t errlen) {
  const char *argv[] = {"CLUSTER", "SLOTS"};
  redisReply *rep = redisCommandArgv(c, 2, argv, NULL);
  if (rep == NULL)
    return wsg_err_set(err, errlen, "CLUSTER SLOTS: %s", c->errstr[0] ? c->errstr : "no reply");
  wsg_redis_slot_map *m = malloc(sizeof(*m));
  int covered = m != NULL ? wsg_redis_slot_map_parse(m, rep, host, err, errlen)
                          : wsg_err_set(err, errlen, "out of memory");
  freeReplyObject(rep);
  if (covered < 0) {
    free(m);
    return -1;
  }
  s->stats.map_reads++;
  if (s->m.map_reads != NULL)
    wsg_counter_add(s->m.map_reads, 1);
  if (s->m.primaries != NULL)
    wsg_gauge_set(s->m.primaries, m->nnodes);
  redisContext *keep[WSG_REDIS_NODES_MAX] = {0};
  for (uint32_t i = 0; i < s->map->nnodes; i++) {
    if (s->conns[i] == NULL)
      continue;
    const wsg_redis_node *n = &s->map->nodes[i];
    int j = -1;
    for (uint32_t k = 0; k < m->nnodes && j < 0; k++)
      if (m->nodes[k].port == n->port && strcmp(m->nodes[k].host, n->host) == 0)
        j = (int)k;
    if (j >= 0 && keep[j] == NULL && s->conns[i] != c)
      keep[j] = s->conns[i];
    else if (s->conns[i] != c)
      redisFree(s->conns[i]);
    s->conns[i] = NULL;
  }
  free(s->map);
  s->map = m;
  memcpy(s->conns, keep, sizeof(keep));
  s->map_stale = false;
  return 0;
}

/* CLUSTER SLOTS from a new connection to node n (copied first: the map it may live in is
 * replaced). */
static int map_read_new(wsg_redis_sync *s, const wsg_redis_node *n, char *err, size_t errlen) {
  wsg_redis_node at = *n;
  redisContext *c = node_open(s, at.host, at.port, err, errlen);
  if (c == NULL)
    return -1;
  int rc = map_read_from(s, c, at.host, err, errlen);
  redisFree(c);
  return rc;
}

/* Asks the connected nodes, then the others, until one answers CLUSTER SLOTS. */
static int map_refresh(wsg_redis_sync *s, char *err, size_t errlen) {
  char e1[256] = "no node to ask";
  for (uint32_t i = 0; i < s->map->nnodes; i++) {
    if (s->conns[i] == NULL)
      continue;
    char host[WSG_REDIS_HOST_MAX];
    snprintf(host, sizeof(host), "%s", s->map->nodes[i].host);
    redisContext *c = s->conns[i];
    int rc = map_read_from(s, c, host, e1, sizeof(e1));
    if (rc != 0)
      s->conns[i] = NULL; /* the swap did not happen: this connection is still ours */
    redisFree(c);         /* after a swap it was left out: its index may have changed */
    if (rc == 0)
      return 0;
  }
  /* Then the primaries of the last map (a seed may be the node that just failed), then the
   * seeds. */
  for (uint32_t i = 0; i < s->map->nnodes; i++)
    if (s->conns[i] == NULL && map_read_new(s, &s->map->nodes[i], e1, sizeof(e1)) == 0)
      return 0;
  for (int i = 0; i < s->nseeds; i++)
    if (map_read_new(s, &s->seeds[i], e1, sizeof(e1)) == 0)
      return 0;
  return wsg_err_set(err, errlen, "cannot read the slot map of %s: %s", s->where, e1);
}

int wsg_redis_sync_connect(wsg_redis_sync *s, char *err, size_t errlen) {
  if (s->ready)
    return 0;
  if (!s->cluster) {
    wsg_redis_slot_map_reset(s->map);
    wsg_redis_slot_map_node(s->map, s->seeds[0].host, strlen(s->seeds[0].host), s->seeds[0].port);
    memset(s->map->owner, 0, sizeof(s->map->owner));
    if (node_conn(s, 0, err, errlen) == NULL)
      return -1;
  } else if (map_refresh(s, err, errlen) != 0) {
    return -1;
  }
  s->ready = true;
  return 0;
}

int wsg_redis_sync_script_load(wsg_redis_sync *s, const char *script, char *sha, size_t shalen,
                               char *err, size_t errlen) {
  bool known = false;
  for (int i = 0; i < s->nscripts; i++)
    known |= s->scripts[i] == script;
  if (!known) {
    if (s->nscripts >= SCRIPTS_MAX)
      return wsg_err_set(err, errlen, "more than %d scripts", SCRIPTS_MAX);
    s->scripts[s->nscripts++] = script;
  }
  if (wsg_redis_sync_connect(s, err, errlen) != 0)
    return -1;
  /* One node is enough for the SHA; the others load it as they connect, or now if connected. */
  bool got = false;
  for (uint32_t i = 0; i < s->map->nnodes; i++) {
    if (s->conns[i] == NULL && (got || i + 1 < s->map->nnodes))
      continue;
    redisContext *c = node_conn(s, i, err, errlen);
    if (c == NULL || load_script(c, script, sha, shalen, err, errlen) != 0) {
      wsg_redis_sync_drop(s);
      return -1;
    }
    got = true;
  }
  return got ? 0 : wsg_err_set(err, errlen, "no node to load a script on");
}

/* --- pipelines ------------------------------------------------------------------------------ */

/* The node that runs command argv: its key's slot owner, or any connected node when it has no
 * key. -1 when no node serves the slot. */
static int route(wsg_redis_sync *s, int argc, const char **argv, const size_t *lens) {
  if (!s->cluster)
    return 0;
  int idx = wsg_redis_slot_map_route(s->map, argc, argv, lens);
  if (idx != WSG_REDIS_ROUTE_ANY)
    return idx;
  for (uint32_t i = 0; i < s->map->nnodes; i++)
    if (s->conns[i] != NULL)
      return (int)i;
  return s->map->nnodes > 0 ? 0 : -1;
}

static int flush(redisContext *c) {
  int done = 0;
  while (!done)
    if (redisBufferWrite(c, &done) != REDIS_OK)
      return -1;
  return 0;
}

/* Sends command i alone where a redirection points (ASKING first for ASK) and replaces *rep. */
static int follow(wsg_redis_sync *s, size_t i, wsg_redis_sync_build_fn build, void *ctx,
                  redisReply **rep, char *err, size_t errlen) {
  for (int hop = 0; hop < REDIRECTS_MAX; hop++) {
    wsg_redis_redirect rd;
    if ((*rep)->type != REDIS_REPLY_ERROR ||
        !wsg_redis_redirect_parse((*rep)->str, (*rep)->len, &rd))
      return 0;
    /* An empty endpoint is the node that answered; we only ever talk to loopback-or-known hosts,
     * so the first seed's host stands in for it. */
    const char *host = rd.host[0] != '\0' ? rd.host : s->seeds[0].host;
    int idx = wsg_redis_slot_map_node(s->map, host, strlen(host), rd.port);
    if (idx < 0)
      return wsg_err_set(err, errlen, "redirected to %s:%d, beyond %d nodes", host, rd.port,
                         WSG_REDIS_NODES_MAX);
    if (rd.kind == WSG_REDIS_MOVED) {
      s->map->owner[rd.slot] = (uint16_t)idx;
      s->map_stale = true;
      s->stats.moved++;
      if (s->m.moved != NULL)
        wsg_counter_add(s->m.moved, 1);
    } else {
      s->stats.ask++;
      if (s->m.ask != NULL)
        wsg_counter_add(s->m.ask, 1);
    }
    redisContext *c = node_conn(s, (uint32_t)idx, err, errlen);
    int argc;
    const char **argv;
    const size_t *lens;
    if (c == NULL || !build(ctx, i, &argc, &argv, &lens))
      return c == NULL ? -1 : wsg_err_set(err, errlen, "command %zu cannot be built", i);
    if ((rd.kind == WSG_REDIS_ASK && redisAppendCommand(c, "ASKING") != REDIS_OK) ||
        redisAppendCommandArgv(c, argc, argv, lens) != REDIS_OK)
      return wsg_err_set(err, errlen, "sending to %s:%d: %s", host, rd.port, c->errstr);
    void *r = NULL;
    if (rd.kind == WSG_REDIS_ASK) {
      if (redisGetReply(c, &r) != REDIS_OK || r == NULL)
        return wsg_err_set(err, errlen, "ASKING on %s:%d: %s", host, rd.port, c->errstr);
      freeReplyObject(r);
      r = NULL;
    }
    if (redisGetReply(c, &r) != REDIS_OK || r == NULL)
      return wsg_err_set(err, errlen, "reading from %s:%d: %s", host, rd.port, c->errstr);
    freeReplyObject(*rep);
    *rep = r;
  }
  return 0; /* still redirected after REDIRECTS_MAX hops: the caller sees the error reply */
}

int wsg_redis_sync_pipeline(wsg_redis_sync *s, size_t from, size_t to,
                            wsg_redis_sync_build_fn build, void *ctx, const char *what,
                            redisReply **reps, char *err, size_t errlen) {
  size_t n = to - from;
  for (size_t i = 0; i < n; i++)
    reps[i] = NULL;
  if (wsg_redis_sync_connect(s, err, errlen) != 0)
    return -1;
  uint16_t one[64];
  uint16_t *node_of = n <= 64 ? one : malloc(n * sizeof(*node_of));
  if (node_of == NULL)
    return wsg_err_set(err, errlen, "out of memory");
  bool used[WSG_REDIS_NODES_MAX] = {false};
  char e2[256] = "";
  int rc = 0;
  for (size_t i = 0; i < n && rc == 0; i++) {
    int argc;
    const char **argv;
    const size_t *lens;
    if (!build(ctx, from + i, &argc, &argv, &lens)) {
      rc = wsg_err_set(e2, sizeof(e2), "command %zu cannot be built", from + i);
      break;
    }
    int idx = route(s, argc, argv, lens);
    redisContext *c = idx >= 0 ? node_conn(s, (uint32_t)idx, e2, sizeof(e2)) : NULL;
    if (idx < 0)
      rc = wsg_err_set(e2, sizeof(e2), "no node serves the slot of command %zu", from + i);
    else if (c == NULL)
      rc = -1;
    else if (redisAppendCommandArgv(c, argc, argv, lens) != REDIS_OK)
      rc = wsg_err_set(e2, sizeof(e2), "%s", c->errstr);
    node_of[i] = (uint16_t)(idx < 0 ? 0 : idx);
    used[node_of[i]] = true;
  }
  /* Every node's commands leave before any reply is read: one round trip, not one per node. */
  for (uint32_t k = 0; k < s->map->nnodes && rc == 0; k++)
    if (used[k] && flush(s->conns[k]) != 0)
      rc = wsg_err_set(e2, sizeof(e2), "writing to %s:%d: %s", s->map->nodes[k].host,
                       s->map->nodes[k].port, s->conns[k]->errstr);
  for (size_t i = 0; i < n && rc == 0; i++) {
    redisContext *c = s->conns[node_of[i]];
    void *rep = NULL;
    if (redisGetReply(c, &rep) != REDIS_OK || rep == NULL)
      rc = wsg_err_set(e2, sizeof(e2), "reading replies from %s:%d: %s",
                       s->map->nodes[node_of[i]].host, s->map->nodes[node_of[i]].port,
                       c->errstr[0] ? c->errstr : "connection lost");
    reps[i] = rep;
  }
  for (size_t i = 0; i < n && rc == 0 && s->cluster; i++)
    rc = follow(s, from + i, build, ctx, &reps[i], e2, sizeof(e2));
  if (node_of != one)
    free(node_of);
  if (rc != 0) {
    for (size_t i = 0; i < n; i++) {
      if (reps[i] != NULL)
        freeReplyObject(reps[i]);
      reps[i] = NULL;
    }
    wsg_redis_sync_drop(s);
    return wsg_err_set(err, errlen, "%s on %s: %s", what, s->where, e2);
  }
  if (s->map_stale) {
    char e3[256];
    map_refresh(s, e3, sizeof(e3)); /* best effort: the MOVED already fixed the slots we use */
  }
  return 0;
}
