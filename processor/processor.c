/*
 * processor: the wsgate-processor loop (see processor.h).
 *
 * Threads: proc_processor_run() runs on the caller's thread, the consumer thread, which owns the
 * handler, the router's Redis connection and the outbox. The operations endpoint's thread calls
 * ready() and alive() only, which read atomics (consumer state, the router's status line under its
 * mutex, the heartbeat).
 */
#include "processor.h"

#include <errno.h>
#include <inttypes.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "proc_commands.h"
#include "proc_consumer.h"
#include "proc_direct.h"
#include "proc_handler.h"
#include "proc_metrics.h"
#include "proc_outbox.h"
#include "proc_redis.h"
#include "wsg_config.h"
#include "wsg_dframe.h"
#include "wsg_envelope.h"
#include "wsg_heartbeat.h"
#include "wsg_http.h"
#include "wsg_log.h"
#include "wsg_metrics.h"
#include "wsg_time.h"

/* A batch's outbox is routed and produced early past these, so one batch of large fan-outs cannot
 * hold unbounded memory. */
#define FLUSH_OUTPUTS 20000
#define FLUSH_BYTES   (16u << 20)
/* Retry backoff while Redis is down or a handler asks for a retry. */
#define RETRY_MIN_MS 100
#define RETRY_MAX_MS 5000
/* Bad input is logged at most this often per kind (the counters have the totals). */
#define BAD_LOG_PER_SEC 5

struct proc_processor {
  const proc_config *cfg;
  wsg_metrics *metrics;
  proc_handler *handler;
  proc_commands *cmds; /* the commands topic's executor */
  proc_consumer *cons;
  proc_redis *router;
  proc_direct *direct; /* NULL without --direct-secret-file */
  wsg_http *http;
  proc_outbox *box;
  wsg_chns *chns;      /* namespaces' options (--channel-namespace) */
  proc_publisher *pub; /* numbers and stores publications (proc_publish) */
  proc_routes routes;
  proc_record *recs;
  size_t batch_max;
  size_t max_record;
  proc_dispatch_env denv;
  /* Since when (monotonic ms) a record or a batch has been waiting for Redis or the handler;
   * 0: none is. */
  _Atomic uint64_t retrying_since_ms;
  /* When the consumer loop last turned (beat()), 0 outside proc_processor_run: /healthz fails once
   * it is older than --liveness-stall, e.g. a handler stuck in a call. */
  wsg_heartbeat heartbeat;

  wsg_log_ratelimit rl_decode;
  wsg_log_ratelimit rl_reject;
  wsg_log_ratelimit rl_error;
  wsg_log_ratelimit rl_route;

  wsg_counter *m_kind[WSG_ENV_KIND_LAST + 1];
  wsg_counter *m_bad_envelopes;
  wsg_counter *m_commands;
  wsg_counter *m_ok;
  wsg_counter *m_rejected;
  wsg_counter *m_errors;
  wsg_counter *m_retries;
  wsg_counter *m_skipped;
  wsg_counter *m_deliveries;
  wsg_counter *m_undeliverable;
  wsg_counter *m_fallbacks;
  wsg_counter *m_encode_errors;
  wsg_histogram *m_batch_size;
  wsg_histogram *m_batch_seconds;
  wsg_histogram *m_hop_handler;
  wsg_histogram *m_hop_command;
};

static void count(wsg_counter *c, uint64_t n) {
  if (c && n)
    wsg_counter_add(c, n);
}

#define ENVELOPES      "wsgate_processor_envelopes_total"
#define ENVELOPES_HELP "Inbound envelopes decoded, by type"
#define PROCESSED      "wsgate_processor_processed_total"
#define PROCESSED_HELP "Envelopes handed to the handler, by outcome"

static const double hop_bounds[] = WSG_HOP_BOUNDS;
static const double batch_sizes[] = {1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000};
static const double batch_secs[] = {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025,
                                    0.05,   0.1,   0.25,   0.5,   1,    2.5};

