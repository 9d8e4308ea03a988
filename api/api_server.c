/*
 * api_server: request handling of wsgate-api (see api_server.h and docs/API.md).
 *
 * A request goes: route (404) -> key (401) -> method (405) -> rate limit (429) -> the queries
 * (info, presence, history: 200 from Redis, 400, 503) -> Idempotency-Key syntax (400) -> body
 * (400, 413, 415) -> records -> idempotency claim (202 duplicate, 409, 422, 503) -> one Kafka
 * transaction (202, or 503 with the reason and nothing accepted).
 *
 * Threads: requests run on wsg_http's threads (--threads); one that produces defers its answer
 * (the connection waits suspended, no thread held) until Kafka's outcome, which resumes it from a
 * Kafka thread (submitted); the answer is then given on a server thread (answer_submit). The rate
 * table and the keyring have their own locks; everything else they touch is read-only after
 * create.
 */
#include "api_server.h"

#include <errno.h>
#include <inttypes.h>
#include <jansson.h>
#include <openssl/sha.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include "api_channels.h"
#include "api_idem.h"
#include "api_info.h"
#include "api_kafka.h"
#include "api_keys.h"
#include "api_request.h"
#include "wsg_command.h"
#include "wsg_heartbeat.h"
#include "wsg_http.h"
#include "wsg_kafka.h"
#include "wsg_log.h"
#include "wsg_time.h"

#define IDEM_MAX 128

/* The status codes a request can get, for the requests counter. */
#define API_STATUS_MAP(X)                                                                          \
  X(200) X(202) X(400) X(401) X(404) X(405) X(409) X(413) X(415) X(422) X(429) X(503)
enum {
#define API_STATUS_ENUM(code) ST_##code,
  API_STATUS_MAP(API_STATUS_ENUM)
#undef API_STATUS_ENUM
      ST_OTHER,
  ST_COUNT
};

typedef struct {
  char name[API_KEY_NAME_MAX + 1];
  double tokens;
  uint64_t last_us;
} bucket;

struct api_server {
  const api_config *cfg;
  wsg_metrics *metrics;
  api_keyring *keys;
  api_kafka *kafka;
  api_redis *redis;
  api_idem *idem;
  wsg_http *http;
  wsg_http *ops;
  char *tls_cert, *tls_key; /* PEM text */
  uint64_t next_keys_check_ms;
  wsg_heartbeat heartbeat; /* the main loop's last turn (api_server_beat); 0 before */

  pthread_mutex_t rate_mu;
  bucket *buckets;
  size_t nbuckets;

  wsg_counter *m_status[ST_COUNT];
  wsg_counter *m_commands;
  wsg_counter *m_duplicates;
  wsg_counter *m_reload_ok, *m_reload_err;
  wsg_counter *m_presence_drops[2]; /* [0] ok, [1] error */
  wsg_gauge *m_keys;
  wsg_histogram *m_seconds;
};

#define REQS      "wsgate_api_requests_total"
#define REQS_HELP "API requests answered, by HTTP status"
#define RELOADS   "wsgate_api_key_reloads_total"
#define RELOADS_H "Reloads of the keys file (SIGHUP or a change), by outcome"
#define DROPS     "wsgate_api_presence_drops_total"
#define DROPS_H                                                                                    \
  "Deletions of dead gateway lives' presence entries by GET /v1/presence, by outcome (error: "     \
  "left to the next reader)"

static const double req_bounds[] = {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
                                    0.1,   0.25,   0.5,   1,    2.5,   10};

