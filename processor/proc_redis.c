/*
 * proc_redis: the one file of the processor that talks to Redis (hiredis, synchronous):
 * routing lookups for a batch, the gateway cache, lazy clean-up of dead gateways' entries and
 * handlers' pipelines.
 *
 * Threads: the consumer thread, except proc_redis_status() (any thread; a mutex guards the
 * status line it reads).
 */
#include "proc_redis.h"

#include <errno.h>
#include <hiredis/hiredis.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "proc_metrics.h"
#include "proc_redis_reply.h"
#include "proc_util.h"
#include "wsg_err.h"
#include "wsg_log.h"
#include "wsg_redis_keys.h"
#include "wsg_redis_sync.h"
#include "wsg_time.h"

/* Commands appended before their replies are read: bounds one round trip's memory
 * (docs/notes/hiredis.md#pipeline-bound). */
#define PIPELINE_CHUNK 1024
/* Reconnect backoff after a failed connect: from the first step, doubling to the last. */
#define BACKOFF_MIN_MS 100
#define BACKOFF_MAX_MS 5000
/* Gateways remembered at once. A cluster has at most as many as outbound partitions; garbage ids
 * in user hashes must not grow it without bound. */
#define GW_CACHE_MAX 4096
/* Gateways one resolve may see; entries naming more distinct gateways count as bad. */
#define RESOLVE_GW_MAX 4096
/* Longest key prefix: with the longest id and kind it still fits WSG_REDIS_KEY_MAX. */
#define PREFIX_MAX 200

typedef struct {
  char id[WSG_MAX_GATEWAY_LEN + 1];
  uint16_t len;
  bool used;
  bool alive;
  int32_t slot;
  uint64_t expires_ms;
} gw_cache_entry;

struct proc_redis {
  wsg_redis_sync *rs; /* owned: one node or a Redis Cluster, behind one pipeline call */
  char *prefix;
  uint64_t timeout_ms;
  uint64_t cache_ttl_ms;
  int32_t slots;
  uint64_t backoff_ms;
  uint64_t next_attempt_ms;

  gw_cache_entry *cache; /* open addressing, GW_CACHE_MAX * 2 slots */
  size_t cache_cap;
  size_t cache_used;

  uint32_t resume_window;
  char resume_window_text[16], resume_ttl_text[24], resume_seq_ttl_text[24];
  char append_sha[48]; /* SHA1 of the append script on the current connection, "" until loaded */

  pthread_mutex_t status_lock;
  bool status_ok;
  uint64_t down_since_ms; /* when status_ok last turned false */
  char status[256];

  wsg_log_ratelimit bad_rl;

  wsg_counter *m_user_lookups;
  wsg_counter *m_gw_lookups;
  wsg_counter *m_cache_hits;
  wsg_counter *m_handler_cmds;
  wsg_counter *m_errors;
  wsg_counter *m_stale_seen;
  wsg_counter *m_stale_removed;
  wsg_counter *m_bad_entries;
  wsg_counter *m_appends;
  wsg_counter *m_append_refused;
  wsg_counter *m_append_unsequenced;
  wsg_histogram *m_rtt;
  wsg_redis_cluster_metrics m_cluster;
};

static void set_status(proc_redis *r, bool ok, const char *msg) {
  pthread_mutex_lock(&r->status_lock);
  if (r->status_ok && !ok)
    r->down_since_ms = wsg_now_mono_ms();
  r->status_ok = ok;
  snprintf(r->status, sizeof(r->status), "%s", msg ? msg : "");
  pthread_mutex_unlock(&r->status_lock);
}

int proc_redis_status(proc_redis *r, char *why, size_t whylen) {
  pthread_mutex_lock(&r->status_lock);
  bool ok = r->status_ok;
  if (!ok && why && whylen)
    snprintf(why, whylen, "redis: %s", r->status);
  pthread_mutex_unlock(&r->status_lock);
  return ok ? 0 : -1;
}

int proc_redis_failing(proc_redis *r, uint64_t now_ms, uint64_t grace_ms, char *why,
                       size_t whylen) {
  pthread_mutex_lock(&r->status_lock);
  /* A failure noted after the caller read its clock has lasted 0 ms. */
  uint64_t failed_for = wsg_elapsed(now_ms, r->down_since_ms);
  bool failing = !r->status_ok && failed_for >= grace_ms;
  if (failing && why && whylen)
    snprintf(why, whylen, "redis: %s (failing for %" PRIu64 " ms, --unready-after)", r->status,
             failed_for);
  pthread_mutex_unlock(&r->status_lock);
  return failing ? -1 : 0;
}

#define COUNTER(f, name, help, labels) WSG_COUNTER_ROW(proc_redis, f, name, help, labels)

#define LOOKUPS      "wsgate_processor_redis_lookups_total"
#define LOOKUPS_HELP "Redis reads made to route: users' connections and gateways' records"

static const double rtt_bounds[] = {0.0001, 0.00025, 0.0005, 0.001, 0.0025,
                                    0.005,  0.01,    0.025,  0.05,  0.1};

