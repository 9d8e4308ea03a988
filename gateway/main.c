/*
 * wsgate-gateway: configuration, logging, then the gateway (gateway.h) until it has drained.
 * Exit status: 0 after a drain (or --help, --help-metrics), also after a SIGTERM or SIGINT during
 * the start-up wait for Kafka (a stop asked for, not a failure); 1 when the gateway could not
 * start, 2 on an invalid configuration.
 *
 * Threads: the main thread, which becomes the gateway's loop thread.
 */
#include <signal.h>
#include <stdio.h>
#include <string.h>

#include "gateway.h"
#include "gw_auth.h"
#include "gw_config.h"
#include "gw_metrics.h"
#include "wsg_log.h"

extern char **environ;

/* Set by SIGTERM/SIGINT until the gateway's loop takes the signals over (gateway.c's watchers):
 * the start-up wait reads it, so a pod that cannot reach Kafka stops at once instead of after its
 * grace period (as PID 1 of a container, a signal without a handler is ignored). */
static volatile sig_atomic_t stop_requested;

static void on_signal(int sig) {
  (void)sig;
  stop_requested = 1;
}

int main(int argc, char **argv) {
  /* A client that vanishes mid-write must cost an EPIPE, not the process. */
  signal(SIGPIPE, SIG_IGN);

  gw_config cfg = {0};
  char err[1024] = "";
  /* Before the options, which it needs none of (wsg_config's built-ins are --help and the like). */
  if (wsg_metrics_help_requested(argc, argv)) {
    if (wsg_metrics_print_markdown(stdout, "wsgate-gateway", gw_metric_tables, err, sizeof err) ==
        0)
      return 0;
    fprintf(stderr, "wsgate-gateway: --help-metrics: %s\n", err);
    return 1;
  }
  wsg_config_result r = gw_config_load(&cfg, argc, argv, environ, err, sizeof err);
  if (r != WSG_CONFIG_OK) {
    if (r == WSG_CONFIG_ERROR)
      fprintf(stderr, "wsgate-gateway: %s\n(wsgate-gateway --help lists every option)\n", err);
    gw_config_finish(&cfg);
    return r == WSG_CONFIG_EXIT ? 0 : 2;
  }
  wsg_log_setup(cfg.log.min_level, cfg.log.json, "wsgate-gateway");
  gw_config_log(&cfg);
  if (cfg.insecure_dev_user)
    WSG_WARN("main", "--insecure-dev-user is on: clients without a token may pick any user id "
                     "with ?user=. Never run this in production.");

  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_signal;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGTERM, &sa, NULL);
  sigaction(SIGINT, &sa, NULL);

  if (gw_auth_global_init(err, sizeof err) != 0) {
    WSG_ERROR("main", "cannot start: %s", err);
    gw_config_finish(&cfg);
    return 1;
  }
  gw_gateway *g = NULL;
  if (gw_gateway_create(&g, &cfg, &stop_requested, err, sizeof err) != 0) {
    if (stop_requested)
      WSG_INFO("main", "stopped during start-up (%s)", err);
    else
      WSG_ERROR("main", "cannot start: %s", err);
    gw_config_finish(&cfg);
    return stop_requested ? 0 : 1;
  }
  int rc = gw_gateway_run(g);
  gw_gateway_destroy(g);
  gw_config_finish(&cfg);
  return rc;
}