static const wsg_metric_def metric_rows[] = {
    WSG_COUNTER_ROW(proc_processor, m_kind[WSG_ENV_MSG], ENVELOPES, ENVELOPES_HELP, "type=\"msg\""),
    WSG_COUNTER_ROW(proc_processor, m_kind[WSG_ENV_CONNECT], ENVELOPES, ENVELOPES_HELP,
                    "type=\"connect\""),
    WSG_COUNTER_ROW(proc_processor, m_kind[WSG_ENV_DISCONNECT], ENVELOPES, ENVELOPES_HELP,
                    "type=\"disconnect\""),
    WSG_COUNTER_ROW(proc_processor, m_kind[WSG_ENV_DELIVER], ENVELOPES, ENVELOPES_HELP,
                    "type=\"deliver\""),
    WSG_COUNTER_ROW(proc_processor, m_kind[WSG_ENV_CLOSE], ENVELOPES, ENVELOPES_HELP,
                    "type=\"close\""),
    WSG_COUNTER_ROW(proc_processor, m_kind[WSG_ENV_SUB_REQUEST], ENVELOPES, ENVELOPES_HELP,
                    "type=\"subscribe_request\""),
    WSG_COUNTER_ROW(proc_processor, m_bad_envelopes, "wsgate_processor_bad_envelopes_total",
                    "Inbound records that are not a valid envelope", NULL),
    WSG_COUNTER_ROW(proc_processor, m_commands, "wsgate_processor_commands_total",
                    "Records read from the commands topic (their outcomes are in "
                    "wsgate_processor_processed_total)",
                    NULL),
    WSG_COUNTER_ROW(proc_processor, m_ok, PROCESSED, PROCESSED_HELP, "result=\"ok\""),
    WSG_COUNTER_ROW(proc_processor, m_rejected, PROCESSED, PROCESSED_HELP, "result=\"rejected\""),
    WSG_COUNTER_ROW(proc_processor, m_errors, PROCESSED, PROCESSED_HELP, "result=\"error\""),
    WSG_COUNTER_ROW(proc_processor, m_retries, "wsgate_processor_retries_total",
                    "Handler calls and batch routings retried (Redis down, or the handler asked)",
                    NULL),
    WSG_COUNTER_ROW(proc_processor, m_skipped, "wsgate_processor_skipped_total",
                    "Records dropped because their partition was reassigned while they waited "
                    "(the new owner handles them)",
                    NULL),
    WSG_COUNTER_ROW(proc_processor, m_deliveries, "wsgate_processor_deliveries_total",
                    "Connections addressed by outbound envelopes", NULL),
    WSG_COUNTER_ROW(proc_processor, m_undeliverable, "wsgate_processor_undeliverable_total",
                    "Sends to a user without any connection on a gateway with a live lease "
                    "(nothing produced)",
                    NULL),
    WSG_COUNTER_ROW(proc_processor, m_fallbacks, "wsgate_processor_fallback_replies_total",
                    "Fallback replies sent because the target user was offline", NULL),
    WSG_COUNTER_ROW(proc_processor, m_encode_errors, "wsgate_processor_encode_errors_total",
                    "Outbound envelopes that could not be encoded (a bug)", NULL),
    WSG_HISTOGRAM_ROW(proc_processor, m_batch_size, "wsgate_processor_batch_records",
                      "Inbound records per batch", NULL, batch_sizes),
    WSG_HISTOGRAM_ROW(proc_processor, m_batch_seconds, "wsgate_processor_batch_seconds",
                      "Time to handle, route and produce one batch (not counting "
                      "acknowledgements)",
                      NULL, batch_secs),
    WSG_HISTOGRAM_ROW(
        proc_processor, m_hop_handler, "wsgate_processor_hop_handler_start_seconds",
        "Hop 2: from the gateway reading a frame (the envelope's ts) to the handler's "
        "start on it: hop 1 plus the consumer's fetch and the batch ahead of it.",
        NULL, hop_bounds),
    WSG_HISTOGRAM_ROW(
        proc_processor, m_hop_command, "wsgate_processor_hop_command_start_seconds",
        "Hop 2 of a command (the commands topic): from its acceptance (its ts: wsgate-api's 202 "
        "or the backend's produce) to the executor's start on it.",
        NULL, hop_bounds),
};