static const wsg_metric_def metric_rows[] = {
    COUNTER(m_user_lookups, LOOKUPS, LOOKUPS_HELP, "kind=\"user\""),
    COUNTER(m_gw_lookups, LOOKUPS, LOOKUPS_HELP, "kind=\"gateway\""),
    COUNTER(m_cache_hits, "wsgate_processor_gateway_cache_hits_total",
            "Gateway lookups answered from the cache", NULL),
    COUNTER(m_handler_cmds, "wsgate_processor_redis_handler_commands_total",
            "Redis commands handlers ran through wsgate_redis()", NULL),
    COUNTER(m_errors, "wsgate_processor_redis_errors_total",
            "Failed Redis connects and round trips", NULL),
    COUNTER(m_stale_seen, "wsgate_processor_stale_connections_total",
            "Connection entries skipped because their gateway's lease is gone (nothing is "
            "produced for them)",
            NULL),
    COUNTER(m_stale_removed, "wsgate_processor_stale_connections_removed_total",
            "Connection entries of gateways whose lease expired, removed by processors", NULL),
    COUNTER(m_bad_entries, "wsgate_processor_bad_connection_entries_total",
            "user:<id> hash fields that are not <conn id> -> <live gateway id> with a valid slot",
            NULL),
    COUNTER(m_appends, "wsgate_processor_resume_appends_total",
            "Deliveries to users numbered and stored in their replay streams", NULL),
    COUNTER(m_append_refused, "wsgate_processor_resume_append_refused_total",
            "Deliveries Redis refused to store (sent without q): a key of another type under the "
            "prefix",
            NULL),
    COUNTER(m_append_unsequenced, "wsgate_processor_resume_unsequenced_total",
            "Deliveries to users without a sequence (no resumable connection within "
            "--resume-seq-ttl): sent without q, nothing stored",
            NULL),
    WSG_HISTOGRAM_ROW(proc_redis, m_rtt, "wsgate_processor_redis_round_trip_seconds",
                      "Duration of one pipelined Redis round trip", NULL, rtt_bounds),
    WSG_REDIS_CLUSTER_METRIC_ROWS(proc_redis, m_cluster, "wsgate_processor"),
};

const wsg_metric_table proc_redis_metric_table =
    WSG_METRIC_TABLE("processor/proc_redis.c", metric_rows);

static void count(wsg_counter *c, uint64_t n) {
  if (c && n)
    wsg_counter_add(c, n);
}

int proc_redis_create(proc_redis **out, const proc_redis_options *o, char *err, size_t errlen) {
  *out = NULL;
  if (!o->host || !o->prefix || o->port <= 0 || o->port > 65535) {
    wsg_err_set(err, errlen, "redis: a host, a port (1..65535) and a key prefix are required");
    return -1;
  }
  /* Every key is <prefix><kind>:<id>; ids are at most WSG_MAX_USER_LEN bytes. */
  if (strlen(o->prefix) > PREFIX_MAX) {
    wsg_err_set(err, errlen, "--redis-prefix is longer than %d bytes", PREFIX_MAX);
    return -1;
  }
  proc_redis *r = calloc(1, sizeof(*r));
  if (!r) {
    wsg_err_set(err, errlen, "redis: out of memory");
    return -1;
  }
  pthread_mutex_init(&r->status_lock, NULL);
  r->status_ok = true;
  r->prefix = strdup(o->prefix);
  r->cache_cap = GW_CACHE_MAX * 2;
  r->cache = calloc(r->cache_cap, sizeof(gw_cache_entry));
  if (!r->prefix || !r->cache) {
    proc_redis_destroy(r);
    wsg_err_set(err, errlen, "redis: out of memory");
    return -1;
  }
  r->timeout_ms = o->timeout_ms ? o->timeout_ms : 2000;
  wsg_metrics_register_table(o->metrics, &proc_redis_metric_table, r);
  wsg_redis_sync_options so = {.host = o->host,
                               .port = o->port,
                               .seeds = o->cluster_seeds,
                               .user = o->user,
                               .password = o->password,
                               .db = o->db,
                               .timeout_ms = r->timeout_ms,
                               .metrics = r->m_cluster};
  char e2[200];
  if (wsg_redis_sync_create(&r->rs, &so, e2, sizeof(e2)) != 0) {
    proc_redis_destroy(r);
    wsg_err_set(err, errlen, "redis: %s", e2);
    return -1;
  }
  r->cache_ttl_ms = o->gateway_cache_ttl_ms;
  r->slots = o->slots;
  r->backoff_ms = BACKOFF_MIN_MS;
  r->resume_window = o->resume_window;
  snprintf(r->resume_window_text, sizeof(r->resume_window_text), "%" PRIu32, o->resume_window);
  snprintf(r->resume_ttl_text, sizeof(r->resume_ttl_text), "%" PRIu64, o->resume_ttl_ms);
  snprintf(r->resume_seq_ttl_text, sizeof(r->resume_seq_ttl_text), "%" PRIu64,
           o->resume_seq_ttl_ms > o->resume_ttl_ms ? o->resume_seq_ttl_ms : o->resume_ttl_ms);

  *out = r;
  return 0;
}

