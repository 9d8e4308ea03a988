/*
 * gateway: construction, readiness and the drain of wsgate-gateway (see gateway.h).
 *
 * Threads: the main thread, which runs the libev loop in gw_gateway_run; the readiness and health
 * callbacks of the operations endpoint run on its HTTP thread and read only `ready_reason` and
 * `heartbeat` (atomics).
 */
#include "gateway.h"

#include <ev.h>
#include <openssl/ssl.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include "gw_auth.h"
#include "gw_kafka.h"
#include "gw_metrics.h"
#include "gw_registry.h"
#include "gw_reload.h"
#include "gw_direct.h"
#include "gw_server.h"
#include "gw_tls.h"
#include "wsg_heartbeat.h"
#include "wsg_http.h"
#include "wsg_log.h"
#include "wsg_metrics.h"
#include "wsg_time.h"

/* Start-up wait for the Kafka cluster's metadata. */
#define KAFKA_STARTUP_TIMEOUT_MS 30000
/* How often readiness and the gateway record's connection count are refreshed. */
#define TICK_S 0.1
/* lws refuses a larger fd limit and silently serves only 2560 connections then
 * (docs/notes/libwebsockets-4.1.6.md#fd-limit). */
#define LWS_FD_LIMIT_MAX 10000000

#define READY_REASONS(X)                                                                           \
  X(OK, "ready")                                                                                   \
  X(DRAINING, "draining: this gateway is shutting down")                                           \
  X(REDIS_DOWN, "redis: not connected")                                                            \
  X(NO_SLOT, "redis: no gateway slot held (all taken, or not acquired yet)")                       \
  X(KAFKA_DOWN, "kafka: no broker reachable")                                                      \
  X(NOT_ASSIGNED, "kafka: the slot's outbound partition is not assigned yet")

enum {
#define READY_ENUM(name, text) READY_##name,
  READY_REASONS(READY_ENUM)
#undef READY_ENUM
};

static const char *const ready_text[] = {
#define READY_TEXT(name, text) text,
    READY_REASONS(READY_TEXT)
#undef READY_TEXT
};

typedef enum {
  PHASE_RUNNING,
  PHASE_CLOSING,   /* clients are being closed with 1001 */
  PHASE_FLUSHING,  /* waiting for Kafka to acknowledge what was produced */
  PHASE_RELEASING, /* waiting for Redis to confirm the release */
  PHASE_DONE,
} drain_phase;

struct gw_gateway {
  const gw_config *cfg;
  struct ev_loop *loop;
  wsg_metrics *metrics;
  wsg_http *http;
  gw_kafka *kafka;
  gw_registry *registry;
  gw_server *server;
  gw_auth *auth;
  gw_reload *reload;
  gw_direct *direct;     /* NULL without --direct-listen */
  char direct_addr[300]; /* what the Redis record advertises (port 0 resolved) */
  int fd_limit;
  uint32_t slots;

  ev_signal sigterm_w, sigint_w;
  ev_timer tick_w;
  ev_timer drain_w; /* the drain's step timer */
  atomic_int ready_reason;
  /* When the loop last turned (tick_cb): /healthz fails once it is older than --liveness-stall, so
   * a wedged loop gets the pod restarted, which readiness (a flag only the loop updates) cannot. */
  wsg_heartbeat heartbeat;
  bool kafka_down_logged;
  bool admission_logged; /* "ready, but refusing new connections" was logged */

  drain_phase phase;
  uint64_t drain_start_ms;
  int exit_code;

  wsg_gauge *m_ready, *m_draining; /* the slot gauge is the registry's */
};