const wsg_metric_table proc_processor_metric_table =
    WSG_METRIC_TABLE("processor/processor.c", metric_rows);

/* Consumer thread: once per poll, per record and per retry wait. */
static void beat(proc_processor *p) {
  wsg_heartbeat_beat(&p->heartbeat);
}

/* HTTP thread. Not before the loop runs nor while it stops (bounded by --shutdown-timeout). */
static int alive(void *arg, char *why, size_t whylen) {
  proc_processor *p = arg;
  return wsg_heartbeat_check(&p->heartbeat, wsg_now_mono_ms(), p->cfg->http.liveness_stall_ms,
                             "consumer loop", why, whylen);
}

/* Redis failing and records waiting count only once they have lasted --unready-after
 * (docs/ARCHITECTURE.md, "Availability while Redis fails over"). */
static int ready(void *arg, char *why, size_t whylen) {
  proc_processor *p = arg;
  if (proc_consumer_ready(p->cons, why, whylen) != 0)
    return -1;
  uint64_t now = wsg_now_mono_ms(), grace = p->cfg->unready_after_ms;
  if (proc_redis_failing(p->router, now, grace, why, whylen) != 0)
    return -1;
  /* `since` may be later than `now` (a retry that began after the clock reading, or within its
   * millisecond: the `| 1`). */
  uint64_t since = atomic_load(&p->retrying_since_ms);
  if (since != 0 && wsg_elapsed(now, since) >= grace) {
    snprintf(why, whylen,
             "retrying a record or batch Redis or its handler could not take for %" PRIu64
             " ms (--unready-after)",
             wsg_elapsed(now, since));
    return -1;
  }
  return 0;
}

static void retry_begin(proc_processor *p) {
  if (atomic_load(&p->retrying_since_ms) == 0)
    atomic_store(&p->retrying_since_ms, wsg_now_mono_ms() | 1); /* never 0 */
}

static int start_direct(proc_processor *p, const proc_config *cfg, char *err, size_t errlen) {
  uint8_t *secret = NULL;
  size_t slen = 0;
  if (wsg_config_read_secret("--direct-secret-file", cfg->direct_secret_file, WSG_DFRAME_SECRET_MAX,
                             &secret, &slen, err, errlen) != 0)
    return -1;
  proc_direct_options o = {
      .secret = secret,
      .secret_len = slen,
      .connect_timeout_ms = cfg->direct_connect_timeout_ms,
      .ack_timeout_ms = cfg->direct_ack_timeout_ms,
      .backoff_ms = cfg->direct_backoff_ms,
      .lookup_ttl_ms = cfg->gateway_cache_ttl_ms,
      .max_unacked = (size_t)cfg->direct_max_unacked,
      .cons = p->cons,
      .router = p->router,
      .metrics = p->metrics,
  };
  int rc = proc_direct_create(&p->direct, &o, err, errlen);
  explicit_bzero(secret, slen);
  free(secret);
  if (rc == 0)
    WSG_INFO("main", "direct replies on: to gateways with a direct listener, Kafka otherwise");
  return rc;
}

