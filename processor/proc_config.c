/*
 * proc_config: the option table of wsgate-processor and the checks no single row can express.
 *
 * Threads: main thread only, before any other thread starts.
 */
#include "proc_config.h"
#include "proc_builtin.h"

#include <stddef.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* librdkafka's producer refuses records above message.max.bytes; wsg_kafka sets 1000000. */
#define DEFAULT_MESSAGE_MAX_BYTES 1000000ULL
/* What an outbound envelope adds around its payload when it names one connection: keys, ids,
 * timestamps. Fan-out envelopes are split so their connection lists fit as well. */
#define ENVELOPE_HEADROOM (64ULL * 1024ULL)

#define OPT(field) offsetof(proc_config, field)

/* One row per option; with the shared groups of common/wsg_options.c these make one table
 * (proc_sections below). The help text IS the user documentation (docs/CONFIG-processor.md). */
static const wsg_option handler_rows[] = {
    {"handler", 0, "WSGATE_HANDLER", WSG_OPT_STRING, OPT(handler), "echo", 0, 0, NULL, 0,
     "Handler to run: a built-in (" PROC_BUILTIN_NAMES ") or the path of a shared object exporting "
     "wsgate_handler_v1 (a path contains a '/', e.g. ./libmine.so); see docs/HANDLERS.md."},
    {"handler-arg", 0, "WSGATE_HANDLER_ARG", WSG_OPT_STRING, OPT(handler_arg), NULL, 0, 0, NULL, 0,
     "Configuration string given to the handler's init (chat: max_rooms=N,room_ttl=SECONDS,"
     "dm_offline=silent|tell,max_text=BYTES,max_frame=BYTES; docs/HANDLERS.md)."},
};

