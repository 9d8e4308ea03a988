/*
 * api_config: the option table of wsgate-api and the checks no single row can express.
 *
 * Threads: main thread only, before any other thread starts.
 */
#include "api_config.h"

#include <stddef.h>
#include <stdio.h>
#include <string.h>

#define OPT(field) offsetof(api_config, field)

static const wsg_option api_rows[] = {
    {"listen-addr", 0, "WSGATE_API_LISTEN_ADDR", WSG_OPT_STRING, OPT(listen_addr), "0.0.0.0", 0, 0,
     NULL, 0, "Address the API listens on (numeric, or localhost)."},
    {"listen-port", 'p', "WSGATE_API_LISTEN_PORT", WSG_OPT_INT, OPT(listen_port), "8080", 0, 65535,
     NULL, 0, "Port of the API (0 picks a free one, logged)."},
    {"keys-file", 'k', "WSGATE_API_KEYS_FILE", WSG_OPT_STRING, OPT(keys_file), NULL, 0, 0, NULL,
     WSG_OPTF_REQUIRED,
     "File of API keys, one \"<name> <secret>\" per line (docs/API.md, \"Keys\"); reloaded on "
     "SIGHUP and when it changes, without a restart."},
    {"tls-cert", 0, "WSGATE_API_TLS_CERT", WSG_OPT_STRING, OPT(tls_cert), NULL, 0, 0, NULL, 0,
     "PEM certificate (chain) file: serve HTTPS. Needs --tls-key."},
    {"tls-key", 0, "WSGATE_API_TLS_KEY", WSG_OPT_STRING, OPT(tls_key), NULL, 0, 0, NULL, 0,
     "PEM private key file of --tls-cert."},
    {"max-body", 0, "WSGATE_API_MAX_BODY", WSG_OPT_SIZE, OPT(max_body), "1m", 1 * WSG_KIB,
     64 * WSG_MIB, NULL, 0,
     "Largest request body; a larger one is answered 413 without being read whole."},
    {"max-batch", 0, "WSGATE_API_MAX_BATCH", WSG_OPT_INT, OPT(max_batch), "100", 1, 10000, NULL, 0,
     "Most commands in one /v1/batch request (413 above)."},
    {"max-payload", 0, "WSGATE_API_MAX_PAYLOAD", WSG_OPT_SIZE, OPT(max_payload), "512k", 0,
     900 * WSG_KIB, NULL, 0,
     "Largest payload (data) of one command (413 above); keep it at or below the processors' "
     "--max-payload, which refuses larger ones."},
    {"max-clients", 0, "WSGATE_API_MAX_CLIENTS", WSG_OPT_INT, OPT(max_clients), "512", 1, 65536,
     NULL, 0, "Most HTTP connections at once; more wait in the kernel's accept backlog."},
    {"threads", 0, "WSGATE_API_THREADS", WSG_OPT_INT, OPT(threads), "2", 1, 64, NULL, 0,
     "HTTP server threads (epoll), each serving its share of the connections. A request waiting "
     "for Kafka holds no thread; one waiting for Redis (an Idempotency-Key, presence, history, "
     "info) holds its thread for the round trip: more threads if those are most requests."},
    {"rate-limit", 0, "WSGATE_API_RATE_LIMIT", WSG_OPT_INT, OPT(rate_limit), "1000", 0, 10000000,
     NULL, 0,
     "Requests per second each API key may make to this instance (429 above, with "
     "Retry-After); 0: no limit."},
    {"rate-burst", 0, "WSGATE_API_RATE_BURST", WSG_OPT_INT, OPT(rate_burst), "2000", 1, 100000000,
     NULL, 0, "Requests a key may make at once above its rate before it is limited."},
    {"keys-check-interval", 0, "WSGATE_API_KEYS_CHECK_INTERVAL", WSG_OPT_DURATION,
     OPT(keys_check_ms), "1s", 100, 1 * WSG_HOUR, NULL, 0,
     "How often the keys file is checked for changes."},
};

static const wsg_option kafka_rows[] = {
    {"commands-topic", 0, "WSGATE_COMMANDS_TOPIC", WSG_OPT_STRING, OPT(commands_topic),
     "wsgate.commands", 0, 0, NULL, 0, "Topic the commands are produced to; it must exist."},
    {"outbound-topic", 0, "WSGATE_OUTBOUND_TOPIC", WSG_OPT_STRING, OPT(outbound_topic),
     "wsgate.outbound", 0, 0, NULL, 0,
     "The gateways' topic: only its partition count (the gateway slots) is read, for "
     "GET /v1/info."},
    {"transaction-timeout", 0, "WSGATE_API_TRANSACTION_TIMEOUT", WSG_OPT_DURATION,
     OPT(txn_timeout_ms), "10s", 1 * WSG_SEC, 15 * 60 * WSG_SEC, NULL, 0,
     "Longest a Kafka transaction (one or several requests' commands) may take to commit; a "
     "request waits at most about this long."},
};

