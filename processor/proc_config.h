/*
 * proc_config: every option of wsgate-processor, declared once in wsg_config tables (its own in
 * proc_config.c; the Kafka, Redis, operations HTTP and log groups in common/wsg_options.c) that
 * drive flag and WSGATE_* environment parsing, validation, --help,
 * --help-markdown (docs/CONFIG-processor.md) and the start-up log line; plus the cross-field checks
 * and the values derived from the options.
 *
 * Threads: main thread only, before any other thread starts; read-only afterwards.
 */
#ifndef PROC_CONFIG_H
#define PROC_CONFIG_H

#include <stdbool.h>
#include <stdint.h>

#include "wsg_config.h"
#include "wsg_log.h"
#include "wsg_chns.h"
#include "wsg_options.h"

typedef struct {
  /* --- handler --- */
  char *handler;     /* "echo", "chat", or a path to a shared object */
  char *handler_arg; /* passed to the handler's init; may be NULL */

  /* --- Kafka --- */
  wsg_kafka_options kafka; /* shared group: brokers, -X */
  char *inbound_topic;
  char *outbound_topic;
  char *commands_topic;    /* "" : no commands topic */
  char *dead_letter_topic; /* NULL: bad input is only counted and logged */
  char *group_id;
  char *group_instance_id; /* NULL: dynamic membership */
  int64_t batch_max;
  uint64_t poll_wait_ms;
  int64_t max_in_flight;
  uint64_t max_payload;
  uint64_t commit_interval_ms;
  uint64_t revoke_timeout_ms;
  uint64_t shutdown_timeout_ms;
  uint64_t retry_timeout_ms; /* 0: retry until it works or the processor stops */

  /* --- Redis --- */
  wsg_redis_options redis; /* shared group: the connection */
  uint64_t gateway_cache_ttl_ms;
  uint64_t unready_after_ms; /* /readyz 503 once Redis or a retry has been failing this long */

  /* --- direct replies (proc_direct) --- */
  char *direct_secret_file; /* NULL: every reply goes through Kafka */
  uint64_t direct_connect_timeout_ms;
  uint64_t direct_ack_timeout_ms;
  uint64_t direct_backoff_ms;
  uint64_t direct_max_unacked;

  /* --- resume --- */
  int64_t resume_window; /* entries kept per user; 0: no sequence, no replay stream */
  uint64_t resume_ttl_ms;
  uint64_t resume_seq_ttl_ms;

  /* --- channels (shared group: namespaces' history options) --- */
  wsg_chns_options channels;

  /* --- operations endpoint (shared group; default port 9091 here) --- */
  wsg_ops_options http;

  /* --- logging (shared group; log.min_level and log.json derived by proc_config_load) --- */
  wsg_log_options log;
} proc_config;

/* The option table (for --help and tests). Borrowed, static. */
const wsg_config_spec *proc_config_spec(void);

/*
 * Parses defaults < environment (`envp`, may be NULL) < argv into `cfg` (zeroed by the caller),
 * then validates across fields and fills the derived values. Returns WSG_CONFIG_OK,
 * WSG_CONFIG_EXIT (help or version printed: exit 0) or WSG_CONFIG_ERROR with the problem and what
 * to do in `err` (exit 2). Whatever the result, release with proc_config_finish().
 */
wsg_config_result proc_config_load(proc_config *cfg, int argc, char **argv, char **envp, char *err,
                                   size_t errlen);

/* The cross-field checks alone (exposed for tests). Returns 0, or -1 with the message in `err`. */
int proc_config_validate(const proc_config *cfg, char *err, size_t errlen);

void proc_config_log(const proc_config *cfg);
void proc_config_finish(proc_config *cfg); /* safe on a zeroed struct */

#endif
