/*
 * wsgate-processor: parses the configuration (exit 2 with the message when it is invalid), sets
 * up logging and signals, and runs the processor until SIGTERM or SIGINT. Exit status: 0 after a
 * clean stop, also one asked for (SIGTERM/SIGINT) during the start-up wait for Kafka; 1 after a
 * failure; 2 on an invalid configuration.
 *
 * Threads: the main thread becomes the consumer thread.
 */
#include <signal.h>
#include <stdio.h>
#include <string.h>

#include "proc_config.h"
#include "proc_metrics.h"
#include "processor.h"
#include "wsg_log.h"

extern char **environ;

/* Set by the signal handler, read by the processor's loop (the only global of the program). */
static volatile sig_atomic_t stop_requested;

static void on_signal(int sig) {
  (void)sig;
  stop_requested = 1;
}

static int install_signals(void) {
  struct sigaction sa;
  memset(&sa, 0, sizeof(sa));
  sa.sa_handler = on_signal;
  sigemptyset(&sa.sa_mask);
  if (sigaction(SIGTERM, &sa, NULL) != 0 || sigaction(SIGINT, &sa, NULL) != 0)
    return -1;
  /* hiredis writes with write(2): a Redis that closed the connection must give an error, not
   * kill the process. */
  sa.sa_handler = SIG_IGN;
  return sigaction(SIGPIPE, &sa, NULL);
}

int main(int argc, char **argv) {
  proc_config cfg;
  memset(&cfg, 0, sizeof(cfg));
  char err[1024] = "";
  /* Before the options, which it needs none of (wsg_config's built-ins are --help and the like). */
  if (wsg_metrics_help_requested(argc, argv)) {
    if (wsg_metrics_print_markdown(stdout, "wsgate-processor", proc_metric_tables, err,
                                   sizeof(err)) == 0)
      return 0;
    fprintf(stderr, "wsgate-processor: --help-metrics: %s\n", err);
    return 1;
  }
  wsg_config_result r = proc_config_load(&cfg, argc, argv, environ, err, sizeof(err));
  if (r == WSG_CONFIG_EXIT) {
    proc_config_finish(&cfg);
    return 0;
  }
  if (r != WSG_CONFIG_OK) {
    fprintf(stderr, "wsgate-processor: %s\n(see wsgate-processor --help)\n", err);
    proc_config_finish(&cfg);
    return 2;
  }
  wsg_log_setup(cfg.log.min_level, cfg.log.json, "wsgate-processor");
  proc_config_log(&cfg);
  if (install_signals() != 0) {
    WSG_ERROR("main", "cannot install signal handlers");
    proc_config_finish(&cfg);
    return 1;
  }

  proc_processor *p = NULL;
  int rc = proc_processor_create(&p, &cfg, &stop_requested, err, sizeof(err));
  if (rc != 0 && stop_requested && rc != -2) {
    /* A stop asked for during the wait for Kafka is not a failure. */
    WSG_INFO("main", "stopped during start-up (%s)", err);
    proc_config_finish(&cfg);
    return 0;
  }
  if (rc != 0) {
    WSG_ERROR("main", "%s", err);
    proc_config_finish(&cfg);
    return rc == -2 ? 2 : 1;
  }
  int status = proc_processor_run(p, &stop_requested);
  proc_processor_destroy(p);
  proc_config_finish(&cfg);
  return status;
}
