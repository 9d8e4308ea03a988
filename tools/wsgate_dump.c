/*
 * wsgate-dump: prints envelopes as JSON lines, one per record, in the rendering of
 * docs/PROTOCOL.md ("JSON rendering"), the same as the golden vectors; with --commands, the
 * commands of the commands topic (wsg_command.h) in the same rendering.
 *
 * Two sources:
 *   - a Kafka topic: assign() of one or every partition from beginning, end, an offset or N
 *     records before the end; no consumer group, nothing committed;
 *   - standard input in kcat's length-prefixed framing, `kcat -C ... -f '%R%s'`: each record is
 *     a 4-byte big-endian signed length (-1 for a null payload) followed by that many bytes.
 * A record that does not decode gives one line on stderr (where it was, the error's name, the
 * field, the message) and the dump goes on.
 *
 * Exit status: 0 every record decoded, 1 fatal error (broker, framing), 2 usage error,
 * 3 finished but some records did not decode.
 *
 * Threads: main only (librdkafka runs its own); the signal handlers only set a flag.
 */
#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "wsg_config.h"
#include "wsg_envelope.h"
#include "wsg_envelope_json.h"
#include "wsg_kafka.h"
#include "wsg_log.h"
#include "wsg_options.h"

extern char **environ;

enum { EXIT_FATAL = 1, EXIT_USAGE = 2, EXIT_BAD_RECORDS = 3 };

/* The largest record accepted from stdin: the largest payload plus room for every other field
 * (cs alone can take 65536 x 9 bytes). Kafka's own limit (message.max.bytes) is far lower. */
#define MAX_RECORD          ((size_t)WSG_MAX_PAYLOAD + (1u << 20))
#define POLL_MS             200
#define METADATA_TIMEOUT_MS 10000

typedef struct {
  wsg_kafka_options kafka; /* the shared group, its brokers flag spelt --brokers */
  char *topic;
  int64_t partition; /* -1: every partition */
  char *offset;
  int64_t count; /* 0: no limit */
  bool exit_at_end;
  bool from_stdin;
  bool commands;
  char *user;
  char *type;
  char *log_level;
} dump_config;

// clang-format off
static const wsg_option dump_options[] = {
    {"topic", 't', "WSGATE_DUMP_TOPIC", WSG_OPT_STRING, offsetof(dump_config, topic),
     "wsgate.inbound", 0, 0, NULL, 0, "Topic to read."},
    {"partition", 'p', "WSGATE_DUMP_PARTITION", WSG_OPT_INT, offsetof(dump_config, partition),
     "-1", -1, INT32_MAX, NULL, 0, "Partition to read; -1 reads every partition of the topic."},
    {"offset", 'o', "WSGATE_DUMP_OFFSET", WSG_OPT_STRING, offsetof(dump_config, offset),
     "beginning", 0, 0, NULL, 0,
     "Where to start in each partition: beginning, end, an offset N, or -N for the last N "
     "records."},
    {"count", 'c', "WSGATE_DUMP_COUNT", WSG_OPT_INT, offsetof(dump_config, count), "0", 0,
     INT64_MAX, NULL, 0, "Stop after printing this many envelopes; 0 for no limit."},
    {"exit", 'e', "WSGATE_DUMP_EXIT", WSG_OPT_BOOL, offsetof(dump_config, exit_at_end), "false",
     0, 0, NULL, 0, "Stop at the end of every partition instead of waiting for new records."},
    {"stdin", 0, NULL, WSG_OPT_BOOL, offsetof(dump_config, from_stdin), "false", 0, 0, NULL, 0,
     "Read kcat -f '%R%s' framed records from standard input instead of Kafka."},
    {"commands", 0, NULL, WSG_OPT_BOOL, offsetof(dump_config, commands), "false", 0, 0, NULL, 0,
     "Decode the records as commands (the commands topic, wsgate.commands; docs/API.md) "
     "instead of envelopes."},
    {"user", 'u', NULL, WSG_OPT_STRING, offsetof(dump_config, user), NULL, 0, 0, NULL, 0,
     "Print only records whose user id (u; with --commands, u or one of us) is exactly this."},
    {"type", 'T', NULL, WSG_OPT_ENUM, offsetof(dump_config, type), NULL, 0, 0,
     "msg|connect|disconnect|deliver|close|publish|subscribe|unsubscribe|subscribe_request|"
     "joinleave|send|presence|history|info",
     0,
     "Print only records of this type (t): an envelope's, or with --commands a command's."},
    {"log-level", 0, "WSGATE_LOG_LEVEL", WSG_OPT_ENUM, offsetof(dump_config, log_level), "warn",
     0, 0, "debug|info|warn|error", 0, "Least severe librdkafka message to show on stderr."},
};
// clang-format on