void proc_redis_destroy(proc_redis *r) {
  if (!r)
    return;
  wsg_redis_sync_destroy(r->rs);
  free(r->prefix);
  free(r->cache);
  pthread_mutex_destroy(&r->status_lock);
  free(r);
}

const char *proc_redis_prefix(const proc_redis *r) {
  return r->prefix;
}

/* --- connection ---------------------------------------------------------------------------- */

static void disconnect(proc_redis *r, const char *why) {
  wsg_redis_sync_drop(r->rs);
  r->append_sha[0] = '\0'; /* a new connection may reach a server that never saw the script */
  count(r->m_errors, 1);
  set_status(r, false, why);
}

/* Marks the connection broken after an error (msg says what and where); the next command
 * reconnects. */
static void io_failed(proc_redis *r, const char *msg, char *err, size_t errlen) {
  if (r->status_ok)
    WSG_WARN("redis", "%s", msg);
  disconnect(r, msg);
  wsg_err_set(err, errlen, "redis: %s", msg);
}

static int ensure_connected(proc_redis *r, char *err, size_t errlen) {
  if (wsg_redis_sync_connected(r->rs))
    return 0;
  uint64_t now = wsg_now_mono_ms();
  if (now < r->next_attempt_ms) {
    char why[256];
    proc_redis_status(r, why, sizeof(why));
    wsg_err_set(err, errlen, "%s (next connect attempt in %" PRIu64 " ms)", why,
                r->next_attempt_ms - now);
    return -1;
  }
  char msg[256];
  if (wsg_redis_sync_connect(r->rs, msg, sizeof(msg)) != 0) {
    r->next_attempt_ms = now + r->backoff_ms;
    r->backoff_ms = r->backoff_ms * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : r->backoff_ms * 2;
    io_failed(r, msg, err, errlen);
    return -1;
  }
  r->backoff_ms = BACKOFF_MIN_MS;
  r->next_attempt_ms = 0;
  bool was_down = !r->status_ok;
  set_status(r, true, "");
  if (was_down)
    WSG_INFO("redis", "connected to %s again", wsg_redis_sync_where(r->rs));
  else
    WSG_DEBUG("redis", "connected to %s", wsg_redis_sync_where(r->rs));
  return 0;
}

int proc_redis_connect(proc_redis *r, char *err, size_t errlen) {
  return ensure_connected(r, err, errlen);
}

/* One command of a pipeline; argv and lens are borrowed until the next build. */
typedef struct {
  int argc;
  const char **argv;
  const size_t *lens;
} pipe_cmd;

/* Builds command i into *cmd; false if it cannot be built (treated like a failed send). */
typedef bool (*pipe_build_fn)(proc_redis *r, void *ctx, size_t i, pipe_cmd *cmd);

typedef struct {
  proc_redis *r;
  pipe_build_fn build;
  void *ctx;
} pipe_adapter;

static bool build_adapted(void *ctx, size_t i, int *argc, const char ***argv, const size_t **lens) {
  pipe_adapter *a = ctx;
  pipe_cmd cmd;
  if (!a->build(a->r, a->ctx, i, &cmd))
    return false;
  *argc = cmd.argc;
  *argv = cmd.argv;
  *lens = cmd.lens;
  return true;
}

/*
 * The one pipelined round trip: runs commands [from, to) made by build() (on a cluster, one
 * pipeline per node, all written before any reply is read), reads their replies into
 * reps[0 .. to-from) and, with `measure`, observes the round trip's duration. On an I/O error
 * (`what` names the commands in the message) the connection is marked broken, reps[] is
 * NULL-filled and -1 returned. The caller frees the replies.
 */
static int round_trip(proc_redis *r, size_t from, size_t to, pipe_build_fn build, void *ctx,
                      const char *what, bool measure, redisReply **reps, char *err, size_t errlen) {
  pipe_adapter a = {r, build, ctx};
  char msg[256];
  uint64_t t0 = wsg_now_mono_us();
  if (wsg_redis_sync_pipeline(r->rs, from, to, build_adapted, &a, what, reps, msg, sizeof(msg)) !=
      0) {
    io_failed(r, msg, err, errlen);
    return -1;
  }
  if (measure && r->m_rtt)
    wsg_histogram_observe(r->m_rtt, (double)(wsg_now_mono_us() - t0) / 1e6);
  return 0;
}

/* --- handlers' commands -------------------------------------------------------------------- */

static bool build_handler_cmd(proc_redis *r, void *ctx, size_t i, pipe_cmd *cmd) {
  (void)r;
  const wsgate_redis_cmd *c = (const wsgate_redis_cmd *)ctx + i;
  *cmd = (pipe_cmd){c->argc, (const char **)c->argv, c->argvlen};
  return true;
}

int proc_redis_command(proc_redis *r, const wsgate_redis_cmd *cmds, size_t n,
                       const wsgate_redis_reply **replies, void **block, char *err, size_t errlen) {
  int rc = proc_redis_pipeline(r, cmds, n, replies, block, err, errlen);
  if (rc == WSGATE_OK)
    count(r->m_handler_cmds, n);
  return rc;
}