/* The ready and draining gauges first: the order /metrics has always listed them in. */
enum { ROW_INFO = 2 };
static const wsg_metric_def metric_rows[] = {
    WSG_GAUGE_ROW(gw_gateway, m_ready, "wsgate_gateway_ready",
                  "1 while the gateway admits new connections.", NULL),
    WSG_GAUGE_ROW(gw_gateway, m_draining, "wsgate_gateway_draining",
                  "1 once a drain (SIGTERM) has started.", NULL),
    [ROW_INFO] =
        WSG_RUNTIME_ROW(WSG_METRIC_GAUGE, "wsgate_gateway_info",
                        "Version and id of this gateway (always 1).", "version,gateway_id"),
};

const wsg_metric_table gw_gateway_metric_table = WSG_METRIC_TABLE("gateway/gateway.c", metric_rows);

/* ------------------------------------------------------------------------------------------ */
/* readiness                                                                                   */

/*
 * /readyz (what the balancer sees). A Redis outage alone does not make the gateway unready while
 * it still holds its slot's lease: every gateway loses the same Redis at the same moment, and a
 * fleet that all turns unready at once leaves the balancer nothing to send to and waits for its
 * health checks to rise again afterwards. Established connections and deliveries keep working
 * without Redis; only new upgrades are refused meanwhile (admission(), 503 with Retry-After).
 * Once the lease runs out the slot is gone and the gateway is unready (READY_NO_SLOT).
 */
static int compute_ready(gw_gateway *g) {
  if (g->phase != PHASE_RUNNING)
    return READY_DRAINING;
  if (gw_registry_slot(g->registry) < 0)
    return gw_registry_connected(g->registry) ? READY_NO_SLOT : READY_REDIS_DOWN;
  char why[64];
  if (!gw_kafka_ready(g->kafka, why, sizeof why))
    return READY_KAFKA_DOWN;
  if (!gw_kafka_slot_assigned(g->kafka))
    return READY_NOT_ASSIGNED;
  return READY_OK;
}

/* New upgrades: ready, and Redis usable (a connection must be registered to be reachable). */
static int admission(gw_gateway *g) {
  int r = compute_ready(g);
  return r == READY_OK && !gw_registry_connected(g->registry) ? READY_REDIS_DOWN : r;
}

/* Loop thread: upgrades are admitted only while admission() says so. */
static bool admit(void *arg, char *why, size_t whylen) {
  gw_gateway *g = arg;
  int r = admission(g);
  if (r == READY_OK)
    return true;
  snprintf(why, whylen, "%s", ready_text[r]);
  return false;
}

/* HTTP thread: alive while the loop turns. */
static int http_health(void *arg, char *why, size_t whylen) {
  gw_gateway *g = arg;
  return wsg_heartbeat_check(&g->heartbeat, wsg_now_mono_ms(), g->cfg->http.liveness_stall_ms,
                             "event loop", why, whylen);
}

/* HTTP thread. */
static int http_ready(void *arg, char *why, size_t whylen) {
  gw_gateway *g = arg;
  int r = atomic_load_explicit(&g->ready_reason, memory_order_relaxed);
  if (r == READY_OK)
    return 0;
  snprintf(why, whylen, "%s", ready_text[r]);
  return 1;
}

static void tick_cb(struct ev_loop *loop, ev_timer *w, int revents) {
  (void)loop;
  (void)revents;
  gw_gateway *g = w->data;
  wsg_heartbeat_beat(&g->heartbeat);
  int r = compute_ready(g);
  int old = atomic_exchange_explicit(&g->ready_reason, r, memory_order_relaxed);
  if (old != r) {
    if (r == READY_OK)
      WSG_INFO("gateway", "ready");
    else if (g->phase == PHASE_RUNNING)
      WSG_WARN("gateway", "not ready: %s", ready_text[r]);
  }
  int a = admission(g);
  if (r == READY_OK && a != READY_OK && !g->admission_logged)
    WSG_WARN("gateway", "ready, but refusing new connections: %s", ready_text[a]);
  g->admission_logged = r == READY_OK && a != READY_OK;
  wsg_gauge_set(g->m_ready, a == READY_OK);
  gw_registry_set_conn_count(g->registry, gw_server_conn_count(g->server));
}