int proc_processor_create(proc_processor **out, const proc_config *cfg,
                          const volatile sig_atomic_t *stop, char *err, size_t errlen) {
  *out = NULL;
  proc_processor *p = calloc(1, sizeof(*p));
  if (!p) {
    snprintf(err, errlen, "out of memory");
    return -1;
  }
  p->cfg = cfg;
  p->batch_max = (size_t)cfg->batch_max;
  proc_routes_init(&p->routes);
  p->metrics = wsg_metrics_create();
  p->box = proc_outbox_create();
  p->cmds = proc_commands_create();
  p->recs = calloc(p->batch_max, sizeof(proc_record));
  if (!p->metrics || !p->box || !p->cmds || !p->recs) {
    snprintf(err, errlen, "out of memory");
    goto fail;
  }
  wsg_metrics_register_table(p->metrics, &proc_processor_metric_table, p);

  /* The handler first: a bad --handler or --handler-arg is a configuration error (exit 2) and
   * should not wait for Kafka to be reachable to be reported. */
  if (proc_handler_open(&p->handler, cfg->handler, cfg->handler_arg, err, errlen) != 0) {
    proc_processor_destroy(p);
    return -2;
  }

  proc_consumer_options co = {
      .brokers = cfg->kafka.brokers,
      .props = &cfg->kafka.props,
      .group_id = cfg->group_id,
      .group_instance_id = cfg->group_instance_id,
      .inbound_topic = cfg->inbound_topic,
      .outbound_topic = cfg->outbound_topic,
      .dead_letter_topic = cfg->dead_letter_topic,
      .commands_topic = cfg->commands_topic,
      .commit_interval_ms = cfg->commit_interval_ms,
      .revoke_timeout_ms = cfg->revoke_timeout_ms,
      .max_in_flight = (size_t)cfg->max_in_flight,
      .topic_timeout_ms = 10000,
      .stop = stop,
      .metrics = p->metrics,
  };
  if (proc_consumer_create(&p->cons, &co, err, errlen) != 0)
    goto fail;
  p->max_record = proc_consumer_max_record(p->cons);

  proc_redis_options ro = {
      .host = cfg->redis.host,
      .port = (int)cfg->redis.port,
      .password = cfg->redis.password,
      .user = cfg->redis.user,
      .cluster_seeds = cfg->redis.cluster,
      .db = (int)cfg->redis.db,
      .prefix = cfg->redis.prefix,
      .timeout_ms = cfg->redis.timeout_ms,
      .gateway_cache_ttl_ms = cfg->gateway_cache_ttl_ms,
      .slots = proc_consumer_outbound_partitions(p->cons),
      .metrics = p->metrics,
      .resume_window = (uint32_t)cfg->resume_window,
      .resume_ttl_ms = cfg->resume_ttl_ms,
      .resume_seq_ttl_ms = cfg->resume_seq_ttl_ms,
  };
  if (proc_redis_create(&p->router, &ro, err, errlen) != 0)
    goto fail;
  /* Not required at start: an echo processor never needs Redis, and a chat processor retries
   * until Redis is there. Said once here so an operator sees it. */
  char rerr[256];
  if (wsg_chns_resolve(&cfg->channels, &p->chns, err, errlen) != 0 ||
      !(p->pub = proc_publisher_create(p->router, p->chns, p->metrics))) {
    if (p->chns)
      snprintf(err, errlen, "out of memory");
    goto fail;
  }
  if (cfg->direct_secret_file && cfg->direct_secret_file[0] &&
      start_direct(p, cfg, err, errlen) != 0)
    goto fail;
  if (proc_redis_connect(p->router, rerr, sizeof(rerr)) != 0)
    WSG_WARN("redis", "%s; sends to users wait until it is reachable", rerr);

  p->denv = (proc_dispatch_env){
      .box = p->box,
      .router = p->router,
      .prefix = proc_redis_prefix(p->router),
      .max_payload = cfg->max_payload,
  };

  wsg_http_options ho = {
      .addr = cfg->http.addr,
      .port = (int)cfg->http.port,
      .metrics = p->metrics,
      .ready = ready,
      .ready_arg = p,
      .health = alive,
      .health_arg = p,
  };
  if (wsg_http_start(&p->http, &ho, err, errlen) != 0)
    goto fail;
  WSG_INFO("main",
           "handler %s; reading %s as group %s; %" PRId32
           " outbound partitions; operations endpoint on port %d",
           proc_handler_name(p->handler), cfg->inbound_topic, cfg->group_id,
           proc_consumer_outbound_partitions(p->cons), wsg_http_port(p->http));
  *out = p;
  return 0;

fail:
  proc_processor_destroy(p);
  return -1;
}

int proc_processor_http_port(const proc_processor *p) {
  return p->http ? wsg_http_port(p->http) : -1;
}

void proc_processor_destroy(proc_processor *p) {
  if (!p)
    return;
  wsg_http_stop(p->http);
  proc_direct_destroy(p->direct); /* before the consumer its tickets belong to */
  proc_consumer_destroy(p->cons);
  proc_publisher_destroy(p->pub);
  wsg_chns_destroy(p->chns);
  proc_redis_destroy(p->router);
  proc_handler_close(p->handler);
  proc_outbox_destroy(p->box);
  proc_commands_destroy(p->cmds);
  proc_routes_finish(&p->routes);
  free(p->recs);
  wsg_metrics_destroy(p->metrics);
  free(p);
}

