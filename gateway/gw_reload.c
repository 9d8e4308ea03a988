/*
 * gw_reload: SIGHUP and inotify driven reloads of the key and certificate files (gw_reload.h).
 */
#include "gw_reload.h"

#include <errno.h>
#include <ev.h>
#include <fcntl.h>
#include <libgen.h>
#include <limits.h>
#include <openssl/ssl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/inotify.h>
#include <time.h>
#include <unistd.h>

#include "gw_tls.h"
#include "wsg_log.h"

#define RELOAD_SETTLE_S 0.5
#define MAX_DIRS        5

struct gw_reload {
  gw_reload_options o;
  int ifd; /* inotify, -1 when none */
  int nwatch;
  ev_io inotify_w;
  ev_timer settle_w;
  ev_signal hup_w;
  wsg_counter *m_ok, *m_refused;
  wsg_gauge *m_last_ok, *m_last_time, *m_not_after;
};

#define RELOADS_HELP                                                                               \
  "Reloads of the key and certificate files (SIGHUP or a change in their directories) by "         \
  "result (refused: a file was unusable; what was in use stays in use)."
static const wsg_metric_def metric_rows[] = {
    WSG_COUNTER_ROW(gw_reload, m_ok, "wsgate_gateway_reloads_total", RELOADS_HELP, "result=\"ok\""),
    WSG_COUNTER_ROW(gw_reload, m_refused, "wsgate_gateway_reloads_total", RELOADS_HELP,
                    "result=\"refused\""),
    WSG_GAUGE_ROW(gw_reload, m_last_ok, "wsgate_gateway_reload_last_success",
                  "1 when the last reload took every file, 0 when it refused one (or none ran).",
                  NULL),
    WSG_GAUGE_ROW(gw_reload, m_last_time, "wsgate_gateway_reload_last_seconds",
                  "Unix time of the last reload (0: none yet).", NULL),
    WSG_GAUGE_ROW(gw_reload, m_not_after, "wsgate_gateway_tls_cert_expiry_seconds",
                  "Unix time the certificate new TLS handshakes get expires (notAfter); 0 "
                  "without --tls-cert.",
                  NULL),
};

const wsg_metric_table gw_reload_metric_table =
    WSG_METRIC_TABLE("gateway/gw_reload.c", metric_rows);

/* 0, or -1 (logged) with the old certificate kept. */
static int reload_tls(gw_reload *r) {
  const gw_config *cfg = r->o.cfg;
  if (!cfg->tls_cert)
    return 0;
  char err[512];
  SSL_CTX *live = gw_server_tls_ctx(r->o.server);
  SSL_CTX *loaded = gw_tls_load(cfg->tls_cert, cfg->tls_key, err, sizeof err);
  int rc = -1;
  if (!live)
    snprintf(err, sizeof err, "libwebsockets did not give the gateway its TLS context");
  else if (loaded && gw_tls_install(live, loaded, err, sizeof err) == 0)
    rc = 0;
  if (rc == 0) {
    wsg_gauge_set(r->m_not_after, gw_tls_not_after(live));
    WSG_INFO("reload", "TLS certificate %s reloaded (expires at %lld)", cfg->tls_cert,
             (long long)gw_tls_not_after(live));
  } else {
    WSG_ERROR("reload", "TLS certificate refused, the one in use is kept: %s", err);
  }
  SSL_CTX_free(loaded);
  return rc;
}

int gw_reload_now(gw_reload *r) {
  char err[1024];
  int rc = 0;
  if (gw_auth_reload(r->o.auth, err, sizeof err) != 0) {
    WSG_ERROR("reload", "JWT keys refused, the ones in use are kept: %s", err);
    rc = -1;
  }
  if (reload_tls(r) != 0)
    rc = -1;
  /* The outcome first, the count last, so a scrape rarely pairs a new count with the old outcome
   * (the series are relaxed atomics: no ordering is promised between them). */
  wsg_gauge_set(r->m_last_ok, rc == 0);
  wsg_gauge_set(r->m_last_time, (int64_t)time(NULL));
  wsg_counter_add(rc == 0 ? r->m_ok : r->m_refused, 1);
  return rc;
}

static void settle_cb(struct ev_loop *loop, ev_timer *w, int revents) {
  (void)loop;
  (void)revents;
  gw_reload_now(w->data);
}