/* ------------------------------------------------------------------------------------------ */
/* callbacks from the modules, forwarded to the server once it exists                         */

static void on_pressure(void *arg, bool paused) {
  gw_gateway *g = arg;
  if (g->server)
    gw_server_on_pressure(g->server, paused);
}

static void on_delivery_failed(void *arg, uint64_t conn_id, const char *errstr) {
  gw_gateway *g = arg;
  if (g->server)
    gw_server_on_delivery_failed(g->server, conn_id, errstr);
}

/* Consumer thread: only ever lws_cancel_service (through gw_server_wake). `server` is written
 * before the consumer can have a slot to read (the loop, which assigns it, starts after). */
static void wake(void *arg) {
  gw_gateway *g = arg;
  gw_server_wake(g->server);
}

/* Loop thread (--outbound-consume loop): dispatch at once what gw_kafka queued. */
static void drain(void *arg) {
  gw_gateway *g = arg;
  if (g->server)
    gw_server_drain_outbound(g->server);
}

static void on_slot(void *arg, int32_t slot) {
  gw_gateway *g = arg;
  if (slot >= 0)
    WSG_INFO("gateway", "holding slot %d of %u", slot, g->slots);
  else if (g->phase == PHASE_RUNNING)
    WSG_WARN("gateway", "no slot held: outbound messages cannot reach this gateway");
  else
    WSG_INFO("gateway", "slot released");
  gw_kafka_set_slot(g->kafka, slot);
  if (g->server)
    gw_server_set_slot(g->server, slot);
}

static void foreach_conn(void *arg, gw_registry_emit_fn emit, void *ctx) {
  gw_gateway *g = arg;
  if (g->server)
    gw_server_foreach_conn(g->server, emit, ctx);
}

/* ------------------------------------------------------------------------------------------ */
/* drain                                                                                       */

static void shutdown_now(gw_gateway *g) {
  if (g->phase == PHASE_DONE)
    return;
  g->phase = PHASE_DONE;
  ev_timer_stop(g->loop, &g->drain_w);
  ev_timer_stop(g->loop, &g->tick_w);
  ev_signal_stop(g->loop, &g->sigterm_w);
  ev_signal_stop(g->loop, &g->sigint_w);
  /* The consumer thread calls lws_cancel_service: it must be gone before the context is. And
   * the context is destroyed here, from our own timer or signal watcher, never from inside an
   * lws callback. */
  gw_kafka_stop_consumer(g->kafka);
  uint64_t left = gw_server_conn_count(g->server);
  if (left)
    WSG_WARN("gateway", "dropping %llu connections that did not close in time",
             (unsigned long long)left);
  gw_reload_destroy(g->reload);
  g->reload = NULL;
  gw_direct_destroy(g->direct); /* dispatches into the server */
  g->direct = NULL;
  gw_server_destroy(g->server);
  g->server = NULL;
  gw_auth_destroy(g->auth);
  g->auth = NULL;
  gw_kafka_poll(g->kafka);
  ev_break(g->loop, EVBREAK_ALL);
}

static void released_cb(void *arg) {
  gw_gateway *g = arg;
  if (g->phase != PHASE_RELEASING)
    return;
  WSG_INFO("gateway", "Redis entries released; exiting after %llu ms",
           (unsigned long long)(wsg_now_mono_ms() - g->drain_start_ms));
  shutdown_now(g);
}

static void start_release(gw_gateway *g) {
  g->phase = PHASE_RELEASING;
  if (gw_registry_release(g->registry, released_cb, g) != GW_REG_OK)
    shutdown_now(g);
}