/* Not required: --stdin needs no broker. */
static const wsg_option_override kafka_overrides[] = {
    {.name = "kafka-brokers", .flag = "brokers"},
};
static const wsg_option_group dump_group = {"dump", dump_options, WSG_COUNTOF(dump_options)};
static const wsg_config_section dump_sections[] = {
    {&wsg_kafka_group, offsetof(dump_config, kafka), kafka_overrides, WSG_COUNTOF(kafka_overrides)},
    {&dump_group, 0, NULL, 0},
};

static const wsg_config_spec dump_spec = {
    .program = "wsgate-dump",
    .summary = "Prints wsgate envelopes as JSON lines (docs/PROTOCOL.md, \"JSON rendering\"): "
               "from a Kafka topic, read with assign() and no consumer group, or from standard "
               "input in kcat's length-prefixed framing. A record that does not decode is "
               "reported on stderr with its position, error and field, and the dump goes on. "
               "Exit status: 0 all records decoded, 1 fatal error, 2 usage error, 3 some records "
               "did not decode.",
    .sections = dump_sections,
    .nsections = WSG_COUNTOF(dump_sections),
};

static const char examples[] =
    "\nExamples:\n"
    "  wsgate-dump -b 127.0.0.1:19092 -t wsgate.inbound -e\n"
    "  wsgate-dump -b 127.0.0.1:19092 -t wsgate.outbound -p 3 -o -10 -e --type deliver\n"
    "  kcat -C -b 127.0.0.1:19092 -t wsgate.inbound -e -f '%R%s' | wsgate-dump --stdin --user "
    "alice\n"
    "  wsgate-dump -b 127.0.0.1:19092 -t wsgate.commands --commands -e --type publish\n";

static volatile sig_atomic_t stop_requested;

static void on_signal(int sig) {
  (void)sig;
  stop_requested = 1;
}

/* Decoding, filtering and printing, shared by both sources. */
typedef struct {
  const dump_config *cfg;
  int type; /* a wsg_env_kind, or with --commands a wsg_cmd_kind; 0: any */
  wsg_buf json;
  uint64_t printed;
  uint64_t bad;
} printer;

static bool user_is(const printer *pr, const char *u, size_t len) {
  return len == strlen(pr->cfg->user) && memcmp(u, pr->cfg->user, len) == 0;
}

/* The outcome of decoding, filtering and rendering one record. */
typedef enum { R_PRINT, R_SKIP, R_BAD, R_UNRENDERED } outcome;

/* A command into pr->json; *rc and *field say why on R_BAD / R_UNRENDERED. */
static outcome render_command(printer *pr, const uint8_t *data, size_t len, int *rc,
                              const char **field) {
  wsg_command cmd;
  if ((*rc = wsg_command_decode(&cmd, data, len, field)) != WSG_ENV_OK)
    return R_BAD;
  if (pr->type != 0 && (int)cmd.kind != pr->type)
    return R_SKIP;
  if (pr->cfg->user != NULL) {
    bool match = (cmd.fields & WSG_CF_USER) && user_is(pr, cmd.user.ptr, cmd.user.len);
    size_t pos = 0;
    wsg_cmd_str u;
    while (!match && (cmd.fields & WSG_CF_USERS) && wsg_cmd_users_next(&cmd, &pos, &u) == 1)
      match = user_is(pr, u.ptr, u.len);
    if (!match)
      return R_SKIP;
  }
  *rc = wsg_command_to_json(&cmd, &pr->json);
  return *rc == WSG_ENV_OK ? R_PRINT : R_UNRENDERED;
}

/* An envelope, as render_command. */
static outcome render_envelope(printer *pr, const uint8_t *data, size_t len, int *rc,
                               const char **field) {
  wsg_envelope env;
  if ((*rc = wsg_envelope_decode(&env, data, len, field)) != WSG_ENV_OK)
    return R_BAD;
  if (pr->type != 0 && (int)env.kind != pr->type)
    return R_SKIP;
  if (pr->cfg->user != NULL && (!(env.fields & WSG_F_USER) || !user_is(pr, env.user, env.user_len)))
    return R_SKIP;
  *rc = wsg_envelope_to_json(&env, &pr->json);
  return *rc == WSG_ENV_OK ? R_PRINT : R_UNRENDERED;
}

/* Prints one record or its error; `where` says where the record was, for the error line.
 * Returns 0, or -1 when stdout is gone (nothing more to do). */