/* Gathers the events of one swap into one reload. */
static void soon(gw_reload *r) {
  ev_timer_stop(r->o.loop, &r->settle_w);
  ev_timer_set(&r->settle_w, RELOAD_SETTLE_S, 0.);
  ev_timer_start(r->o.loop, &r->settle_w);
}

static void inotify_cb(struct ev_loop *loop, ev_io *w, int revents) {
  (void)loop;
  (void)revents;
  gw_reload *r = w->data;
  char buf[4096] __attribute__((aligned(__alignof__(struct inotify_event))));
  bool any = false;
  for (;;) {
    ssize_t n = read(r->ifd, buf, sizeof buf);
    if (n <= 0)
      break; /* EAGAIN: drained */
    any = true;
  }
  if (any)
    soon(r);
}

static void hup_cb(struct ev_loop *loop, ev_signal *w, int revents) {
  (void)loop;
  (void)revents;
  WSG_INFO("reload", "SIGHUP: reloading the key and certificate files");
  gw_reload_now(w->data);
}

/* Watches the directory of each file the options name (each once). */
static void watch_dirs(gw_reload *r) {
  const gw_config *cfg = r->o.cfg;
  const char *files[MAX_DIRS] = {cfg->tls_cert, cfg->tls_key, cfg->jwt_secret_file,
                                 cfg->jwt_key_file, cfg->jwt_jwks_file};
  char dirs[MAX_DIRS][PATH_MAX];
  int nd = 0;
  for (int i = 0; i < MAX_DIRS; i++) {
    if (!files[i])
      continue;
    char copy[PATH_MAX];
    snprintf(copy, sizeof copy, "%s", files[i]);
    const char *d = dirname(copy);
    bool seen = false;
    for (int j = 0; j < nd; j++)
      seen = seen || strcmp(dirs[j], d) == 0;
    if (seen)
      continue;
    snprintf(dirs[nd++], PATH_MAX, "%s", d);
  }
  if (nd == 0)
    return;
  r->ifd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
  if (r->ifd < 0) {
    WSG_WARN("reload", "inotify unavailable (%s): files are reloaded on SIGHUP only",
             strerror(errno));
    return;
  }
  uint32_t mask = IN_CLOSE_WRITE | IN_MOVED_TO | IN_CREATE | IN_DELETE | IN_MOVED_FROM;
  for (int j = 0; j < nd; j++) {
    if (inotify_add_watch(r->ifd, dirs[j], mask) < 0)
      WSG_WARN("reload", "cannot watch %s (%s): its files are reloaded on SIGHUP only", dirs[j],
               strerror(errno));
    else
      r->nwatch++;
  }
  ev_io_init(&r->inotify_w, inotify_cb, r->ifd, EV_READ);
  r->inotify_w.data = r;
  ev_io_start(r->o.loop, &r->inotify_w);
}

int gw_reload_create(gw_reload **out, const gw_reload_options *o, char *err, size_t errlen) {
  *out = NULL;
  gw_reload *r = calloc(1, sizeof *r);
  if (!r) {
    snprintf(err, errlen, "out of memory");
    return -1;
  }
  r->o = *o;
  r->ifd = -1;
  wsg_metrics_register_table(o->metrics, &gw_reload_metric_table, r);
  SSL_CTX *live = gw_server_tls_ctx(o->server);
  if (live)
    wsg_gauge_set(r->m_not_after, gw_tls_not_after(live));
  ev_timer_init(&r->settle_w, settle_cb, RELOAD_SETTLE_S, 0.);
  r->settle_w.data = r;
  ev_signal_init(&r->hup_w, hup_cb, SIGHUP);
  r->hup_w.data = r;
  ev_signal_start(o->loop, &r->hup_w);
  watch_dirs(r);
  if (r->nwatch)
    WSG_INFO("reload", "watching %d director%s of key and certificate files; SIGHUP reloads too",
             r->nwatch, r->nwatch == 1 ? "y" : "ies");
  *out = r;
  return 0;
}

void gw_reload_destroy(gw_reload *r) {
  if (!r)
    return;
  ev_signal_stop(r->o.loop, &r->hup_w);
  ev_timer_stop(r->o.loop, &r->settle_w);
  if (r->ifd >= 0) {
    ev_io_stop(r->o.loop, &r->inotify_w);
    close(r->ifd);
  }
  free(r);
}
