/*
 * gw_reload: rotation without restarts. On SIGHUP, and when a file changes in a directory holding
 * one of the key or certificate files (inotify on the directory, so a Kubernetes Secret's
 * symlink swap is seen as well as a plain rewrite), the gateway reloads --jwt-secret-file,
 * --jwt-key-file, --jwt-jwks-file (gw_auth_reload) and --tls-cert / --tls-key (gw_tls). A bad new
 * file is refused with a log line naming it, and what was in use stays in use. Open connections
 * are never touched: only new upgrades and new TLS handshakes see the new keys.
 *
 * Events are gathered for RELOAD_SETTLE_MS before reloading, so the several steps of one swap
 * (the data directory, then the symlink) make one reload.
 *
 * Threads: the loop thread only.
 */
#ifndef GW_RELOAD_H
#define GW_RELOAD_H

#include <stddef.h>

#include "gw_auth.h"
#include "gw_config.h"
#include "gw_server.h"
#include "wsg_metrics.h"

struct ev_loop;

typedef struct {
  const gw_config *cfg; /* borrowed for the reloader's life */
  struct ev_loop *loop; /* borrowed */
  gw_auth *auth;        /* borrowed */
  gw_server *server;    /* borrowed */
  wsg_metrics *metrics; /* borrowed; may be NULL */
} gw_reload_options;

typedef struct gw_reload gw_reload;

/* Starts the SIGHUP and inotify watchers. 0 with *out set (caller destroys), or -1 with a
 * message. A directory that cannot be watched is logged and left to SIGHUP. o: borrowed. */
int gw_reload_create(gw_reload **out, const gw_reload_options *o, char *err, size_t errlen);

/* Reloads every file now; 0 when all were taken, -1 when one was refused (logged). */
int gw_reload_now(gw_reload *r);

/* Stops the watchers. NULL is a no-op. */
void gw_reload_destroy(gw_reload *r);

extern const wsg_metric_table gw_reload_metric_table;

#endif
