/*
 * wsgate-api: parses the configuration (exit 2 with the message when it is invalid), sets up
 * logging and signals, starts the service, then checks the keys file until SIGTERM or SIGINT
 * (SIGHUP reloads the keys at once).
 *
 * Threads: the main thread handles the signals' flags and the keys file; api_server runs the
 * rest on threads of its own.
 */
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "api_config.h"
#include "api_server.h"
#include "wsg_log.h"
#include "wsg_time.h"

extern char **environ;

/* Set by the signal handlers, read by the loop below (the only globals of the program). */
static volatile sig_atomic_t stop_requested;
static volatile sig_atomic_t reload_requested;

static void on_stop(int sig) {
  (void)sig;
  stop_requested = 1;
}

static void on_hup(int sig) {
  (void)sig;
  reload_requested = 1;
}

static int install_signals(void) {
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sigemptyset(&sa.sa_mask);
  sa.sa_handler = on_stop;
  if (sigaction(SIGTERM, &sa, NULL) != 0 || sigaction(SIGINT, &sa, NULL) != 0)
    return -1;
  sa.sa_handler = on_hup;
  if (sigaction(SIGHUP, &sa, NULL) != 0)
    return -1;
  sa.sa_handler = SIG_IGN; /* hiredis and the HTTP library write to sockets */
  return sigaction(SIGPIPE, &sa, NULL);
}

int main(int argc, char **argv) {
  api_config cfg;
  memset(&cfg, 0, sizeof cfg);
  char err[1024] = "";
  if (wsg_metrics_help_requested(argc, argv)) {
    if (wsg_metrics_print_markdown(stdout, "wsgate-api", api_metric_tables, err, sizeof err) == 0)
      return 0;
    fprintf(stderr, "wsgate-api: --help-metrics: %s\n", err);
    return 1;
  }
  wsg_config_result r = api_config_load(&cfg, argc, argv, environ, err, sizeof err);
  if (r != WSG_CONFIG_OK) {
    if (r != WSG_CONFIG_EXIT)
      fprintf(stderr, "wsgate-api: %s\n(see wsgate-api --help)\n", err);
    api_config_finish(&cfg);
    return r == WSG_CONFIG_EXIT ? 0 : 2;
  }
  wsg_log_setup(cfg.log.min_level, cfg.log.json, "wsgate-api");
  api_config_log(&cfg);
  if (install_signals() != 0) {
    WSG_ERROR("main", "cannot install signal handlers");
    api_config_finish(&cfg);
    return 1;
  }
  api_server *s = NULL;
  int rc = api_server_create(&s, &cfg, err, sizeof err);
  if (rc != 0) {
    WSG_ERROR("main", "%s", err);
    api_config_finish(&cfg);
    return rc == -2 ? 2 : 1;
  }
  WSG_INFO("main", "API on port %d, operations endpoint on port %d", api_server_port(s),
           api_server_ops_port(s));
  uint64_t next_check = wsg_now_mono_ms() + cfg.keys_check_ms;
  while (!stop_requested) {
    struct timespec ts = {0, 50 * 1000000L};
    nanosleep(&ts, NULL);
    api_server_beat(s);
    if (reload_requested) {
      reload_requested = 0;
      WSG_INFO("main", "SIGHUP: reloading the keys file");
      api_server_check_keys(s, true);
    } else if (wsg_now_mono_ms() >= next_check) {
      api_server_check_keys(s, false);
      next_check = wsg_now_mono_ms() + cfg.keys_check_ms;
    }
  }
  WSG_INFO("main", "stop requested: finishing the requests in flight");
  api_server_destroy(s);
  api_config_finish(&cfg);
  return 0;
}