static const wsg_metric_def metric_rows[] = {
#define API_STATUS_ROW(code)                                                                       \
  WSG_COUNTER_ROW(api_server, m_status[ST_##code], REQS, REQS_HELP, "code=\"" #code "\""),
    API_STATUS_MAP(API_STATUS_ROW)
#undef API_STATUS_ROW
        WSG_COUNTER_ROW(api_server, m_status[ST_OTHER], REQS, REQS_HELP, "code=\"other\""),
    WSG_COUNTER_ROW(api_server, m_commands, "wsgate_api_commands_total",
                    "Commands accepted (committed to the commands topic)", NULL),
    WSG_COUNTER_ROW(api_server, m_duplicates, "wsgate_api_duplicates_total",
                    "Requests answered from their Idempotency-Key without producing again", NULL),
    WSG_COUNTER_ROW(api_server, m_reload_ok, RELOADS, RELOADS_H, "result=\"ok\""),
    WSG_COUNTER_ROW(api_server, m_reload_err, RELOADS, RELOADS_H, "result=\"error\""),
    WSG_COUNTER_ROW(api_server, m_presence_drops[0], DROPS, DROPS_H, "result=\"ok\""),
    WSG_COUNTER_ROW(api_server, m_presence_drops[1], DROPS, DROPS_H, "result=\"error\""),
    WSG_GAUGE_ROW(api_server, m_keys, "wsgate_api_keys", "API keys loaded", NULL),
    WSG_HISTOGRAM_ROW(api_server, m_seconds, "wsgate_api_request_seconds",
                      "Time from a request's body to its answer (202: committed to Kafka)", NULL,
                      req_bounds),
};

const wsg_metric_table api_server_metric_table = WSG_METRIC_TABLE("api/api_server.c", metric_rows);
extern const wsg_metric_table api_kafka_metric_table;
const wsg_metric_table *const api_metric_tables[] = {
    &api_server_metric_table, &api_kafka_metric_table, &api_redis_metric_table, NULL};

static int status_index(int status) {
  switch (status) {
#define API_STATUS_CASE(code)                                                                      \
  case code:                                                                                       \
    return ST_##code;
    API_STATUS_MAP(API_STATUS_CASE)
#undef API_STATUS_CASE
  default:
    return ST_OTHER;
  }
}

/* --- answers ------------------------------------------------------------------------------- */

static void answer_json(wsg_http_response *resp, int status, json_t *body) {
  resp->status = status;
  resp->content_type = "application/json";
  resp->body = json_dumps(body, JSON_COMPACT);
  resp->body_len = resp->body ? strlen(resp->body) : 0;
  json_decref(body);
}

static void answer_error(wsg_http_response *resp, int status, const char *field, const char *why) {
  json_t *o = json_pack("{s:s}", "error", why);
  if (o && field && field[0])
    json_object_set_new(o, "field", json_string(field));
  answer_json(resp, status, o);
}

/* --- rate limit ---------------------------------------------------------------------------- */

/* A token bucket per key name; false when the key is over its rate (retry in *retry_s). */
static bool rate_ok(api_server *s, const char *name, unsigned *retry_s) {
  if (s->cfg->rate_limit == 0)
    return true;
  uint64_t now = wsg_now_mono_us();
  double rate = (double)s->cfg->rate_limit, burst = (double)s->cfg->rate_burst;
  pthread_mutex_lock(&s->rate_mu);
  bucket *b = NULL;
  for (size_t i = 0; i < s->nbuckets && !b; i++)
    if (strcmp(s->buckets[i].name, name) == 0)
      b = &s->buckets[i];
  if (!b && s->nbuckets < API_KEYS_MAX) {
    b = &s->buckets[s->nbuckets++];
    snprintf(b->name, sizeof b->name, "%s", name);
    b->tokens = burst;
    b->last_us = now;
  }
  bool ok = true;
  if (b) {
    b->tokens += (double)(now - b->last_us) / 1e6 * rate;
    if (b->tokens > burst)
      b->tokens = burst;
    b->last_us = now;
    ok = b->tokens >= 1;
    if (ok)
      b->tokens -= 1;
    else
      *retry_s = (unsigned)((1 - b->tokens) / rate) + 1;
  }
  pthread_mutex_unlock(&s->rate_mu);
  return ok;
}

/* --- records ------------------------------------------------------------------------------- */

typedef struct {
  api_record *recs;
  size_t n, cap;
  wsg_buf *bufs; /* one encoded command per record */
} records;

static void records_finish(records *r) {
  for (size_t i = 0; i < r->n; i++)
    wsg_buf_finish(&r->bufs[i]);
  free(r->bufs);
  free(r->recs);
}

static int records_add(records *r, const wsg_command *c, int32_t partition) {
  if (r->n == r->cap) {
    size_t cap = r->cap ? r->cap * 2 : 8;
    api_record *nr = realloc(r->recs, cap * sizeof *nr);
    if (!nr)
      return -1;
    r->recs = nr;
    wsg_buf *nb = realloc(r->bufs, cap * sizeof *nb);
    if (!nb)
      return -1;
    r->bufs = nb;
    r->cap = cap;
  }
  wsg_buf *b = &r->bufs[r->n];
  wsg_buf_init(b, 0);
  const char *f;
  if (wsg_command_encode(c, b, &f) != WSG_ENV_OK) {
    wsg_buf_finish(b);
    return -1; /* checked when decoded: out of memory */
  }
  size_t klen;
  const char *key = wsg_command_key(c, &klen);
  r->recs[r->n++] = (api_record){
      .key = key, .key_len = klen, .partition = partition, .value = b->data, .len = b->len};
  return 0;
}

/*
 * The records of a batch: one per command, except a send to a list of users, split into one
 * record per partition of the commands topic (keyed by its first user) so each user's commands
 * stay in one partition, in order (docs/PROTOCOL.md, "Commands").
 */
static int build_records(api_server *s, api_batch *b, const char *id, records *r) {
  int parts = api_kafka_partitions(s->kafka);
  uint64_t ts = wsg_now_wall_us();
  for (size_t i = 0; i < b->n; i++) {
    wsg_command c = b->cmds[i];
    c.id = (wsg_cmd_str){id, strlen(id)};
    c.ts_us = ts;
    c.fields |= WSG_CF_ID | WSG_CF_TS;
    if (!(c.fields & WSG_CF_USERS) || parts < 1) {
      if (records_add(r, &c, -1) != 0)
        return -1;
      continue;
    }
    /* Group the users by partition: O(users x partitions), both small (1000, tens). The
     * strings stay where they are (the body): only the record's key points at them. */
    size_t n = c.users.count, pos = 0, k = 0;
    wsg_cmd_str *src = malloc(n * sizeof *src), *dst = malloc(n * sizeof *dst);
    int *pp = malloc(n * sizeof *pp);
    int rc = src && dst && pp ? 0 : -1;
    wsg_cmd_str u;
    while (rc == 0 && k < n && wsg_cmd_users_next(&b->cmds[i], &pos, &u) == 1) {
      pp[k] = wsg_kafka_murmur2_partition(u.ptr, u.len, parts);
      src[k++] = u;
    }
    size_t g = 0;
    for (int p = 0; rc == 0 && p < parts; p++) {
      size_t first = g;
      for (size_t j = 0; j < k; j++)
        if (pp[j] == p)
          dst[g++] = src[j];
      if (g == first)
        continue;
      c.user_list = dst + first;
      c.users.count = (uint32_t)(g - first);
      rc = records_add(r, &c, p);
    }
    free(src);
    free(dst);
    free(pp);
    if (rc != 0)
      return -1;
  }
  return 0;
}

/* --- the handler --------------------------------------------------------------------------- */

/* Routes that are no api_op: queries answered from Redis. */
enum { ROUTE_INFO = -1, ROUTE_PRESENCE = -2, ROUTE_HISTORY = -3 };

typedef struct {
  const char *path;
  int op; /* api_op, or ROUTE_* */
  const char *methods;
} route;

static const route routes[] = {
    {"/v1/send", API_OP_SEND, "POST"},       {"/v1/disconnect", API_OP_DISCONNECT, "POST"},
    {"/v1/batch", API_OP_BATCH, "POST"},     {"/v1/publish", API_OP_PUBLISH, "POST"},
    {"/v1/presence", ROUTE_PRESENCE, "GET"}, {"/v1/history", ROUTE_HISTORY, "GET"},
    {"/v1/info", ROUTE_INFO, "GET"},
};

static bool idem_valid(const char *k) {
  size_t n = strlen(k);
  if (n == 0 || n > IDEM_MAX)
    return false;
  for (size_t i = 0; i < n; i++)
    if (k[i] < 0x21 || k[i] > 0x7e || k[i] == '{' || k[i] == '}')
      return false;
  return true;
}

static void body_hash(const uint8_t *body, size_t len, char hex[33]) {
  unsigned char d[SHA256_DIGEST_LENGTH];
  SHA256(body, len, d);
  for (int i = 0; i < 16; i++)
    snprintf(hex + 2 * i, 3, "%02x", d[i]);
}

static void accepted(wsg_http_response *resp, size_t n, const char *id, bool duplicate) {
  answer_json(
      resp, 202,
      json_pack("{s:I,s:s,s:b}", "accepted", (json_int_t)n, "id", id, "duplicate", duplicate));
}

/* --- the deferred answer of a request that produced ----------------------------------------- */

/* A request waiting for Kafka. It owns the decoded batch and the records (their keys and values
 * point into those and into the request body, which wsg_http keeps until the answer). */
typedef struct {
  api_server *s;
  wsg_http_deferred *d;
  api_batch b;
  records recs;
  uint64_t t0;
  bool idem; /* `id` is the request's Idempotency-Key */
  char name[API_KEY_NAME_MAX + 1], id[IDEM_MAX + 1], hash[33];
  int rc; /* Kafka's outcome (api_kafka_done_fn) */
  char why[320];
} pending;

static void count_answer(api_server *s, wsg_http_response *resp, uint64_t t0);

/* Kafka's outcome, on a Kafka thread (or the request's, refused at once). */
static void submitted(void *arg, int rc, const char *why) {
  pending *p = arg;
  p->rc = rc;
  snprintf(p->why, sizeof p->why, "%s", why);
  wsg_http_resume(p->d);
}

/* On a server thread once resumed (resp NULL-bodied when the server is stopping: nobody to
 * answer, only the idempotency claim to release). */
static void answer_submit(void *ctx, wsg_http_response *resp) {
  pending *p = ctx;
  api_server *s = p->s;
  if (p->rc == 0) {
    char err[64];
    if (p->idem && api_idem_done(s->idem, p->name, p->id, p->hash, p->b.n, err, sizeof err) != 0)
      WSG_WARN("api", "request %s accepted, but its Idempotency-Key was not recorded: %s", p->id,
               err);
    if (s->m_commands)
      wsg_counter_add(s->m_commands, p->b.n);
    accepted(resp, p->b.n, p->id, false);
  } else {
    if (p->idem)
      api_idem_release(s->idem, p->name, p->id);
    char msg[400];
    snprintf(msg, sizeof msg, "%s; nothing of this request was accepted", p->why);
    answer_error(resp, p->rc == -2 ? 413 : 503, NULL, msg);
    if (p->rc != -2) {
      resp->headers[0][0] = "Retry-After";
      resp->headers[0][1] = "1";
    }
  }
  count_answer(s, resp, p->t0);
  records_finish(&p->recs);
  api_batch_finish(&p->b);
  free(p);
}

/* --- queries ------------------------------------------------------------------------------ */

/* The query arguments each query takes. */
static const struct {
  int op;
  const char *args[3];
} query_args[] = {
    {ROUTE_INFO, {NULL}},
    {ROUTE_PRESENCE, {"channel", "limit", NULL}},
    {ROUTE_HISTORY, {"channel", "since", "limit"}},
};

/* A decimal argument in [lo, hi]; def when absent. 0, or -1 with the answer given. */
static int uint_arg(const wsg_http_request *req, wsg_http_response *resp, const char *name,
                    uint64_t lo, uint64_t hi, uint64_t def, uint64_t *out) {
  size_t len = 0;
  const char *v = wsg_http_arg(req, name, &len);
  *out = def;
  if (!v)
    return 0;
  char *end = NULL;
  errno = 0;
  unsigned long long x = v[0] >= '0' && v[0] <= '9' ? strtoull(v, &end, 10) : 0;
  if (!end || *end || (size_t)(end - v) != len || errno || x < lo || x > hi) {
    char why[160];
    snprintf(why, sizeof why, "%s must be an integer from %llu to %llu", name,
             (unsigned long long)lo, (unsigned long long)hi);
    answer_error(resp, 400, name, why);
    return -1;
  }
  *out = x;
  return 0;
}

/* The arguments of a query: only the known ones, a valid channel. 0, or -1 answered. */
static int query_check(int op, const wsg_http_request *req, wsg_http_response *resp,
                       const char **channel, size_t *chlen) {
  const char *const *known = NULL;
  for (size_t i = 0; i < sizeof query_args / sizeof query_args[0]; i++)
    if (query_args[i].op == op)
      known = query_args[i].args;
  const char *names[8];
  size_t n = wsg_http_arg_names(req, names, 8);
  if (n > 8) {
    answer_error(resp, 400, "", "too many query arguments (docs/API.md)");
    return -1;
  }
  for (size_t i = 0; i < n; i++) {
    bool ok = false;
    for (size_t k = 0; k < 3 && known && known[k] && !ok; k++)
      ok = strcmp(names[i], known[k]) == 0;
    if (!ok) {
      char why[200];
      snprintf(why, sizeof why, "unknown query argument \"%.64s\" (docs/API.md)", names[i]);
      answer_error(resp, 400, names[i], why);
      return -1;
    }
  }
  if (op == ROUTE_INFO)
    return 0;
  *channel = wsg_http_arg(req, "channel", chlen);
  if (!*channel || *chlen == 0) {
    answer_error(resp, 400, "channel", "give the channel: ?channel=<name> (URL-encoded)");
    return -1;
  }
  if (strlen(*channel) != *chlen || !wsg_channel_name_valid(*channel, *chlen)) {
    char why[160];
    snprintf(why, sizeof why,
             "channel must be 1..%d bytes of UTF-8 without control characters "
             "(docs/PROTOCOL.md, \"Channels\")",
             WSG_MAX_CHANNEL_LEN);
    answer_error(resp, 400, "channel", why);
    return -1;
  }
  return 0;
}

/* A presence read's DROP of dead gateway lives: counted; a failure logged, at most once a second
 * per HTTP thread (a Redis in trouble fails every read: one line per read would flood the log). */
static void presence_cleanup_done(api_server *s, const char *ch, size_t chlen,
                                  const api_presence_cleanup *c) {
  static _Thread_local wsg_log_ratelimit rl; /* wsg_log_ratelimit is one thread's */
  if (!c->dropped)
    return;
  wsg_counter_add(s->m_presence_drops[c->drop_failed], 1);
  if (c->drop_failed)
    wsg_log_limited(&rl, 1, wsg_now_mono_ms(), WSG_LOG_WARN, "api",
                    "presence of %.*s: deleting dead gateways' entries failed (left to the next "
                    "reader): %s",
                    (int)chlen, ch, c->drop_why);
}

/* GET /v1/info, /v1/presence, /v1/history: 200 from Redis, 400, or 503 with the reason. */
static void query(api_server *s, int op, const wsg_http_request *req, wsg_http_response *resp) {
  const char *ch = NULL;
  size_t chlen = 0;
  uint64_t limit = 0, since = 0;
  if (query_check(op, req, resp, &ch, &chlen) != 0)
    return;
  char why[300];
  json_t *out = NULL;
  api_presence_cleanup cleanup;
  switch (op) {
  case ROUTE_INFO:
    out = api_info_read(s->redis, api_kafka_slots(s->kafka), why, sizeof why);
    break;
  case ROUTE_PRESENCE:
    if (uint_arg(req, resp, "limit", 1, API_PRESENCE_LIMIT_MAX, API_PRESENCE_LIMIT_DEFAULT,
                 &limit) != 0)
      return;
    out = api_presence_read(s->redis, ch, chlen, (size_t)limit, &cleanup, why, sizeof why);
    presence_cleanup_done(s, ch, chlen, &cleanup);
    break;
  default:
    if (uint_arg(req, resp, "limit", 1, API_HISTORY_LIMIT_MAX, API_HISTORY_LIMIT_DEFAULT, &limit) !=
            0 ||
        uint_arg(req, resp, "since", 0, (uint64_t)INT64_MAX, 0, &since) != 0)
      return;
    out = api_history_read(s->redis, ch, chlen, since, (size_t)limit, why, sizeof why);
    break;
  }
  if (out) {
    answer_json(resp, 200, out);
    return;
  }
  char msg[400];
  snprintf(msg, sizeof msg, "redis: %s", why);
  answer_error(resp, 503, NULL, msg);
  resp->headers[0][0] = "Retry-After";
  resp->headers[0][1] = "1";
}

/* Answers the request in resp, or defers the answer (Kafka) and returns true. */
static bool serve(api_server *s, const wsg_http_request *req, wsg_http_response *resp,
                  uint64_t t0) {
  const route *rt = NULL;
  for (size_t i = 0; i < sizeof routes / sizeof routes[0] && !rt; i++)
    if (strcmp(req->path, routes[i].path) == 0)
      rt = &routes[i];
  if (!rt) {
    answer_error(resp, 404, NULL, "no such endpoint (docs/API.md)");
    return false;
  }
  char name[API_KEY_NAME_MAX + 1];
  if (!api_keyring_auth(s->keys, wsg_http_header(req, "Authorization"), name, sizeof name)) {
    answer_error(resp, 401, NULL, "send a valid API key: Authorization: Bearer <key>");
    resp->headers[0][0] = "WWW-Authenticate";
    resp->headers[0][1] = "Bearer realm=\"wsgate-api\"";
    return false;
  }
  if (strcmp(req->method, rt->methods) != 0) {
    char why[64];
    snprintf(why, sizeof why, "use %s", rt->methods);
    answer_error(resp, 405, NULL, why);
    return false;
  }
  unsigned retry = 1;
  if (!rate_ok(s, name, &retry)) {
    static __thread char ra[16];
    snprintf(ra, sizeof ra, "%u", retry);
    answer_error(resp, 429, NULL, "over this key's rate limit (--rate-limit); retry later");
    resp->headers[0][0] = "Retry-After";
    resp->headers[0][1] = ra;
    return false;
  }
  if (rt->op < 0) {
    query(s, rt->op, req, resp);
    return false;
  }
  const char *idem = wsg_http_header(req, "Idempotency-Key");
  if (idem && !idem_valid(idem)) {
    answer_error(resp, 400, "Idempotency-Key",
                 "Idempotency-Key must be 1..128 printable ASCII characters without braces");
    return false;
  }
  char field[64], why[300];
  api_batch b;
  int rc = api_request_decode(&b, (api_op)rt->op, wsg_http_header(req, "Content-Type"), req->body,
                              req->body_len, (size_t)s->cfg->max_batch, s->cfg->max_payload, field,
                              sizeof field, why, sizeof why);
  if (rc != 0) {
    api_batch_finish(&b);
    answer_error(resp, rc, field, why);
    return false;
  }
  char id[IDEM_MAX + 1], hash[33];
  if (idem) {
    snprintf(id, sizeof id, "%s", idem);
  } else {
    uint64_t r[2] = {0, 0};
    if (getrandom(r, sizeof r, 0) != (ssize_t)sizeof r)
      r[0] = wsg_now_wall_us();
    snprintf(id, sizeof id, "%016" PRIx64 "%016" PRIx64, r[0], r[1]);
  }
  records recs = {0};
  if (build_records(s, &b, id, &recs) != 0) {
    answer_error(resp, 503, NULL, "out of memory");
    goto out;
  }
  if (idem) {
    size_t count = 0;
    body_hash(req->body, req->body_len, hash);
    switch (api_idem_claim(s->idem, name, idem, hash, &count, why, sizeof why)) {
    case API_IDEM_NEW:
      break;
    case API_IDEM_DONE:
      if (s->m_duplicates)
        wsg_counter_add(s->m_duplicates, 1);
      accepted(resp, count, id, true);
      goto out;
    case API_IDEM_PENDING:
      answer_error(resp, 409, "Idempotency-Key",
                   "a request with this Idempotency-Key is in progress; retry later");
      goto out;
    case API_IDEM_MISMATCH:
      answer_error(resp, 422, "Idempotency-Key",
                   "this Idempotency-Key was used with another body; use a new key");
      goto out;
    default: {
      char msg[400];
      snprintf(msg, sizeof msg, "redis: %s (needed for the Idempotency-Key; nothing accepted)",
               why);
      answer_error(resp, 503, NULL, msg);
      goto out;
    }
    }
  }
  pending *p = malloc(sizeof *p);
  if (!p) {
    if (idem)
      api_idem_release(s->idem, name, idem);
    answer_error(resp, 503, NULL, "out of memory");
    goto out;
  }
  *p = (pending){.s = s, .b = b, .recs = recs, .t0 = t0, .idem = idem != NULL};
  snprintf(p->name, sizeof p->name, "%s", name);
  snprintf(p->id, sizeof p->id, "%s", id);
  if (idem)
    memcpy(p->hash, hash, sizeof hash);
  p->d = wsg_http_defer(req, answer_submit, p);
  api_kafka_submit(s->kafka, p->recs.recs, p->recs.n, submitted, p);
  return true; /* p owns b and recs */
out:
  records_finish(&recs);
  api_batch_finish(&b);
  return false;
}

/* Counts the answer (a body json_dumps could not make becomes an empty 503). */
static void count_answer(api_server *s, wsg_http_response *resp, uint64_t t0) {
  if (!resp->body) {
    resp->status = 503;
    resp->content_type = "text/plain";
  }
  wsg_counter *c = s->m_status[status_index(resp->status)];
  if (c)
    wsg_counter_add(c, 1);
  if (s->m_seconds)
    wsg_histogram_observe(s->m_seconds, (double)(wsg_now_mono_us() - t0) / 1e6);
}

static void handle(void *arg, const wsg_http_request *req, wsg_http_response *resp) {
  api_server *s = arg;
  uint64_t t0 = wsg_now_mono_us();
  if (serve(s, req, resp, t0))
    return; /* answered by answer_submit */
  count_answer(s, resp, t0);
  WSG_DEBUG("api", "%s %s -> %d", req->method, req->path, resp->status);
}

/* --- life cycle ---------------------------------------------------------------------------- */

void api_server_beat(api_server *s) {
  wsg_heartbeat_beat(&s->heartbeat);
}

/* /healthz, on an ops thread: the main loop (signals, keys-file reloads) turns every 50 ms; one
 * that has not for --liveness-stall is wedged (e.g. reading a keys file on a hung volume). The
 * request threads are not watched: a slow Kafka shows in /readyz and in 503 answers instead. */
static int alive(void *arg, char *why, size_t whylen) {
  api_server *s = arg;
  return wsg_heartbeat_check(&s->heartbeat, wsg_now_mono_ms(), s->cfg->http.liveness_stall_ms,
                             "main loop", why, whylen);
}

static int ready(void *arg, char *why, size_t whylen) {
  api_server *s = arg;
  return api_kafka_status(s->kafka, why, whylen);
}

static char *read_pem(const char *path, char *err, size_t errlen) {
  FILE *f = fopen(path, "rb");
  if (!f) {
    snprintf(err, errlen, "cannot read %s: %s", path, strerror(errno));
    return NULL;
  }
  size_t cap = 1 << 20, len;
  char *buf = malloc(cap + 1);
  len = buf ? fread(buf, 1, cap, f) : 0;
  fclose(f);
  if (!buf || len == 0 || len == cap) {
    snprintf(err, errlen, "%s is empty, unreadable or over 1 MiB", path);
    free(buf);
    return NULL;
  }
  buf[len] = '\0';
  return buf;
}

void api_server_check_keys(api_server *s, bool force) {
  char err[400];
  int rc = api_keyring_reload(s->keys, force, err, sizeof err);
  if (rc > 0) {
    WSG_INFO("api", "keys file reloaded: %zu keys", api_keyring_count(s->keys));
    if (s->m_reload_ok)
      wsg_counter_add(s->m_reload_ok, 1);
  } else if (rc < 0) {
    WSG_ERROR("api", "%s; the keys loaded before stay in use", err);
    if (s->m_reload_err)
      wsg_counter_add(s->m_reload_err, 1);
  }
  if (s->m_keys)
    wsg_gauge_set(s->m_keys, (int64_t)api_keyring_count(s->keys));
}

int api_server_create(api_server **out, const api_config *cfg, char *err, size_t errlen) {
  *out = NULL;
  api_server *s = calloc(1, sizeof *s);
  if (!s) {
    snprintf(err, errlen, "out of memory");
    return -1;
  }
  s->cfg = cfg;
  pthread_mutex_init(&s->rate_mu, NULL);
  s->buckets = calloc(API_KEYS_MAX, sizeof *s->buckets);
  s->metrics = wsg_metrics_create();
  if (!s->buckets || !s->metrics) {
    snprintf(err, errlen, "out of memory");
    goto fail;
  }
  wsg_metrics_register_table(s->metrics, &api_server_metric_table, s);
  if (api_keyring_create(&s->keys, cfg->keys_file, err, errlen) != 0) {
    api_server_destroy(s);
    return -2;
  }
  if (s->m_keys)
    wsg_gauge_set(s->m_keys, (int64_t)api_keyring_count(s->keys));
  if (cfg->tls_cert && (!(s->tls_cert = read_pem(cfg->tls_cert, err, errlen)) ||
                        !(s->tls_key = read_pem(cfg->tls_key, err, errlen)))) {
    api_server_destroy(s);
    return -2;
  }
  api_redis_options ro = {.host = cfg->redis.host,
                          .port = (int)cfg->redis.port,
                          .cluster = cfg->redis.cluster,
                          .user = cfg->redis.user,
                          .password = cfg->redis.password,
                          .db = (int)cfg->redis.db,
                          .prefix = cfg->redis.prefix,
                          .timeout_ms = cfg->redis.timeout_ms,
                          .metrics = s->metrics};
  if (api_redis_create(&s->redis, &ro, err, errlen) != 0 ||
      api_idem_create(&s->idem, s->redis, cfg->idempotency_ttl_ms, err, errlen) != 0)
    goto fail;
  api_kafka_options ko = {.brokers = cfg->kafka.brokers,
                          .props = &cfg->kafka.props,
                          .topic = cfg->commands_topic,
                          .outbound = cfg->outbound_topic,
                          .txn_timeout_ms = cfg->txn_timeout_ms,
                          .metrics = s->metrics};
  if (api_kafka_create(&s->kafka, &ko, err, errlen) != 0)
    goto fail;
  wsg_http_options ho = {.addr = cfg->listen_addr,
                         .port = (int)cfg->listen_port,
                         .name = "API",
                         .handler = handle,
                         .handler_arg = s,
                         .max_body = cfg->max_body,
                         .max_header = 8192,
                         .max_clients = (unsigned)cfg->max_clients,
                         .timeout_s = 60,
                         .threads = (unsigned)cfg->threads,
                         .tls_cert_pem = s->tls_cert,
                         .tls_key_pem = s->tls_key};
  if (wsg_http_start(&s->http, &ho, err, errlen) != 0)
    goto fail;
  wsg_http_options oo = {.addr = cfg->http.addr,
                         .port = (int)cfg->http.port,
                         .metrics = s->metrics,
                         .ready = ready,
                         .ready_arg = s,
                         .health = alive,
                         .health_arg = s};
  if (wsg_http_start(&s->ops, &oo, err, errlen) != 0)
    goto fail;
  *out = s;
  return 0;
fail:
  api_server_destroy(s);
  return -1;
}

void api_server_destroy(api_server *s) {
  if (!s)
    return;
  /* Kafka first: every request waiting for it gets its outcome (and is resumed), which
   * wsg_http_stop needs; then no request runs past wsg_http_stop. */
  api_kafka_shutdown(s->kafka);
  wsg_http_stop(s->http);
  wsg_http_stop(s->ops);
  api_kafka_destroy(s->kafka);
  api_idem_destroy(s->idem);
  api_redis_destroy(s->redis);
  api_keyring_destroy(s->keys);
  free(s->tls_cert);
  free(s->tls_key);
  free(s->buckets);
  pthread_mutex_destroy(&s->rate_mu);
  wsg_metrics_destroy(s->metrics);
  free(s);
}

int api_server_port(const api_server *s) {
  return wsg_http_port(s->http);
}

int api_server_ops_port(const api_server *s) {
  return wsg_http_port(s->ops);
}