int proc_redis_pipeline(proc_redis *r, const wsgate_redis_cmd *cmds, size_t n,
                        const wsgate_redis_reply **replies, void **block, char *err,
                        size_t errlen) {
  *block = NULL;
  if (n == 0 || n > WSGATE_MAX_REDIS_COMMANDS || !cmds || !replies) {
    wsg_err_set(err, errlen, "a pipeline holds 1..%d commands", WSGATE_MAX_REDIS_COMMANDS);
    return WSGATE_E_INVAL;
  }
  for (size_t i = 0; i < n; i++) {
    if (cmds[i].argc < 1 || !cmds[i].argv) {
      wsg_err_set(err, errlen, "command %zu has no arguments", i);
      return WSGATE_E_INVAL;
    }
    for (int a = 0; a < cmds[i].argc; a++) {
      if (!cmds[i].argv[a]) {
        wsg_err_set(err, errlen, "command %zu: argument %d is NULL", i, a);
        return WSGATE_E_INVAL;
      }
    }
  }
  if (ensure_connected(r, err, errlen) != 0)
    return WSGATE_E_REDIS;
  redisReply **reps = calloc(n, sizeof(*reps));
  if (!reps) {
    wsg_err_set(err, errlen, "out of memory");
    return WSGATE_E_NOMEM;
  }
  if (round_trip(r, 0, n, build_handler_cmd, (void *)cmds, "sending a handler's commands", true,
                 reps, err, errlen) != 0) {
    free(reps);
    return WSGATE_E_REDIS;
  }

  int rc =
      proc_redis_reply_convert((const redisReply *const *)reps, n, replies, block, err, errlen);
  for (size_t i = 0; i < n; i++)
    freeReplyObject(reps[i]);
  free(reps);
  return rc;
}

/* --- resume ------------------------------------------------------------------------------- */

/* SCRIPT LOAD once per connection: the append runs per delivery, and EVALSHA sends 40 bytes
 * (docs/notes/hiredis.md#script-cache). */
static int load_append_script(proc_redis *r, char *err, size_t errlen) {
  if (r->append_sha[0])
    return 0;
  char msg[256];
  if (wsg_redis_sync_script_load(r->rs, WSG_LUA_REPLAY_APPEND, r->append_sha, sizeof(r->append_sha),
                                 msg, sizeof(msg)) != 0) {
    r->append_sha[0] = '\0';
    io_failed(r, msg, err, errlen);
    return -1;
  }
  return 0;
}

typedef struct {
  const proc_strref *users;
  const proc_append *a;
  char skey[WSG_REDIS_KEY_MAX], qkey[WSG_REDIS_KEY_MAX];
  const char *argv[10];
  size_t lens[10];
} append_ctx;

static bool build_append(proc_redis *r, void *ctx, size_t i, pipe_cmd *cmd) {
  append_ctx *c = ctx;
  const proc_append *a = &c->a[i];
  const proc_strref *u = &c->users[a->user];
  /* Users were validated by the handler API and the prefix is bounded: the keys fit. An empty
   * key still keeps the pipeline aligned (Redis refuses it, and it gets q 0). */
  int slen = wsg_key_replay(c->skey, sizeof(c->skey), r->prefix, u->ptr, u->len);
  int qlen = wsg_key_replay_seq(c->qkey, sizeof(c->qkey), r->prefix, u->ptr, u->len);
  const char *argv[] = {"EVALSHA",
                        r->append_sha,
                        "2",
                        c->skey,
                        c->qkey,
                        r->resume_window_text,
                        r->resume_ttl_text,
                        r->resume_seq_ttl_text,
                        a->binary ? "b" : "d",
                        a->data ? (const char *)a->data : ""};
  size_t lens[] = {7,
                   strlen(r->append_sha),
                   1,
                   (size_t)(slen > 0 ? slen : 0),
                   (size_t)(qlen > 0 ? qlen : 0),
                   strlen(r->resume_window_text),
                   strlen(r->resume_ttl_text),
                   strlen(r->resume_seq_ttl_text),
                   1,
                   a->len};
  memcpy(c->argv, argv, sizeof(argv));
  memcpy(c->lens, lens, sizeof(lens));
  *cmd = (pipe_cmd){10, c->argv, c->lens};
  return true;
}