static void drain_step_cb(struct ev_loop *loop, ev_timer *w, int revents) {
  (void)loop;
  (void)revents;
  gw_gateway *g = w->data;
  uint64_t elapsed = wsg_now_mono_ms() - g->drain_start_ms;
  uint64_t grace = g->cfg->drain_grace_ms;
  /* The close phase ends when every connection is gone, at the latest 3 s (the Kafka flush) +
   * 1 s (the Redis release) before the grace; but never sooner than GW_DRAIN_LINGER_MS after the
   * window's last 1001, so its close handshake can finish (the flush then gets what is left, at
   * least GW_DRAIN_FLUSH_MIN_MS: gw_config_validate). */
  uint64_t close_deadline = grace > GW_DRAIN_FLUSH_MS + GW_DRAIN_RELEASE_MS
                                ? grace - GW_DRAIN_FLUSH_MS - GW_DRAIN_RELEASE_MS
                                : 0;
  if (close_deadline < g->cfg->drain_window_ms + GW_DRAIN_LINGER_MS)
    close_deadline = g->cfg->drain_window_ms + GW_DRAIN_LINGER_MS;
  uint64_t flush_deadline = grace > GW_DRAIN_RELEASE_MS ? grace - GW_DRAIN_RELEASE_MS : grace;
  switch (g->phase) {
  case PHASE_CLOSING:
    if (gw_server_conn_count(g->server) > 0 && elapsed < close_deadline)
      return;
    if (gw_server_conn_count(g->server) > 0)
      WSG_WARN("gateway", "%llu connections still open at the end of the close phase",
               (unsigned long long)gw_server_conn_count(g->server));
    g->phase = PHASE_FLUSHING;
    /* fall through */
  case PHASE_FLUSHING:
    gw_kafka_poll(g->kafka);
    if (gw_kafka_unacked(g->kafka) > 0 && elapsed < flush_deadline)
      return;
    if (gw_kafka_unacked(g->kafka) > 0)
      WSG_WARN("gateway", "%llu envelopes not acknowledged by Kafka at the drain deadline",
               (unsigned long long)gw_kafka_unacked(g->kafka));
    start_release(g);
    return;
  case PHASE_RELEASING:
    if (elapsed >= grace) {
      WSG_WARN("gateway", "Redis did not confirm the release before --drain-grace; exiting");
      shutdown_now(g);
    }
    return;
  case PHASE_RUNNING:
  case PHASE_DONE:
    return;
  }
}

static void signal_cb(struct ev_loop *loop, ev_signal *w, int revents) {
  (void)loop;
  (void)revents;
  gw_gateway *g = w->data;
  if (g->phase != PHASE_RUNNING) {
    WSG_WARN("gateway", "signal %d during the drain: exiting now", w->signum);
    g->exit_code = 1;
    shutdown_now(g);
    return;
  }
  WSG_INFO("gateway", "signal %d: draining (%llu connections, window %llu ms, grace %llu ms)",
           w->signum, (unsigned long long)gw_server_conn_count(g->server),
           (unsigned long long)g->cfg->drain_window_ms, (unsigned long long)g->cfg->drain_grace_ms);
  g->phase = PHASE_CLOSING;
  g->drain_start_ms = wsg_now_mono_ms();
  atomic_store(&g->ready_reason, READY_DRAINING);
  wsg_gauge_set(g->m_draining, 1);
  wsg_gauge_set(g->m_ready, 0);
  gw_server_drain(g->server, g->cfg->drain_window_ms);
  ev_timer_init(&g->drain_w, drain_step_cb, 0.05, 0.05);
  g->drain_w.data = g;
  ev_timer_start(g->loop, &g->drain_w);
}

/* ------------------------------------------------------------------------------------------ */
/* lifecycle                                                                                   */

/* The soft RLIMIT_NOFILE up to the hard one: each connection is a descriptor. */
static int raise_fd_limit(void) {
  struct rlimit rl;
  if (getrlimit(RLIMIT_NOFILE, &rl) != 0)
    return 1024;
  rlim_t want = rl.rlim_max;
  if (want == RLIM_INFINITY || want > LWS_FD_LIMIT_MAX)
    want = LWS_FD_LIMIT_MAX;
  if (rl.rlim_cur < want) {
    rlim_t old = rl.rlim_cur;
    rl.rlim_cur = want;
    if (setrlimit(RLIMIT_NOFILE, &rl) != 0)
      rl.rlim_cur = old;
  }
  if (rl.rlim_cur > LWS_FD_LIMIT_MAX)
    rl.rlim_cur = LWS_FD_LIMIT_MAX;
  return (int)rl.rlim_cur;
}