/* --- retries ------------------------------------------------------------------------------- */

/* Waits `*backoff` ms (then doubles it), keeping deliveries and commits going. Returns -1 if a
 * stop was requested meanwhile. */
static int backoff_wait(proc_processor *p, uint64_t *backoff, const volatile sig_atomic_t *stop) {
  uint64_t until = wsg_now_mono_ms() + *backoff;
  *backoff = *backoff * 2 > RETRY_MAX_MS ? RETRY_MAX_MS : *backoff * 2;
  while (!*stop) {
    beat(p);
    proc_consumer_service(p->cons);
    uint64_t now = wsg_now_mono_ms();
    if (now >= until)
      return 0;
    uint64_t slice = until - now < 50 ? until - now : 50;
    struct timespec ts = {.tv_sec = 0, .tv_nsec = (long)slice * 1000000L};
    nanosleep(&ts, NULL);
  }
  return -1;
}

static bool retry_expired(const proc_processor *p, uint64_t started_ms) {
  return p->cfg->retry_timeout_ms && wsg_now_mono_ms() - started_ms >= p->cfg->retry_timeout_ms;
}

/* --- one record ---------------------------------------------------------------------------- */

static void dead_letter(proc_processor *p, proc_record *r, const char *kind, const char *why) {
  proc_consumer_dead_letter(p->cons, r, kind, why);
}

/* Decodes and handles recs[i]. Returns 0, or -1 when a stop interrupted a retry (the record is
 * not done and must be abandoned). */
static int handle_record(proc_processor *p, size_t i, const volatile sig_atomic_t *stop) {
  proc_record *r = &p->recs[i];
  wsg_envelope env = {0};
  const char *field = NULL;
  char why[512];
  int rc;
  if (r->command) {
    count(p->m_commands, 1);
  } else if ((rc = wsg_envelope_decode(&env, r->value, r->len, &field)) != WSG_ENV_OK) {
    count(p->m_bad_envelopes, 1);
    snprintf(why, sizeof(why), "not a valid envelope: %s%s%s", wsg_env_strerror(rc),
             field && *field ? " in field " : "", field && *field ? field : "");
    wsg_log_limited(&p->rl_decode, BAD_LOG_PER_SEC, wsg_now_mono_ms(), WSG_LOG_WARN, "proc",
                    "partition %" PRId32 " offset %" PRId64 " (%zu bytes): %s; skipped%s",
                    r->partition, r->offset, r->len, why,
                    proc_consumer_has_dead_letter(p->cons) ? " (dead-lettered)" : "");
    dead_letter(p, r, "decode", why);
    return 0;
  } else if ((int)env.kind >= 0 && env.kind <= WSG_ENV_KIND_LAST) {
    count(p->m_kind[env.kind], 1);
  }
  /* One clock reading serves both hops: this one, and hop 3 when the outputs are acknowledged. */
  r->handler_us = wsg_now_wall_us();
  if (!r->command && (env.fields & WSG_F_TS) && p->m_hop_handler && r->handler_us > env.ts_us)
    wsg_histogram_observe(p->m_hop_handler, (double)(r->handler_us - env.ts_us) / 1e6);

  uint64_t started = wsg_now_mono_ms(), backoff = RETRY_MIN_MS, cmd_ts = 0;
  for (;;) {
    /* A command from the commands topic, or an envelope for the handler. */
    rc = r->command ? proc_commands_execute(p->cmds, &p->denv, (uint32_t)i, r->value, r->len,
                                            &cmd_ts, why, sizeof(why))
                    : proc_handler_dispatch(p->handler, &p->denv, (uint32_t)i, &env, r->partition,
                                            r->offset, why, sizeof(why));
    if (rc != WSGATE_RETRY)
      break;
    count(p->m_retries, 1);
    retry_begin(p);
    if (retry_expired(p, started)) {
      snprintf(why, sizeof(why), "still failing after %" PRIu64 " ms of retries (--retry-timeout)",
               p->cfg->retry_timeout_ms);
      rc = WSGATE_ERROR;
      break;
    }
    if (backoff_wait(p, &backoff, stop) != 0)
      return -1;
  }
  atomic_store(&p->retrying_since_ms, 0);
  /* Measured from the clock reading before the first attempt, like hop 2 above. */
  if (cmd_ts && p->m_hop_command && r->handler_us > cmd_ts)
    wsg_histogram_observe(p->m_hop_command, (double)(r->handler_us - cmd_ts) / 1e6);

  switch (rc) {
  case WSGATE_OK:
    count(p->m_ok, 1);
    break;
  case WSGATE_REJECT:
    count(p->m_rejected, 1);
    wsg_log_limited(&p->rl_reject, BAD_LOG_PER_SEC, wsg_now_mono_ms(), WSG_LOG_INFO, "proc",
                    "partition %" PRId32 " offset %" PRId64 ": %s from user %.*s rejected: %s",
                    r->partition, r->offset, r->command ? "command" : wsg_env_kind_name(env.kind),
                    (int)env.user_len, env.user ? env.user : "", why);
    dead_letter(p, r, "rejected", why);
    break;
  default:
    count(p->m_errors, 1);
    wsg_log_limited(&p->rl_error, BAD_LOG_PER_SEC, wsg_now_mono_ms(), WSG_LOG_ERROR, "proc",
                    "partition %" PRId32 " offset %" PRId64 ": handler %s failed on a %s: %s",
                    r->partition, r->offset,
                    r->command ? "commands" : proc_handler_name(p->handler),
                    r->command ? "command" : wsg_env_kind_name(env.kind), why);
    dead_letter(p, r, "handler", why);
    break;
  }
  return 0;
}