int proc_redis_append(proc_redis *r, const proc_strref *users, proc_append *a, size_t n, char *err,
                      size_t errlen) {
  for (size_t i = 0; i < n; i++)
    a[i].q = 0;
  if (n == 0 || r->resume_window == 0)
    return 0;
  if (ensure_connected(r, err, errlen) != 0 || load_append_script(r, err, errlen) != 0)
    return -1;
  redisReply **reps = calloc(n < PIPELINE_CHUNK ? n : PIPELINE_CHUNK, sizeof(*reps));
  if (!reps) {
    wsg_err_set(err, errlen, "out of memory storing %zu deliveries", n);
    return -1;
  }
  int rc = 0;
  uint64_t refused = 0, unsequenced = 0;
  append_ctx ctx = {.users = users, .a = a};
  for (size_t from = 0; from < n && rc == 0; from += PIPELINE_CHUNK) {
    size_t to = from + PIPELINE_CHUNK < n ? from + PIPELINE_CHUNK : n;
    if (round_trip(r, from, to, build_append, &ctx, "sending the replay appends", true, reps, err,
                   errlen) != 0) {
      rc = -1;
      break;
    }
    for (size_t i = from; i < to; i++) {
      redisReply *rep = reps[i - from];
      if (rep->type == REDIS_REPLY_INTEGER && rep->integer > 0) {
        a[i].q = (uint64_t)rep->integer;
      } else if (rep->type == REDIS_REPLY_INTEGER && rep->integer == 0) {
        unsequenced++; /* no counter: the user never connected with +seq (sent without q) */
      } else if (rep->type == REDIS_REPLY_ERROR && strncmp(rep->str, "NOSCRIPT", 8) == 0) {
        /* SCRIPT FLUSH while connected: load it again and retry the batch. */
        r->append_sha[0] = '\0';
        rc = -1;
        wsg_err_set(err, errlen, "redis: the replay append script was flushed; reloading");
      } else {
        refused++;
        wsg_log_limited(&r->bad_rl, 1, wsg_now_mono_ms(), WSG_LOG_WARN, "redis",
                        "storing a delivery to %.*s for resume failed: %s; sent without q",
                        (int)users[a[i].user].len, users[a[i].user].ptr,
                        rep->type == REDIS_REPLY_ERROR ? rep->str : "unexpected reply");
      }
      freeReplyObject(rep);
      reps[i - from] = NULL;
    }
  }
  free(reps);
  count(r->m_appends, rc == 0 ? n - refused - unsequenced : 0);
  count(r->m_append_refused, refused);
  count(r->m_append_unsequenced, unsequenced);
  return rc;
}

/* --- gateway cache ------------------------------------------------------------------------- */

static gw_cache_entry *cache_slot(proc_redis *r, const char *id, size_t len, bool *found) {
  size_t mask = r->cache_cap - 1;
  size_t i = (size_t)proc__hash(id, len) & mask;
  for (;;) {
    gw_cache_entry *e = &r->cache[i];
    if (!e->used) {
      *found = false;
      return e;
    }
    if (e->len == len && memcmp(e->id, id, len) == 0) {
      *found = true;
      return e;
    }
    i = (i + 1) & mask;
  }
}

void proc_redis_cache_clear(proc_redis *r) {
  memset(r->cache, 0, r->cache_cap * sizeof(gw_cache_entry));
  r->cache_used = 0;
}

/* Stores a lookup result. When the cache is full it is emptied: only garbage ids can fill it, and
 * the live gateways are re-read on the next batch. */
static void cache_put(proc_redis *r, const char *id, size_t len, bool alive, int32_t slot,
                      uint64_t now_ms) {
  if (r->cache_ttl_ms == 0)
    return;
  bool found;
  gw_cache_entry *e = cache_slot(r, id, len, &found);
  if (!found) {
    if (r->cache_used >= GW_CACHE_MAX) {
      proc_redis_cache_clear(r);
      e = cache_slot(r, id, len, &found);
    }
    memcpy(e->id, id, len);
    e->id[len] = '\0';
    e->len = (uint16_t)len;
    e->used = true;
    r->cache_used++;
  }
  e->alive = alive;
  e->slot = slot;
  e->expires_ms = now_ms + r->cache_ttl_ms;
}

/* --- routing ------------------------------------------------------------------------------- */

void proc_routes_init(proc_routes *rt) {
  memset(rt, 0, sizeof(*rt));
}

void proc_routes_finish(proc_routes *rt) {
  free(rt->targets);
  free(rt->first);
  free(rt->count);
  free(rt->gws);
  free(rt->gw_index);
  memset(rt, 0, sizeof(*rt));
}

static int routes_reset(proc_routes *rt, size_t users) {
  rt->ntargets = 0;
  rt->ngws = 0;
  rt->stale = rt->removed = rt->bad = rt->bad_slot = 0;
  size_t ucap = rt->users_cap;
  if (users > ucap) {
    size_t ncap = ucap ? ucap : 64;
    while (ncap < users)
      ncap *= 2;
    uint32_t *f = realloc(rt->first, ncap * sizeof(uint32_t));
    if (!f)
      return -1;
    rt->first = f;
    uint32_t *c = realloc(rt->count, ncap * sizeof(uint32_t));
    if (!c)
      return -1;
    rt->count = c;
    rt->users_cap = ncap;
  }
  if (!rt->gw_index) {
    rt->gw_index_cap = RESOLVE_GW_MAX * 2;
    rt->gw_index = calloc(rt->gw_index_cap, sizeof(uint32_t));
    if (!rt->gw_index)
      return -1;
  } else {
    memset(rt->gw_index, 0, rt->gw_index_cap * sizeof(uint32_t));
  }
  return 0;
}

/* The index of gateway `id` in rt->gws, adding it (slot unknown: -1) if new. -1 if the per-resolve
 * limit is reached or out of memory. */