/* An explicit --max-connections that the descriptor limit cannot hold would be capped silently by
 * libwebsockets (it refuses sockets past the limit): say so once, with the numbers and the fix. */
static void warn_fd_limit(const gw_config *cfg, int fd_limit) {
  int lws_fds = gw_server_lws_fds(fd_limit);
  uint64_t need = (uint64_t)cfg->max_connections + (uint64_t)cfg->max_handshakes;
  if (cfg->max_connections <= 0 || need <= (uint64_t)lws_fds)
    return;
  struct rlimit rl = {0, 0};
  getrlimit(RLIMIT_NOFILE, &rl);
  WSG_WARN("gateway",
           "file descriptor limit too low: --max-connections %lld plus --max-handshakes %lld need "
           "%llu descriptors, but RLIMIT_NOFILE is %d (hard %llu) and %d of it are kept for Kafka, "
           "Redis and the operations port, so at most %d sockets fit (wsgate_gateway_fd_limit); "
           "raise the limit: ulimit -n / prlimit, systemd LimitNOFILE=, or the container "
           "runtime's nofile default (containerd's LimitNOFILE, docker --ulimit nofile=)",
           (long long)cfg->max_connections, (long long)cfg->max_handshakes,
           (unsigned long long)need, fd_limit,
           (unsigned long long)(rl.rlim_max == RLIM_INFINITY ? 0 : rl.rlim_max), fd_limit - lws_fds,
           lws_fds);
}

/* Loads --tls-cert and --tls-key the way libwebsockets will, before anything else starts, so a
 * bad file is reported by name at once rather than after the wait for Kafka, through
 * libwebsockets' generic vhost error. */
static int check_tls_files(const gw_config *cfg, char *err, size_t errlen) {
  if (!cfg->tls_cert)
    return 0;
  SSL_CTX *ctx = gw_tls_load(cfg->tls_cert, cfg->tls_key, err, errlen);
  SSL_CTX_free(ctx);
  return ctx ? 0 : -1;
}

/* --direct-advertise, with a port of 0 (tests: any free port) replaced by the one bound. */
static void direct_advertise(const char *adv, int port, char *out, size_t outlen) {
  size_t n = strlen(adv);
  if (n >= 2 && strcmp(adv + n - 2, ":0") == 0)
    snprintf(out, outlen, "%.*s:%d", (int)(n - 2), adv, port);
  else
    snprintf(out, outlen, "%s", adv);
}

static void direct_dispatch(void *arg, gw_outbound *it) {
  gw_gateway *g = arg;
  gw_server_dispatch(g->server, it);
}

static int64_t direct_dispatched(void *arg, int32_t *slot) {
  gw_gateway *g = arg;
  if (!g->kafka) {
    *slot = -1;
    return -1;
  }
  return gw_kafka_dispatched(g->kafka, slot);
}