static int print_record(printer *pr, const uint8_t *data, size_t len, const char *where) {
  const char *field = "";
  int rc = WSG_ENV_OK;
  switch (pr->cfg->commands ? render_command(pr, data, len, &rc, &field)
                            : render_envelope(pr, data, len, &rc, &field)) {
  case R_SKIP:
    return 0;
  case R_BAD:
    pr->bad++;
    fprintf(stderr, "wsgate-dump: %s: %s%s%s%s: %s\n", where, wsg_env_err_name(rc),
            field[0] ? " in field \"" : "", field, field[0] ? "\"" : "", wsg_env_strerror(rc));
    return 0;
  case R_UNRENDERED:
    pr->bad++;
    fprintf(stderr, "wsgate-dump: %s: cannot render: %s\n", where, wsg_env_strerror(rc));
    return 0;
  case R_PRINT:
    break;
  }
  pr->json.data[pr->json.len] = '\n'; /* replaces the NUL the rendering leaves there */
  if (fwrite(pr->json.data, 1, pr->json.len + 1, stdout) != pr->json.len + 1 ||
      fflush(stdout) != 0) {
    if (errno != EPIPE)
      fprintf(stderr, "wsgate-dump: cannot write to stdout: %s\n", strerror(errno));
    return -1;
  }
  pr->printed++;
  return 0;
}

static bool enough(const printer *pr) {
  return pr->cfg->count > 0 && pr->printed >= (uint64_t)pr->cfg->count;
}

/* ---- stdin: kcat -f '%R%s' ---------------------------------------------------------------------
 */

/* Reads exactly n bytes. Returns n, fewer at end of input, or -1 on a read error. */
static ssize_t read_full(int fd, uint8_t *buf, size_t n) {
  size_t got = 0;
  while (got < n && !stop_requested) {
    ssize_t r = read(fd, buf + got, n - got);
    if (r == 0)
      break;
    if (r < 0) {
      if (errno == EINTR)
        continue;
      return -1;
    }
    got += (size_t)r;
  }
  return (ssize_t)got;
}

static int dump_stdin(printer *pr) {
  uint8_t *buf = NULL;
  size_t alloc = 0;
  uint64_t record = 0, pos = 0;
  int status = 0;

  while (!stop_requested && !enough(pr)) {
    uint8_t hdr[4];
    ssize_t r = read_full(STDIN_FILENO, hdr, sizeof hdr);
    if (r == 0)
      break; /* clean end between records */
    if (r != (ssize_t)sizeof hdr) {
      fprintf(stderr, "wsgate-dump: stdin: %s inside the length of record %" PRIu64 "\n",
              r < 0 ? strerror(errno) : "input ends", record);
      status = EXIT_FATAL;
      break;
    }
    int32_t len =
        (int32_t)((uint32_t)hdr[0] << 24 | (uint32_t)hdr[1] << 16 | (uint32_t)hdr[2] << 8 | hdr[3]);
    char where[96];
    snprintf(where, sizeof where, "stdin record %" PRIu64 " (byte %" PRIu64 ")", record, pos);
    pos += sizeof hdr;
    record++;
    if (len == -1) {
      pr->bad++;
      fprintf(stderr, "wsgate-dump: %s: null payload (a tombstone, not an envelope)\n", where);
      continue;
    }
    if (len < 0 || (size_t)len > MAX_RECORD) {
      fprintf(stderr,
              "wsgate-dump: %s: length %" PRId32 " is not a record length: is the input kcat's "
              "-f '%%R%%s' output?\n",
              where, len);
      status = EXIT_FATAL;
      break;
    }
    if ((size_t)len > alloc) {
      uint8_t *p = realloc(buf, (size_t)len);
      if (p == NULL) {
        fprintf(stderr, "wsgate-dump: %s: out of memory for %" PRId32 " bytes\n", where, len);
        status = EXIT_FATAL;
        break;
      }
      buf = p;
      alloc = (size_t)len;
    }
    r = read_full(STDIN_FILENO, buf, (size_t)len);
    if (r != len) {
      if (stop_requested)
        break;
      fprintf(stderr, "wsgate-dump: %s: %s after %zd of %" PRId32 " bytes\n", where,
              r < 0 ? strerror(errno) : "input ends", r < 0 ? (ssize_t)0 : r, len);
      status = EXIT_FATAL;
      break;
    }
    pos += (uint64_t)len;
    if (print_record(pr, buf, (size_t)len, where) != 0)
      break;
  }
  free(buf);
  return status;
}

/* ---- Kafka ------------------------------------------------------------------------------------
 */