static int64_t intern_gw(proc_routes *rt, const char *id, size_t len) {
  size_t mask = rt->gw_index_cap - 1;
  size_t i = (size_t)proc__hash(id, len) & mask;
  for (;;) {
    uint32_t v = rt->gw_index[i];
    if (v == 0)
      break;
    proc_route_gw *g = &rt->gws[v - 1];
    if (g->len == len && memcmp(g->id, id, len) == 0)
      return v - 1;
    i = (i + 1) & mask;
  }
  if (rt->ngws >= RESOLVE_GW_MAX)
    return -1;
  if (proc__reserve((void **)&rt->gws, &rt->gws_cap, rt->ngws + 1, sizeof(proc_route_gw)) != 0)
    return -1;
  proc_route_gw *g = &rt->gws[rt->ngws];
  memcpy(g->id, id, len);
  g->id[len] = '\0';
  g->len = (uint16_t)len;
  g->slot = -1;
  rt->gw_index[i] = (uint32_t)(rt->ngws + 1);
  return (int64_t)rt->ngws++;
}

/* A connection id as Redis holds it: decimal, no sign, no leading zeros beyond "0", fits 64 bits.
 */
static bool parse_conn_id(const char *s, size_t len, uint64_t *out) {
  if (len == 0 || len > 20 || (len > 1 && s[0] == '0'))
    return false;
  uint64_t v = 0;
  for (size_t i = 0; i < len; i++) {
    if (s[i] < '0' || s[i] > '9')
      return false;
    unsigned d = (unsigned)(s[i] - '0');
    if (v > (UINT64_MAX - d) / 10)
      return false;
    v = v * 10 + d;
  }
  *out = v;
  return true;
}

static bool parse_slot(const char *s, size_t len, int32_t *out) {
  uint64_t v;
  if (!parse_conn_id(s, len, &v) || v > INT32_MAX)
    return false;
  *out = (int32_t)v;
  return true;
}

/* A raw entry of a user hash, kept until the gateways are known. */
typedef struct {
  uint32_t user;
  uint32_t gw;
  uint64_t conn;
} raw_entry;

typedef struct {
  raw_entry *v;
  size_t n, cap;
} raw_list;

/* Scratch of one command built for a pipeline: a key and the arguments pointing at it. */
typedef struct {
  const void *in; /* the caller's items: users, gateway indices or raw entries */
  const proc_strref *users;
  const proc_routes *rt;
  char key[WSG_REDIS_KEY_MAX], conn[24];
  const char *argv[6];
  size_t lens[6];
} key_cmd;

/* Copies argc arguments into k (the compound literals die with the builder) and points cmd at
 * them. Returns true. */
static bool key_cmd_set(key_cmd *k, pipe_cmd *cmd, int argc, const char **argv,
                        const size_t *lens) {
  memcpy(k->argv, argv, (size_t)argc * sizeof(*argv));
  memcpy(k->lens, lens, (size_t)argc * sizeof(*lens));
  *cmd = (pipe_cmd){argc, k->argv, k->lens};
  return true;
}

static bool build_hgetall(proc_redis *r, void *ctx, size_t i, pipe_cmd *cmd) {
  key_cmd *k = ctx;
  const proc_strref *u = &k->users[i];
  /* Users were validated by the handler API (length, UTF-8) and the prefix is bounded at
   * creation, so every key fits; an empty key still keeps the pipeline aligned. */
  int klen = wsg_key_user(k->key, sizeof(k->key), r->prefix, u->ptr, u->len);
  return key_cmd_set(k, cmd, 2, (const char *[]){"HGETALL", k->key},
                     (const size_t[]){7, (size_t)(klen > 0 ? klen : 0)});
}

/* Sends HGETALL for users [from, to) and parses the replies into `raw`. */
static int read_users(proc_redis *r, const proc_strref *users, size_t from, size_t to,
                      proc_routes *rt, raw_list *raw, redisReply **reps, char *err, size_t errlen) {
  key_cmd k = {.users = users};
  if (round_trip(r, from, to, build_hgetall, &k, "sending HGETALL", true, reps, err, errlen) != 0)
    return -1;
  count(r->m_user_lookups, to - from);

  int rc = 0;
  for (size_t i = from; i < to; i++) {
    redisReply *rep = reps[i - from];
    if (rep->type != REDIS_REPLY_ARRAY || rep->elements % 2 != 0) {
      /* WRONGTYPE or the like: someone else's data under our prefix. Not a connection error. */
      rt->bad++;
      continue;
    }
    for (size_t e = 0; e + 1 < rep->elements; e += 2) {
      redisReply *f = rep->element[e], *v = rep->element[e + 1];
      uint64_t conn;
      if (f->type != REDIS_REPLY_STRING || v->type != REDIS_REPLY_STRING ||
          !parse_conn_id(f->str, f->len, &conn) || v->len == 0 || v->len > WSG_MAX_GATEWAY_LEN ||
          !wsg_utf8_valid(v->str, v->len)) {
        rt->bad++;
        continue;
      }
      int64_t gw = intern_gw(rt, v->str, v->len);
      if (gw < 0) {
        rt->bad++;
        continue;
      }
      if (proc__reserve((void **)&raw->v, &raw->cap, raw->n + 1, sizeof(raw_entry)) != 0) {
        wsg_err_set(err, errlen, "out of memory routing %zu users", to - from);
        rc = -2;
        break;
      }
      raw->v[raw->n++] = (raw_entry){.user = (uint32_t)i, .gw = (uint32_t)gw, .conn = conn};
    }
    if (rc != 0)
      break;
  }
  for (size_t i = 0; i < to - from; i++) {
    freeReplyObject(reps[i]);
    reps[i] = NULL;
  }
  return rc;
}