/* After the shared Kafka group (brokers, -X): topics, the consumer group and the pipeline. */
static const wsg_option kafka_rows[] = {
    {"inbound-topic", 0, "WSGATE_INBOUND_TOPIC", WSG_OPT_STRING, OPT(inbound_topic),
     "wsgate.inbound", 0, 0, NULL, 0, "Topic of client frames and connect/disconnect events."},
    {"outbound-topic", 0, "WSGATE_OUTBOUND_TOPIC", WSG_OPT_STRING, OPT(outbound_topic),
     "wsgate.outbound", 0, 0, NULL, 0,
     "Topic of replies and pushes; partition k is read by the gateway holding slot k."},
    {"commands-topic", 0, "WSGATE_COMMANDS_TOPIC", WSG_OPT_STRING, OPT(commands_topic),
     "wsgate.commands", 0, 0, NULL, 0,
     "Topic of backends' commands (send, disconnect; docs/API.md), read in the same consumer "
     "group as the inbound topic; empty: none. A missing topic is picked up once created."},
    {"dead-letter-topic", 0, "WSGATE_DEAD_LETTER_TOPIC", WSG_OPT_STRING, OPT(dead_letter_topic),
     NULL, 0, 0, NULL, 0,
     "Topic that receives every inbound record the processor could not handle (undecodable "
     "envelope, rejected payload, handler error), unchanged, with headers saying why; it must "
     "exist. Unset: such records are only counted and logged."},
    {"group-id", 'g', "WSGATE_GROUP_ID", WSG_OPT_STRING, OPT(group_id), "wsgate-processors", 0, 0,
     NULL, 0, "Kafka consumer group shared by all processors of one cluster."},
    {"group-instance-id", 0, "WSGATE_GROUP_INSTANCE_ID", WSG_OPT_STRING, OPT(group_instance_id),
     NULL, 0, 0, NULL, 0,
     "Static group membership (KIP-345): a stable id per processor replica (e.g. the pod name of "
     "a StatefulSet) lets it restart within session.timeout.ms without a rebalance. Unset: "
     "dynamic membership."},
    {"batch-max", 0, "WSGATE_BATCH_MAX", WSG_OPT_INT, OPT(batch_max), "500", 1, 100000, NULL, 0,
     "Most inbound records handled as one batch: their Redis lookups share one pipelined round "
     "trip."},
    {"poll-wait", 0, "WSGATE_POLL_WAIT", WSG_OPT_DURATION, OPT(poll_wait_ms), "100ms", 1,
     10 * WSG_SEC, NULL, 0,
     "Longest wait for the first record of a batch; also how quickly an idle processor notices "
     "SIGTERM and runs its timers."},
    {"max-in-flight", 0, "WSGATE_MAX_IN_FLIGHT", WSG_OPT_INT, OPT(max_in_flight), "100000", 1,
     10000000, NULL, 0,
     "Inbound records whose outbound records Kafka has not yet acknowledged; beyond it the "
     "processor waits for acknowledgements before it reads more."},
    {"max-payload", 0, "WSGATE_MAX_PAYLOAD", WSG_OPT_SIZE, OPT(max_payload), "512k", 1,
     64 * WSG_MIB, NULL, 0,
     "Largest payload a handler may send in one reply or push (the producer's message.max.bytes "
     "must leave 64 KiB of room for the envelope)."},
    {"commit-interval", 0, "WSGATE_COMMIT_INTERVAL", WSG_OPT_DURATION, OPT(commit_interval_ms),
     "1s", 100, 60 * WSG_SEC, NULL, 0,
     "How often completed offsets are committed; after a crash up to this much work is "
     "redelivered to another processor."},
    {"revoke-timeout", 0, "WSGATE_REVOKE_TIMEOUT", WSG_OPT_DURATION, OPT(revoke_timeout_ms), "10s",
     0, 5 * 60 * WSG_SEC, NULL, 0,
     "On a rebalance, how long to wait for the outbound records of partitions being taken away "
     "before committing what completed (the rest is redelivered to the new owner)."},
    {"shutdown-timeout", 0, "WSGATE_SHUTDOWN_TIMEOUT", WSG_OPT_DURATION, OPT(shutdown_timeout_ms),
     "30s", 1 * WSG_SEC, 10 * 60 * WSG_SEC, NULL, 0,
     "On SIGTERM, how long to wait for in-flight outbound records before committing and leaving "
     "the group."},
    {"retry-timeout", 0, "WSGATE_RETRY_TIMEOUT", WSG_OPT_DURATION, OPT(retry_timeout_ms), "0", 0,
     24 * WSG_HOUR, NULL, 0,
     "How long a record is retried while Redis is unreachable or its handler asks for a retry, "
     "before it counts as a handler error (and goes to the dead-letter topic); 0 retries until it "
     "works or the processor stops, holding back its partition meanwhile."},
};

/* After the shared Redis group (the connection): what the processor keeps in Redis. */
static const wsg_option redis_rows[] = {
    {"gateway-cache-ttl", 0, "WSGATE_GATEWAY_CACHE_TTL", WSG_OPT_DURATION,
     OPT(gateway_cache_ttl_ms), "1s", 0, 60 * WSG_SEC, NULL, 0,
     "How long a gateway's slot and liveness read from Redis are reused (0: read for every "
     "batch); a gateway that died is noticed at most this much later."},
    {"unready-after", 0, "WSGATE_UNREADY_AFTER", WSG_OPT_DURATION, OPT(unready_after_ms), "15s", 0,
     10 * 60 * WSG_SEC, NULL, 0,
     "How long Redis may keep failing (or a record or batch keep being retried) before /readyz "
     "turns 503: a Redis Cluster failover (a few seconds) does not mark every processor unready "
     "at once; 0: at the first failure."},
    /* --- resume (docs/ARCHITECTURE.md, "Resume") --- */
    {"resume-window", 0, "WSGATE_RESUME_WINDOW", WSG_OPT_INT, OPT(resume_window), "1000", 0,
     1000000, NULL, 0,
     "Messages kept per user for clients that reconnect and resume: every send to a user gets "
     "the next number of the user's sequence (q) and is stored in the user's replay stream in "
     "Redis, about this many at most (Redis trims whole nodes of about 100 entries). 0 turns "
     "sequencing and storing off: gateways then deliver without q."},
    {"resume-ttl", 0, "WSGATE_RESUME_TTL", WSG_OPT_DURATION, OPT(resume_ttl_ms), "5m", 1 * WSG_SEC,
     24 * WSG_HOUR, NULL, 0,
     "A user's replay stream expires this long after the last message sent to the user; a "
     "client away longer cannot get what it missed (it is told so)."},
    {"resume-seq-ttl", 0, "WSGATE_RESUME_SEQ_TTL", WSG_OPT_DURATION, OPT(resume_seq_ttl_ms), "24h",
     1 * WSG_SEC, 30 * 24 * WSG_HOUR, NULL, 0,
     "A user's sequence counter expires this long after the last message sent to the user (at "
     "least --resume-ttl; keep it equal to the gateways' --resume-seq-ttl). Until then a client "
     "that missed nothing is told so even when the stream itself expired."},

};