/* "beginning", "end", "N" or "-N" as a librdkafka start offset; -1 if none of those. */
static int parse_offset(const char *text, int64_t *out) {
  if (strcmp(text, "beginning") == 0) {
    *out = RD_KAFKA_OFFSET_BEGINNING;
    return 0;
  }
  if (strcmp(text, "end") == 0) {
    *out = RD_KAFKA_OFFSET_END;
    return 0;
  }
  char *end = NULL;
  errno = 0;
  long long v = strtoll(text, &end, 10);
  if (errno != 0 || end == text || *end != '\0')
    return -1;
  if (text[0] == '-') {
    if (v == 0 || v < -(long long)INT32_MAX)
      return -1;
    *out = RD_KAFKA_OFFSET_TAIL(-v);
  } else {
    *out = v;
  }
  return 0;
}

static int dump_kafka(printer *pr) {
  const dump_config *cfg = pr->cfg;
  char err[512];
  int64_t start;
  int status = 0;

  if (parse_offset(cfg->offset, &start) != 0) {
    fprintf(stderr, "wsgate-dump: --offset: '%s' is not beginning, end, N or -N\n", cfg->offset);
    return EXIT_USAGE;
  }
  rd_kafka_conf_t *conf = wsg_kafka_conf_new(WSG_KAFKA_CONSUMER_ASSIGN, cfg->kafka.brokers,
                                             &cfg->kafka.props, err, sizeof err);
  if (conf == NULL || wsg_kafka_conf_set(conf, "client.id", "wsgate-dump", err, sizeof err) != 0 ||
      (cfg->exit_at_end &&
       wsg_kafka_conf_set(conf, "enable.partition.eof", "true", err, sizeof err) != 0)) {
    fprintf(stderr, "wsgate-dump: %s\n", err);
    if (conf != NULL)
      rd_kafka_conf_destroy(conf);
    return EXIT_FATAL;
  }
  rd_kafka_t *rk = wsg_kafka_new(RD_KAFKA_CONSUMER, conf, err, sizeof err);
  if (rk == NULL) {
    fprintf(stderr, "wsgate-dump: %s\n", err);
    return EXIT_FATAL;
  }

  int partitions = wsg_kafka_topic_partitions(rk, cfg->topic, METADATA_TIMEOUT_MS, err, sizeof err);
  rd_kafka_topic_partition_list_t *list = NULL;
  bool *at_end = NULL;
  if (partitions < 0) {
    fprintf(stderr, "wsgate-dump: %s\n", err);
    status = EXIT_FATAL;
    goto out;
  }
  if (cfg->partition >= partitions) {
    fprintf(stderr, "wsgate-dump: --partition %" PRId64 ": topic %s has partitions 0..%d\n",
            cfg->partition, cfg->topic, partitions - 1);
    status = EXIT_USAGE;
    goto out;
  }
  list = rd_kafka_topic_partition_list_new(partitions);
  at_end = calloc((size_t)partitions, sizeof *at_end);
  if (list == NULL || at_end == NULL) {
    fprintf(stderr, "wsgate-dump: out of memory\n");
    status = EXIT_FATAL;
    goto out;
  }
  for (int p = 0; p < partitions; p++) {
    if (cfg->partition >= 0 && p != cfg->partition) {
      at_end[p] = true; /* not read: counts as done for --exit */
      continue;
    }
    rd_kafka_topic_partition_list_add(list, cfg->topic, p)->offset = start;
  }
  rd_kafka_resp_err_t rerr = rd_kafka_assign(rk, list);
  if (rerr != RD_KAFKA_RESP_ERR_NO_ERROR) {
    fprintf(stderr, "wsgate-dump: cannot assign %s: %s\n", cfg->topic, rd_kafka_err2str(rerr));
    status = EXIT_FATAL;
    goto out;
  }

  while (!stop_requested && !enough(pr)) {
    rd_kafka_message_t *msg = rd_kafka_consumer_poll(rk, POLL_MS);
    if (msg == NULL)
      continue;
    bool quit = false;
    if (msg->err == RD_KAFKA_RESP_ERR__PARTITION_EOF) {
      if (msg->partition >= 0 && msg->partition < partitions)
        at_end[msg->partition] = true;
      bool all = true;
      for (int p = 0; p < partitions; p++)
        all &= at_end[p];
      quit = all && cfg->exit_at_end;
    } else if (msg->err != RD_KAFKA_RESP_ERR_NO_ERROR) {
      /* Most consumer errors are transient (librdkafka retries); a vanished topic is not. */
      fprintf(stderr, "wsgate-dump: %s [%" PRId32 "]: %s\n", cfg->topic, msg->partition,
              rd_kafka_message_errstr(msg));
      if (msg->err == RD_KAFKA_RESP_ERR__UNKNOWN_TOPIC ||
          msg->err == RD_KAFKA_RESP_ERR__UNKNOWN_PARTITION ||
          msg->err == RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART) {
        status = EXIT_FATAL;
        quit = true;
      }
    } else {
      char where[160];
      snprintf(where, sizeof where, "%s [%" PRId32 "] offset %" PRId64, cfg->topic, msg->partition,
               msg->offset);
      if (msg->partition >= 0 && msg->partition < partitions)
        at_end[msg->partition] = false;
      if (msg->payload == NULL) {
        pr->bad++;
        fprintf(stderr, "wsgate-dump: %s: null payload (a tombstone, not an envelope)\n", where);
      } else if (print_record(pr, msg->payload, msg->len, where) != 0) {
        quit = true;
      }
    }
    rd_kafka_message_destroy(msg);
    if (quit)
      break;
  }

out:
  if (list != NULL)
    rd_kafka_topic_partition_list_destroy(list);
  free(at_end);
  rd_kafka_consumer_close(rk);
  rd_kafka_destroy(rk);
  return status;
}