/* --- routing and producing ----------------------------------------------------------------- */

static int emit(void *arg, uint32_t rec, const char *gw, size_t gw_len, int32_t partition,
                const uint8_t *env, size_t len) {
  proc_processor *p = arg;
  if (p->direct) {
    int rc = proc_direct_send(p->direct, &p->recs[rec], gw, gw_len, partition, env, len);
    if (rc != 0)
      return rc > 0 ? 0 : -1;
  }
  return proc_consumer_produce(p->cons, &p->recs[rec], partition, env, len) == 0 ? 0 : -1;
}

/*
 * Routes and produces what recs[from, to) recorded, then releases those records. Returns -1 when
 * a stop interrupted the routing retries or producing failed: the records are abandoned (their
 * offsets are never committed by this processor).
 */
static int flush(proc_processor *p, size_t from, size_t to, const volatile sig_atomic_t *stop) {
  size_t nusers = 0;
  const proc_strref *users = proc_outbox_users(p->box, &nusers);
  size_t nappends = 0;
  proc_append *appends = proc_outbox_appends(p->box, &nappends);
  bool stored = nappends == 0;
  size_t npubs = 0;
  proc_pub *pubs = proc_outbox_pubs(p->box, &npubs);
  bool published = npubs == 0;
  const proc_routes *rt = NULL;
  int rc = 0;
  if (nusers || npubs) {
    uint64_t started = wsg_now_mono_ms(), backoff = RETRY_MIN_MS;
    char err[256];
    for (;;) {
      /* Stored (and numbered) first, then routed: a resuming client's gateway relies on that
       * order (docs/ARCHITECTURE.md, "Resume"). A retry after the routing failed does not store
       * again. */
      if (!stored)
        stored = proc_redis_append(p->router, users, appends, nappends, err, sizeof(err)) == 0;
      if (stored && !published)
        published =
            proc_publish_store(p->pub, pubs, npubs, wsg_now_mono_ms(), err, sizeof(err)) == 0;
      if (stored && published &&
          proc_redis_resolve(p->router, users, nusers, wsg_now_mono_ms(), &p->routes, err,
                             sizeof(err)) == 0) {
        rt = &p->routes;
        break;
      }
      count(p->m_retries, 1);
      retry_begin(p);
      if (retry_expired(p, started)) {
        WSG_ERROR("proc",
                  "%s; giving up routing %zu users after %" PRIu64
                  " ms (--retry-timeout): their messages are undeliverable",
                  err, nusers, p->cfg->retry_timeout_ms);
        break;
      }
      wsg_log_limited(&p->rl_route, 1, wsg_now_mono_ms(), WSG_LOG_WARN, "proc",
                      "routing a batch: %s; retrying", err);
      if (backoff_wait(p, &backoff, stop) != 0) {
        rc = -1;
        break;
      }
    }
    atomic_store(&p->retrying_since_ms, 0);
  }
  if (rc == 0) {
    proc_emit_stats st = {0};
    rc = proc_outbox_emit(p->box, rt, p->max_record, wsg_now_wall_us(), emit, p, &st);
    count(p->m_deliveries, st.deliveries);
    count(p->m_undeliverable, st.undeliverable);
    count(p->m_fallbacks, st.fallbacks);
    count(p->m_encode_errors, st.invalid);
    if (p->direct)
      proc_direct_flush(p->direct);
  }
  for (size_t i = from; i < to; i++) {
    if (rc == 0)
      proc_consumer_end(p->cons, &p->recs[i]);
    else
      proc_consumer_abandon(p->cons, &p->recs[i]);
  }
  proc_outbox_reset(p->box);
  return rc;
}