int gw_gateway_create(gw_gateway **out, const gw_config *cfg, const volatile sig_atomic_t *stop,
                      char *err, size_t errlen) {
  *out = NULL;
  if (check_tls_files(cfg, err, errlen) != 0)
    return -1;
  gw_gateway *g = calloc(1, sizeof *g);
  if (!g) {
    snprintf(err, errlen, "out of memory");
    return -1;
  }
  g->cfg = cfg;
  atomic_init(&g->ready_reason, READY_REDIS_DOWN);
  g->loop = ev_loop_new(EVFLAG_AUTO);
  g->metrics = wsg_metrics_create();
  if (!g->loop || !g->metrics) {
    snprintf(err, errlen, "cannot create the event loop or the metrics registry");
    goto fail;
  }
  wsg_metrics_register_table(g->metrics, &gw_gateway_metric_table, g);
  char labels[256];
  snprintf(labels, sizeof labels, "version=\"%s\",gateway_id=\"%s\"", WSG_VERSION, cfg->gateway_id);
  wsg_gauge *info = wsg_metrics_gauge_def(g->metrics, &metric_rows[ROW_INFO], labels);
  wsg_gauge_set(info, 1);

  g->fd_limit = raise_fd_limit();
  WSG_INFO("gateway", "file descriptor limit %d", g->fd_limit);
  warn_fd_limit(cfg, g->fd_limit);

  gw_kafka_options ko = {
      .brokers = cfg->kafka.brokers,
      .props = &cfg->kafka.props,
      .producer_linger_ms = cfg->direct_listen && cfg->direct_listen[0] ? "1" : NULL,
      .inbound_topic = cfg->inbound_topic,
      .outbound_topic = cfg->outbound_topic,
      .gw_id = cfg->gateway_id,
      .outbound_queue = (size_t)cfg->outbound_queue,
      .outbound_queue_bytes = cfg->outbound_queue_bytes,
      .loop = g->loop,
      .metrics = g->metrics,
      .on_delivery_failed = on_delivery_failed,
      .on_pressure = on_pressure,
      .wake = wake,
      .outbound_on_loop = strcmp(cfg->outbound_consume, "loop") == 0,
      .drain = drain,
      .arg = g,
  };
  if (gw_kafka_create(&g->kafka, &ko, err, errlen) != GW_KAFKA_OK)
    goto fail;
  WSG_INFO("gateway", "waiting for Kafka (%s) to list %s and %s", cfg->kafka.brokers,
           cfg->inbound_topic, cfg->outbound_topic);
  int partitions = gw_kafka_check_topics(g->kafka, KAFKA_STARTUP_TIMEOUT_MS, stop, err, errlen);
  if (partitions < 0)
    goto fail;
  if (cfg->slots > partitions) {
    snprintf(err, errlen, "--slots %lld is more than the %d partitions of %s",
             (long long)cfg->slots, partitions, cfg->outbound_topic);
    goto fail;
  }
  g->slots = cfg->slots > 0 ? (uint32_t)cfg->slots : (uint32_t)partitions;

  if (cfg->direct_listen && cfg->direct_listen[0]) {
    gw_direct_options dopt = {
        .listen = cfg->direct_listen,
        .secret = cfg->direct_secret,
        .secret_len = cfg->direct_secret_len,
        .gw_id = cfg->gateway_id,
        .max_peers = (size_t)cfg->direct_max_peers,
        .loop = g->loop,
        .metrics = g->metrics,
        .dispatch = direct_dispatch,
        .dispatched = direct_dispatched,
        .arg = g,
    };
    if (gw_direct_create(&g->direct, &dopt, err, errlen) != 0)
      goto fail;
    direct_advertise(cfg->direct_advertise, gw_direct_port(g->direct), g->direct_addr,
                     sizeof g->direct_addr);
  }
  gw_registry_options ro = {
      .host = cfg->redis.host,
      .port = (int)cfg->redis.port,
      .password = cfg->redis.password,
      .user = cfg->redis.user,
      .cluster = cfg->redis.cluster,
      .db = (int)cfg->redis.db,
      .prefix = cfg->redis.prefix,
      .gw_id = cfg->gateway_id,
      .boot = cfg->gateway_boot,
      .advertise = cfg->advertise_addr,
      .direct = g->direct ? g->direct_addr : NULL,
      .slots = g->slots,
      .lease_ms = cfg->lease_ttl_ms,
      .renew_ms = cfg->lease_renew_ms,
      .timeout_ms = cfg->redis.timeout_ms,
      .replay_seq_ttl_ms = cfg->resume_seq_ttl_ms,
      .max_conns_per_user = (uint32_t)cfg->max_conns_per_user,
      .on_slot = on_slot,
      .foreach_conn = foreach_conn,
      .arg = g,
  };
  if (gw_registry_create(&g->registry, g->loop, &ro, g->metrics, err, errlen) != GW_REG_OK)
    goto fail;

  if (gw_auth_create(&g->auth, cfg, g->loop, g->metrics, err, errlen) != 0)
    goto fail;
  gw_server_options so = {
      .cfg = cfg,
      .jwt = gw_auth_jwt(g->auth),
      .unknown_kid = gw_auth_unknown_kid,
      .auth = g->auth,
      .loop = g->loop,
      .kafka = g->kafka,
      .registry = g->registry,
      .metrics = g->metrics,
      .fd_limit = g->fd_limit,
      .admit = admit,
      .admit_arg = g,
  };
  if (gw_server_create(&g->server, &so, err, errlen) != 0)
    goto fail;
  gw_reload_options rlo = {
      .cfg = cfg, .loop = g->loop, .auth = g->auth, .server = g->server, .metrics = g->metrics};
  if (gw_reload_create(&g->reload, &rlo, err, errlen) != 0)
    goto fail;

  wsg_http_options ho = {
      .addr = cfg->http.addr,
      .port = (int)cfg->http.port,
      .metrics = g->metrics,
      .ready = http_ready,
      .ready_arg = g,
      .health = http_health,
      .health_arg = g,
  };
  /* The loop turns for the first time in gw_gateway_run, a moment from now. */
  wsg_heartbeat_beat(&g->heartbeat);
  if (wsg_http_start(&g->http, &ho, err, errlen) != 0)
    goto fail;

  ev_signal_init(&g->sigterm_w, signal_cb, SIGTERM);
  g->sigterm_w.data = g;
  ev_signal_start(g->loop, &g->sigterm_w);
  ev_signal_init(&g->sigint_w, signal_cb, SIGINT);
  g->sigint_w.data = g;
  ev_signal_start(g->loop, &g->sigint_w);
  ev_timer_init(&g->tick_w, tick_cb, TICK_S, TICK_S);
  g->tick_w.data = g;
  ev_timer_start(g->loop, &g->tick_w);
  /* A signal caught since the wait for Kafka ended: drain as soon as the loop runs. */
  if (stop && *stop)
    ev_feed_signal_event(g->loop, SIGTERM);
  *out = g;
  return 0;
fail:
  gw_gateway_destroy(g);
  return -1;
}