static bool build_hget_slot(proc_redis *r, void *ctx, size_t i, pipe_cmd *cmd) {
  key_cmd *k = ctx;
  const size_t *todo = k->in;
  int klen = wsg_key_gateway(k->key, sizeof(k->key), r->prefix, k->rt->gws[todo[i]].id);
  key_cmd_set(k, cmd, 3, (const char *[]){"HGET", k->key, "slot"},
              (const size_t[]){4, (size_t)(klen > 0 ? klen : 0), 4});
  return klen >= 0;
}

/* Fills gws[].slot (-1: lease gone, -2: bad slot) from the cache or one pipelined HGET each. */
static int read_gateways(proc_redis *r, proc_routes *rt, uint64_t now_ms, redisReply **reps,
                         char *err, size_t errlen) {
  size_t *todo = malloc((rt->ngws ? rt->ngws : 1) * sizeof(size_t));
  if (!todo) {
    wsg_err_set(err, errlen, "out of memory");
    return -2;
  }
  size_t ntodo = 0;
  for (size_t g = 0; g < rt->ngws; g++) {
    bool found;
    gw_cache_entry *e = cache_slot(r, rt->gws[g].id, rt->gws[g].len, &found);
    if (found && r->cache_ttl_ms && e->expires_ms > now_ms) {
      rt->gws[g].slot = e->alive ? e->slot : -1;
      count(r->m_cache_hits, 1);
      continue;
    }
    todo[ntodo++] = g;
  }
  int rc = 0;
  key_cmd k = {.in = todo, .rt = rt};
  for (size_t from = 0; from < ntodo && rc == 0; from += PIPELINE_CHUNK) {
    size_t to = from + PIPELINE_CHUNK < ntodo ? from + PIPELINE_CHUNK : ntodo;
    if (round_trip(r, from, to, build_hget_slot, &k, "sending HGET", true, reps, err, errlen) !=
        0) {
      rc = -1;
      break;
    }
    count(r->m_gw_lookups, to - from);
    for (size_t i = from; i < to; i++) {
      redisReply *rep = reps[i - from];
      proc_route_gw *g = &rt->gws[todo[i]];
      int32_t slot;
      if (rep->type == REDIS_REPLY_NIL) {
        g->slot = -1;
        cache_put(r, g->id, g->len, false, -1, now_ms);
      } else if (rep->type == REDIS_REPLY_STRING && parse_slot(rep->str, rep->len, &slot)) {
        g->slot = slot;
        cache_put(r, g->id, g->len, true, slot, now_ms);
      } else {
        /* The record exists but holds no usable slot: alive, yet unreachable. Not cached, so a
         * gateway that is still writing its record is read again next batch. */
        g->slot = -2;
      }
      freeReplyObject(rep);
      reps[i - from] = NULL;
    }
  }
  free(todo);
  return rc;
}

static bool build_conn_delete(proc_redis *r, void *ctx, size_t i, pipe_cmd *cmd) {
  key_cmd *k = ctx;
  const raw_entry *e = ((const raw_entry *const *)k->in)[i];
  const proc_route_gw *g = &k->rt->gws[e->gw];
  const proc_strref *u = &k->users[e->user];
  int klen = wsg_key_user(k->key, sizeof(k->key), r->prefix, u->ptr, u->len);
  int clen = wsg_conn_id_format(k->conn, sizeof(k->conn), e->conn);
  return key_cmd_set(
      k, cmd, 6, (const char *[]){"EVAL", WSG_LUA_CONN_DELETE, "1", k->key, k->conn, g->id},
      (const size_t[]){4, strlen(WSG_LUA_CONN_DELETE), 1, (size_t)klen, (size_t)clen, g->len});
}

/* Deletes the entries of dead gateways (compare-and-delete: a reconnect that re-registered the
 * same connection id elsewhere keeps its new entry). Failures only leave the entries for later. */
static void remove_stale(proc_redis *r, const proc_strref *users, const raw_list *raw,
                         proc_routes *rt, redisReply **reps) {
  const raw_entry **stale = malloc((rt->stale ? rt->stale : 1) * sizeof(*stale));
  if (!stale)
    return;
  size_t n = 0;
  for (size_t i = 0; i < raw->n; i++)
    if (rt->gws[raw->v[i].gw].slot == -1)
      stale[n++] = &raw->v[i];
  key_cmd k = {.in = stale, .users = users, .rt = rt};
  for (size_t from = 0; from < n; from += PIPELINE_CHUNK) {
    size_t to = from + PIPELINE_CHUNK < n ? from + PIPELINE_CHUNK : n;
    if (round_trip(r, from, to, build_conn_delete, &k, "sending the stale-entry clean-up", false,
                   reps, NULL, 0) != 0)
      break;
    for (size_t i = 0; i < to - from; i++) {
      if (reps[i]->type == REDIS_REPLY_INTEGER && reps[i]->integer > 0)
        rt->removed++;
      freeReplyObject(reps[i]);
      reps[i] = NULL;
    }
  }
  free(stale);
}