static const wsg_option redis_rows[] = {
    {"idempotency-ttl", 0, "WSGATE_API_IDEMPOTENCY_TTL", WSG_OPT_DURATION, OPT(idempotency_ttl_ms),
     "24h", 1 * WSG_SEC, 30 * 24 * WSG_HOUR, NULL, 0,
     "How long a request's Idempotency-Key is remembered: a retry within it is a no-op."},
};

static const wsg_option_group api = {"api", api_rows, WSG_COUNTOF(api_rows)};
static const wsg_option_group kafka = {"api kafka", kafka_rows, WSG_COUNTOF(kafka_rows)};
static const wsg_option_group redis = {"api redis", redis_rows, WSG_COUNTOF(redis_rows)};

static const wsg_option_override kafka_overrides[] = {
    {.name = "kafka-brokers", .add_flags = WSG_OPTF_REQUIRED},
};
/* 9090 and 9091 are the gateway's and the processor's; 9092 is Kafka's. */
static const wsg_option_override ops_overrides[] = {
    {.name = "http-port", .def = "9093"},
};

static const wsg_config_section api_sections[] = {
    {&api, 0, NULL, 0},
    {&wsg_kafka_group, OPT(kafka), kafka_overrides, WSG_COUNTOF(kafka_overrides)},
    {&kafka, 0, NULL, 0},
    {&wsg_redis_group, OPT(redis), NULL, 0},
    {&redis, 0, NULL, 0},
    {&wsg_ops_group, OPT(http), ops_overrides, WSG_COUNTOF(ops_overrides)},
    {&wsg_log_group, OPT(log), NULL, 0},
};

static const wsg_config_spec api_spec = {
    .program = "wsgate-api",
    .summary = "The HTTP API for backends (docs/API.md): send to users and connections, "
               "disconnect them, publish to channels, in JSON or MessagePack, one command or a "
               "batch; read a channel's presence and history and the cluster's gateways. Each "
               "command request is answered 202 once its commands are committed to the commands "
               "topic in one Kafka transaction; processors execute them. Stateless: run as many "
               "as needed. Every "
               "option can also be set by the environment variable shown; a flag wins over the "
               "environment.",
    .sections = api_sections,
    .nsections = WSG_COUNTOF(api_sections),
    .help_metrics = true,
};

const wsg_config_spec *api_config_spec(void) {
  return &api_spec;
}

static int validate(const api_config *cfg, char *err, size_t errlen) {
  if (!cfg->tls_cert != !cfg->tls_key) {
    snprintf(err, errlen, "--tls-cert and --tls-key go together: give both, or neither");
    return -1;
  }
  if (!cfg->commands_topic || !cfg->commands_topic[0]) {
    snprintf(err, errlen, "--commands-topic must not be empty");
    return -1;
  }
  if (cfg->max_payload >= cfg->max_body) {
    snprintf(err, errlen, "--max-payload (%llu) must be below --max-body (%llu)",
             (unsigned long long)cfg->max_payload, (unsigned long long)cfg->max_body);
    return -1;
  }
  if (cfg->http.port && cfg->http.port == cfg->listen_port) {
    snprintf(err, errlen, "--http-port and --listen-port are both %lld; give each its own port",
             (long long)cfg->listen_port);
    return -1;
  }
  return wsg_kafka_options_check(&cfg->kafka, err, errlen);
}

wsg_config_result api_config_load(api_config *cfg, int argc, char **argv, char **envp, char *err,
                                  size_t errlen) {
  wsg_config_result r = wsg_config_parse(&api_spec, cfg, argc, argv, envp, err, errlen);
  if (r != WSG_CONFIG_OK)
    return r;
  if (wsg_log_options_resolve(&cfg->log, err, errlen) != 0 || validate(cfg, err, errlen) != 0)
    return WSG_CONFIG_ERROR;
  return WSG_CONFIG_OK;
}

void api_config_log(const api_config *cfg) {
  wsg_config_log(&api_spec, cfg);
}

void api_config_finish(api_config *cfg) {
  if (cfg)
    wsg_config_finish(&api_spec, cfg);
}