/* The direct reply path (docs/GATEWAY.md, "Direct replies"). */
static const wsg_option direct_rows[] = {
    {"direct-secret-file", 0, "WSGATE_DIRECT_SECRET_FILE", WSG_OPT_STRING, OPT(direct_secret_file),
     NULL, 0, 0, NULL, 0,
     "Send replies straight to the owning gateway's direct listener (the `direct` address in its "
     "Redis record) with this file's secret (the gateways' --direct-secret-file) instead of "
     "producing them to the outbound topic; Kafka stays the fallback. Unset: Kafka only."},
    {"direct-connect-timeout", 0, "WSGATE_DIRECT_CONNECT_TIMEOUT", WSG_OPT_DURATION,
     OPT(direct_connect_timeout_ms), "1s", 10, 60 * WSG_SEC, NULL, 0,
     "How long a connection to a gateway's direct listener may take; replies go through Kafka "
     "meanwhile."},
    {"direct-ack-timeout", 0, "WSGATE_DIRECT_ACK_TIMEOUT", WSG_OPT_DURATION,
     OPT(direct_ack_timeout_ms), "2s", 10, 60 * WSG_SEC, NULL, 0,
     "A gateway that acknowledges nothing for this long while replies wait (measured from its "
     "last ack that acknowledged more, not from the oldest reply's send) is given up: they are "
     "produced to Kafka in order, and so is everything for it during --direct-backoff."},
    {"direct-backoff", 0, "WSGATE_DIRECT_BACKOFF", WSG_OPT_DURATION, OPT(direct_backoff_ms), "5s",
     10, 10 * 60 * WSG_SEC, NULL, 0,
     "After a failure, how long a gateway's replies go through Kafka before it is tried again."},
    {"direct-max-unacked", 0, "WSGATE_DIRECT_MAX_UNACKED", WSG_OPT_SIZE, OPT(direct_max_unacked),
     "8m", 64 * WSG_KIB, 1024 * WSG_MIB, NULL, 0,
     "Bytes of replies to one gateway not yet acknowledged; past it the processor waits for the "
     "gateway's acks (backpressure: an overloaded gateway acknowledges, only slowly) and gives it "
     "up as with --direct-ack-timeout when none comes for that long."},
};

static const wsg_option_group handler = {"handler", handler_rows, WSG_COUNTOF(handler_rows)};
static const wsg_option_group kafka = {"processor kafka", kafka_rows, WSG_COUNTOF(kafka_rows)};
static const wsg_option_group redis = {"processor redis", redis_rows, WSG_COUNTOF(redis_rows)};
static const wsg_option_group direct = {"direct replies", direct_rows, WSG_COUNTOF(direct_rows)};