int gw_gateway_run(gw_gateway *g) {
  WSG_INFO("gateway", "gateway %s started (%u slots)", g->cfg->gateway_id, g->slots);
  ev_run(g->loop, 0);
  return g->exit_code;
}

void gw_gateway_destroy(gw_gateway *g) {
  if (!g)
    return;
  /* Order: nothing may call into a module after it is gone. The consumer thread first (it wakes
   * the server), then the server (its connections produce `disconnect` and remove Redis entries
   * as they close), then the registry, then Kafka. */
  wsg_http_stop(g->http);
  if (g->kafka)
    gw_kafka_stop_consumer(g->kafka);
  gw_reload_destroy(g->reload);
  gw_direct_destroy(g->direct); /* dispatches into the server */
  gw_server_destroy(g->server);
  g->server = NULL;
  gw_auth_destroy(g->auth);
  gw_registry_destroy(g->registry);
  gw_kafka_destroy(g->kafka);
  if (g->loop) {
    ev_timer_stop(g->loop, &g->tick_w);
    ev_timer_stop(g->loop, &g->drain_w);
    ev_signal_stop(g->loop, &g->sigterm_w);
    ev_signal_stop(g->loop, &g->sigint_w);
    ev_loop_destroy(g->loop);
  }
  wsg_metrics_destroy(g->metrics);
  free(g);
}
