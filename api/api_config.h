/*
 * api_config: every option of wsgate-api, declared once in wsg_config tables (its own in
 * api_config.c; the Kafka, Redis, operations HTTP and log groups of common/wsg_options.c) that
 * drive flag and WSGATE_* environment parsing, --help, --help-markdown (docs/CONFIG-api.md) and
 * the start-up log line.
 *
 * Threads: main thread only, before any other thread starts; read-only afterwards.
 */
#ifndef API_CONFIG_H
#define API_CONFIG_H

#include <stdint.h>

#include "wsg_config.h"
#include "wsg_options.h"

typedef struct {
  /* --- the API's HTTP server --- */
  char *listen_addr;
  int64_t listen_port;
  char *keys_file;
  char *tls_cert; /* path; NULL: plain HTTP */
  char *tls_key;
  uint64_t max_body;
  int64_t max_batch;
  uint64_t max_payload;
  int64_t max_clients;
  int64_t threads;
  int64_t rate_limit; /* requests per second per key; 0: none */
  int64_t rate_burst;
  uint64_t keys_check_ms; /* how often the keys file is checked for changes */
  /* --- Kafka --- */
  wsg_kafka_options kafka;
  char *commands_topic;
  char *outbound_topic;
  uint64_t txn_timeout_ms;
  /* --- Redis (idempotency) --- */
  wsg_redis_options redis;
  uint64_t idempotency_ttl_ms;
  /* --- operations endpoint and logging --- */
  wsg_ops_options http;
  wsg_log_options log;
} api_config;

const wsg_config_spec *api_config_spec(void);
/* As proc_config_load: WSG_CONFIG_OK, _EXIT (exit 0) or _ERROR with `err` (exit 2). */
wsg_config_result api_config_load(api_config *cfg, int argc, char **argv, char **envp, char *err,
                                  size_t errlen);
void api_config_log(const api_config *cfg);
void api_config_finish(api_config *cfg); /* safe on a zeroed struct */

#endif