static const wsg_option_override kafka_overrides[] = {
    {.name = "kafka-brokers", .add_flags = WSG_OPTF_REQUIRED},
};
/* The gateway keeps 9090: both daemons on one host (docker-compose, a laptop) need no flag. */
static const wsg_option_override ops_overrides[] = {
    {.name = "http-port", .def = "9091"},
    /* A rebalance may hold the loop for --revoke-timeout (10 s) inside one poll. */
    {.name = "liveness-stall", .def = "30s"},
};

/* The order of --help and docs/CONFIG-processor.md. */
static const wsg_config_section proc_sections[] = {
    {&handler, 0, NULL, 0},
    {&wsg_kafka_group, OPT(kafka), kafka_overrides, WSG_COUNTOF(kafka_overrides)},
    {&kafka, 0, NULL, 0},
    {&wsg_redis_group, OPT(redis), NULL, 0},
    {&redis, 0, NULL, 0},
    {&direct, 0, NULL, 0},
    {&wsg_chns_group, OPT(channels), NULL, 0},
    {&wsg_ops_group, OPT(http), ops_overrides, WSG_COUNTOF(ops_overrides)},
    {&wsg_log_group, OPT(log), NULL, 0},
};

static const wsg_config_spec proc_spec = {
    .program = "wsgate-processor",
    .summary =
        "The business side of wsgate: reads the envelopes gateways produce to the inbound "
        "topic as one Kafka consumer group, runs a handler on each (a built-in: " PROC_BUILTIN_NAMES
        ", or your own shared object), and routes what the handler sends to the gateway that holds "
        "each target connection, found through Redis. An inbound offset is committed only "
        "after every record it caused is acknowledged by Kafka. Every option can also be "
        "set by the environment variable shown; a flag wins over the environment.",
    .sections = proc_sections,
    .nsections = WSG_COUNTOF(proc_sections),
    .help_metrics = true,
};

const wsg_config_spec *proc_config_spec(void) {
  return &proc_spec;
}

/* The producer's message.max.bytes after the user's -X overrides. */
static int message_max_bytes(const proc_config *cfg, unsigned long long *out, char *err,
                             size_t errlen) {
  *out = DEFAULT_MESSAGE_MAX_BYTES;
  for (size_t i = 0; i < cfg->kafka.props.count; i++) {
    if (strcmp(cfg->kafka.props.keys[i], "message.max.bytes") != 0)
      continue;
    char *end = NULL;
    unsigned long long v = strtoull(cfg->kafka.props.values[i], &end, 10);
    if (!end || *end || end == cfg->kafka.props.values[i]) {
      snprintf(err, errlen, "-X message.max.bytes=%s is not a number", cfg->kafka.props.values[i]);
      return -1;
    }
    *out = v;
  }
  return 0;
}

static bool empty(const char *s) {
  return s == NULL || s[0] == '\0';
}