/* Handles one polled batch. Returns -1 if it had to be abandoned (stopping, or Kafka failed). */
static int handle_batch(proc_processor *p, size_t n, const volatile sig_atomic_t *stop) {
  uint64_t t0 = wsg_now_mono_us();
  size_t flushed = 0;
  for (size_t i = 0; i < n; i++) {
    proc_record *r = &p->recs[i];
    beat(p);
    if (!proc_consumer_begin(p->cons, r)) {
      count(p->m_skipped, 1);
      continue;
    }
    if (handle_record(p, i, stop) != 0) {
      /* Stopping mid-retry: what was handled before goes out; this record and the rest are
       * left to the partition's next owner. */
      int rc = flush(p, flushed, i, stop);
      for (size_t k = i; k < n; k++)
        proc_consumer_abandon(p->cons, &p->recs[k]);
      (void)rc;
      return -1;
    }
    if (proc_outbox_count(p->box) >= FLUSH_OUTPUTS || proc_outbox_bytes(p->box) >= FLUSH_BYTES) {
      if (flush(p, flushed, i + 1, stop) != 0) {
        for (size_t k = i + 1; k < n; k++)
          proc_consumer_abandon(p->cons, &p->recs[k]);
        return -1;
      }
      flushed = i + 1;
    }
  }
  int rc = flush(p, flushed, n, stop);
  if (p->m_batch_size)
    wsg_histogram_observe(p->m_batch_size, (double)n);
  if (p->m_batch_seconds)
    wsg_histogram_observe(p->m_batch_seconds, (double)(wsg_now_mono_us() - t0) / 1e6);
  return rc;
}

int proc_processor_run(proc_processor *p, const volatile sig_atomic_t *stop) {
  char why[256];
  int poll_ms = (int)p->cfg->poll_wait_ms;
  while (!*stop && !proc_consumer_failed(p->cons, NULL, 0)) {
    beat(p);
    size_t n = proc_consumer_poll(p->cons, p->recs, p->batch_max, poll_ms, stop);
    if (n > 0)
      handle_batch(p, n, stop);
    proc_consumer_service(p->cons);
  }
  wsg_heartbeat_clear(&p->heartbeat);
  bool failed = proc_consumer_failed(p->cons, why, sizeof(why));
  WSG_INFO("main", "%s: waiting for acknowledgements, committing, leaving the group",
           failed ? "stopping after a Kafka failure" : "stop requested");
  if (proc_consumer_close(p->cons, p->cfg->shutdown_timeout_ms) != 0)
    WSG_WARN("main", "not everything was acknowledged and committed within --shutdown-timeout; "
                     "the group redelivers the rest to another processor (duplicates, no loss)");
  if (failed) {
    WSG_ERROR("main", "exiting after a Kafka failure: %s", why);
    return 1;
  }
  WSG_INFO("main", "stopped cleanly");
  return 0;
}