static int cmp_raw_user(const void *a, const void *b) {
  const raw_entry *x = a, *y = b;
  if (x->user != y->user)
    return x->user < y->user ? -1 : 1;
  return x->conn < y->conn ? -1 : x->conn > y->conn;
}

int proc_redis_resolve(proc_redis *r, const proc_strref *users, size_t n, uint64_t now_ms,
                       proc_routes *rt, char *err, size_t errlen) {
  if (n > UINT32_MAX) {
    wsg_err_set(err, errlen, "too many users in one batch");
    return -1;
  }
  if (routes_reset(rt, n) != 0) {
    wsg_err_set(err, errlen, "out of memory routing %zu users", n);
    return -1;
  }
  for (size_t i = 0; i < n; i++)
    rt->first[i] = rt->count[i] = 0;
  if (n == 0)
    return 0;
  if (ensure_connected(r, err, errlen) != 0)
    return -1;

  redisReply **reps = calloc(PIPELINE_CHUNK, sizeof(*reps));
  raw_list raw = {0};
  int rc = reps ? 0 : -2;
  for (size_t from = 0; from < n && rc == 0; from += PIPELINE_CHUNK) {
    size_t to = from + PIPELINE_CHUNK < n ? from + PIPELINE_CHUNK : n;
    rc = read_users(r, users, from, to, rt, &raw, reps, err, errlen);
  }
  if (rc == 0)
    rc = read_gateways(r, rt, now_ms, reps, err, errlen);
  if (rc == 0) {
    for (size_t i = 0; i < raw.n; i++) {
      int32_t slot = rt->gws[raw.v[i].gw].slot;
      if (slot == -1)
        rt->stale++;
      else if (slot < 0 || slot >= r->slots)
        rt->bad_slot++;
    }
    if (rt->stale)
      remove_stale(r, users, &raw, rt, reps);
    count(r->m_stale_seen, rt->stale);
    count(r->m_stale_removed, rt->removed);
    count(r->m_bad_entries, rt->bad + rt->bad_slot);
    if (rt->bad + rt->bad_slot)
      wsg_log_limited(&r->bad_rl, 1, now_ms, WSG_LOG_WARN, "redis",
                      "%" PRIu64 " connection entries skipped: %" PRIu64
                      " not <conn id> -> <gateway id>, %" PRIu64
                      " naming a gateway whose slot is outside the %" PRId32 " outbound partitions",
                      rt->bad + rt->bad_slot, rt->bad, rt->bad_slot, r->slots);

    /* Live targets, grouped by user (qsort keeps the output independent of hash order). */
    if (raw.n > 1)
      qsort(raw.v, raw.n, sizeof(raw_entry), cmp_raw_user);
    if (proc__reserve((void **)&rt->targets, &rt->targets_cap, raw.n ? raw.n : 1,
                      sizeof(proc_target)) != 0) {
      wsg_err_set(err, errlen, "out of memory routing %zu users", n);
      rc = -2;
    } else {
      for (size_t i = 0; i < raw.n; i++) {
        const raw_entry *e = &raw.v[i];
        int32_t slot = rt->gws[e->gw].slot;
        if (slot < 0 || slot >= r->slots)
          continue;
        if (rt->count[e->user] == 0)
          rt->first[e->user] = (uint32_t)rt->ntargets;
        rt->count[e->user]++;
        rt->targets[rt->ntargets++] = (proc_target){.gw = e->gw, .conn = e->conn};
      }
    }
  }
  free(raw.v);
  free(reps);
  if (rc == -2) {
    /* Not a Redis failure: report it as one anyway so the batch is retried, not half-routed. */
    return -1;
  }
  return rc;
}

int proc_redis_gateways(proc_redis *r, const proc_strref *ids, size_t n, uint64_t now_ms,
                        proc_routes *rt, char *err, size_t errlen) {
  if (routes_reset(rt, 0) != 0) {
    wsg_err_set(err, errlen, "out of memory");
    return -1;
  }
  for (size_t i = 0; i < n; i++)
    if (intern_gw(rt, ids[i].ptr, ids[i].len) < 0) {
      wsg_err_set(err, errlen, "more than %d gateways in one lookup", RESOLVE_GW_MAX);
      return -1;
    }
  if (rt->ngws == 0)
    return 0;
  if (ensure_connected(r, err, errlen) != 0)
    return -1;
  redisReply **reps = calloc(PIPELINE_CHUNK, sizeof(*reps));
  int rc = reps ? read_gateways(r, rt, now_ms, reps, err, errlen) : -1;
  free(reps);
  for (size_t g = 0; rc == 0 && g < rt->ngws; g++)
    if (rt->gws[g].slot >= r->slots)
      rt->gws[g].slot = -2;
  return rc == 0 ? 0 : -1;
}