int proc_config_validate(const proc_config *cfg, char *err, size_t errlen) {
  if (wsg_kafka_options_check(&cfg->kafka, err, errlen) != 0)
    return -1;
  wsg_chns *ns;
  if (wsg_chns_resolve(&cfg->channels, &ns, err, errlen) != 0)
    return -1;
  wsg_chns_destroy(ns);
  if (empty(cfg->inbound_topic) || empty(cfg->outbound_topic)) {
    snprintf(err, errlen, "--inbound-topic and --outbound-topic must not be empty");
    return -1;
  }
  if (strcmp(cfg->inbound_topic, cfg->outbound_topic) == 0) {
    snprintf(err, errlen,
             "--inbound-topic and --outbound-topic are both %s; the processor would read its "
             "own replies",
             cfg->inbound_topic);
    return -1;
  }
  if (!empty(cfg->commands_topic) && (strcmp(cfg->commands_topic, cfg->inbound_topic) == 0 ||
                                      strcmp(cfg->commands_topic, cfg->outbound_topic) == 0)) {
    snprintf(err, errlen,
             "--commands-topic %s is also the inbound or outbound topic; give it a topic of its "
             "own (default wsgate.commands)",
             cfg->commands_topic);
    return -1;
  }
  if (cfg->dead_letter_topic) {
    if (cfg->dead_letter_topic[0] == '\0') {
      snprintf(err, errlen, "--dead-letter-topic is empty; unset it to disable dead-lettering");
      return -1;
    }
    if (strcmp(cfg->dead_letter_topic, cfg->inbound_topic) == 0 ||
        strcmp(cfg->dead_letter_topic, cfg->outbound_topic) == 0) {
      snprintf(err, errlen,
               "--dead-letter-topic %s is also the inbound or outbound topic; give it a topic of "
               "its own",
               cfg->dead_letter_topic);
      return -1;
    }
  }
  if (cfg->http.liveness_stall_ms <= cfg->revoke_timeout_ms + cfg->poll_wait_ms) {
    snprintf(
        err, errlen,
        "--liveness-stall (%" PRIu64 " ms) must be longer than --revoke-timeout (%" PRIu64
        " ms) plus --poll-wait (%" PRIu64
        " ms): a rebalance holds the consumer loop that long, and /healthz would fail during it",
        cfg->http.liveness_stall_ms, cfg->revoke_timeout_ms, cfg->poll_wait_ms);
    return -1;
  }
  if (empty(cfg->group_id)) {
    snprintf(err, errlen, "--group-id must not be empty");
    return -1;
  }
  if (cfg->group_instance_id && cfg->group_instance_id[0] == '\0') {
    snprintf(err, errlen, "--group-instance-id is empty; unset it for dynamic membership");
    return -1;
  }
  if (empty(cfg->handler)) {
    snprintf(err, errlen,
             "--handler must name a built-in (" PROC_BUILTIN_NAMES ") or a shared object path");
    return -1;
  }
  if (cfg->batch_max > cfg->max_in_flight) {
    snprintf(err, errlen,
             "--batch-max (%lld) is above --max-in-flight (%lld): a single batch could never "
             "start",
             (long long)cfg->batch_max, (long long)cfg->max_in_flight);
    return -1;
  }
  unsigned long long mmb = 0;
  if (message_max_bytes(cfg, &mmb, err, errlen) != 0)
    return -1;
  if ((unsigned long long)cfg->max_payload + ENVELOPE_HEADROOM > mmb) {
    snprintf(err, errlen,
             "--max-payload (%llu bytes) plus 64 KiB for the envelope exceeds the producer's "
             "message.max.bytes (%llu); lower --max-payload or raise -X message.max.bytes (and "
             "the topic's max.message.bytes)",
             (unsigned long long)cfg->max_payload, mmb);
    return -1;
  }
  if (empty(cfg->redis.host)) {
    snprintf(err, errlen, "--redis-host must not be empty");
    return -1;
  }
  if (cfg->resume_seq_ttl_ms < cfg->resume_ttl_ms) {
    snprintf(err, errlen,
             "--resume-seq-ttl (%llu ms) is shorter than --resume-ttl (%llu ms): a counter must "
             "outlive the stream it numbers",
             (unsigned long long)cfg->resume_seq_ttl_ms, (unsigned long long)cfg->resume_ttl_ms);
    return -1;
  }
  return 0;
}

wsg_config_result proc_config_load(proc_config *cfg, int argc, char **argv, char **envp, char *err,
                                   size_t errlen) {
  wsg_config_result r = wsg_config_parse(&proc_spec, cfg, argc, argv, envp, err, errlen);
  if (r != WSG_CONFIG_OK)
    return r;
  if (wsg_log_options_resolve(&cfg->log, err, errlen) != 0)
    return WSG_CONFIG_ERROR;
  if (proc_config_validate(cfg, err, errlen) != 0)
    return WSG_CONFIG_ERROR;
  return WSG_CONFIG_OK;
}

void proc_config_log(const proc_config *cfg) {
  wsg_config_log(&proc_spec, cfg);
}

void proc_config_finish(proc_config *cfg) {
  if (!cfg)
    return;
  wsg_config_finish(&proc_spec, cfg);
}