static bool asked_for_help(int argc, char **argv) {
  for (int i = 1; i < argc; i++)
    if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0)
      return true;
  return false;
}

int main(int argc, char **argv) {
  dump_config cfg = {0};
  char err[512];
  int status;

  switch (wsg_config_parse(&dump_spec, &cfg, argc, argv, environ, err, sizeof err)) {
  case WSG_CONFIG_OK:
    break;
  case WSG_CONFIG_EXIT:
    if (asked_for_help(argc, argv))
      fputs(examples, stdout);
    wsg_config_finish(&dump_spec, &cfg);
    return 0;
  default:
    fprintf(stderr, "wsgate-dump: %s\nTry 'wsgate-dump --help'.\n", err);
    wsg_config_finish(&dump_spec, &cfg);
    return EXIT_USAGE;
  }

  wsg_log_level level = WSG_LOG_WARN;
  wsg_log_level_parse(cfg.log_level, &level); /* the ENUM row already checked the word */
  wsg_log_setup(level, false, "wsgate-dump");

  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_signal;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGINT, &sa, NULL);
  sigaction(SIGTERM, &sa, NULL);
  /* A closed stdout (| head) ends the dump through the write error, not through SIGPIPE. */
  signal(SIGPIPE, SIG_IGN);

  printer pr = {&cfg, 0, {0}, 0, 0};
  if (cfg.type != NULL && cfg.commands) {
    pr.type = (int)wsg_cmd_lookup(cfg.type, strlen(cfg.type));
  } else if (cfg.type != NULL) {
    for (int k = WSG_ENV_KIND_FIRST; k <= WSG_ENV_KIND_LAST; k++)
      if (strcmp(cfg.type, wsg_env_kind_name((wsg_env_kind)k)) == 0)
        pr.type = k;
  }
  if (cfg.type != NULL && pr.type == 0) {
    fprintf(stderr, "wsgate-dump: --type %s is not %s type (", cfg.type,
            cfg.commands ? "a command" : "an envelope");
    if (cfg.commands) {
      const char *sep = "";
#define DUMP_CMD_NAME(name, wire, help)                                                            \
  fprintf(stderr, "%s%s", sep, wire);                                                              \
  sep = ", ";
      WSG_CMD_MAP(DUMP_CMD_NAME)
#undef DUMP_CMD_NAME
    } else
      for (int k = WSG_ENV_KIND_FIRST; k <= WSG_ENV_KIND_LAST; k++)
        fprintf(stderr, "%s%s", k == WSG_ENV_KIND_FIRST ? "" : ", ",
                wsg_env_kind_name((wsg_env_kind)k));
    fputs(")\nTry 'wsgate-dump --help'.\n", stderr);
    wsg_config_finish(&dump_spec, &cfg);
    return EXIT_USAGE;
  }
  wsg_buf_init(&pr.json, 0);

  if (cfg.from_stdin) {
    status = dump_stdin(&pr);
  } else if (cfg.kafka.brokers == NULL) {
    fprintf(stderr, "wsgate-dump: give --brokers (or WSGATE_KAFKA_BROKERS), or --stdin\n"
                    "Try 'wsgate-dump --help'.\n");
    status = EXIT_USAGE;
  } else {
    status = dump_kafka(&pr);
  }
  if (status == 0 && pr.bad > 0)
    status = EXIT_BAD_RECORDS;

  wsg_buf_finish(&pr.json);
  wsg_config_finish(&dump_spec, &cfg);
  return status;
}
