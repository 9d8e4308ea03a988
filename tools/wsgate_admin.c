/*
 * wsgate-admin: operator commands against a Kafka cluster.
 *
 *   wsgate-admin topics ensure --topic T --partitions N [--topic T --partitions N ...]
 *   wsgate-admin topics describe [--topic T ...]
 *   wsgate-admin partition (--partitions N | --topic T) KEY...
 *   wsgate-admin send USER[,USER...] TEXT | disconnect USER | publish CHANNEL TEXT
 *                | presence CHANNEL | history CHANNEL | info                 (through wsgate-api)
 *
 * Options are parsed with getopt_long rather than wsg_config's table: wsg_config describes one
 * flat set of daemon options, while this tool has subcommands and repeated --topic/--partitions
 * pairs. The Kafka options are the daemons' group (common/wsg_options.h): getopt hands the -b and
 * -X flags to wsg_config with the environment, so WSGATE_KAFKA_PROPS, "-X wins per key" and the
 * error naming a malformed list behave as in the daemons.
 *
 * Threads: main only (librdkafka runs its own).
 */
#include <errno.h>
#include <getopt.h>
#include <stddef.h>
#include <limits.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "wsg_config.h"
#include "wsg_kafka.h"
#include "wsg_log.h"
#include "wsg_options.h"
#include "wsgate_admin_api.h"

extern char **environ;

enum { EXIT_USAGE = 2 };

#define MAX_TOPICS         64
#define DEFAULT_TIMEOUT_MS 30000

typedef struct {
  wsg_kafka_options kafka; /* --brokers, -X and their environment; owned */
  const char *topics[MAX_TOPICS];
  int partitions[MAX_TOPICS]; /* of topics[i]; 0 = not given */
  size_t topic_count;
  int bare_partitions;    /* --partitions before any --topic (the partition command); 0 = none */
  int replication_factor; /* -1: the broker's default.replication.factor */
  int timeout_ms;
  bool verbose;
  admin_api_opts api; /* send, disconnect, publish, presence, history, info */
} admin_opts;

static const char usage_text[] =
    "usage: wsgate-admin [OPTIONS] COMMAND ...\n"
    "\n"
    "Commands:\n"
    "  topics ensure --topic T --partitions N [--topic T --partitions N ...]\n"
    "                  create each topic if missing, then check its partition count\n"
    "  topics describe [--topic T ...]\n"
    "                  partitions, leaders and replicas (every non-internal topic by default)\n"
    "  partition (--partitions N | --topic T) KEY...\n"
    "                  the partition each KEY maps to with the Java client's murmur2\n"
    "                  partitioner (wsgate's inbound partitioner); one number per line\n"
    "  send USER[,USER...] TEXT [--conn ID] [--idempotency-key K]\n"
    "                  send TEXT to every connection of the users (or one connection)\n"
    "  disconnect USER [--conn ID] [--code N] [--reason R]\n"
    "                  close the user's connections (or one)\n"
    "  publish CHANNEL TEXT [--idempotency-key K]\n"
    "                  publish TEXT to the channel's subscribers (numbered, stored once)\n"
    "  presence CHANNEL [--limit N]\n"
    "                  the channel's subscribers: user, connection, gateway\n"
    "  history CHANNEL [--since OFFSET] [--limit N]\n"
    "                  the channel's publications after OFFSET, with the epoch\n"
    "  info            gateways, their slots and connection counts\n"
    "                  these six call wsgate-api (docs/API.md) and print its JSON answer\n"
    "\n"
    "Options:\n"
    "  -b, --brokers HOST:PORT[,...]  bootstrap servers (env WSGATE_KAFKA_BROKERS)\n"
    "  -t, --topic NAME               a topic (repeatable)\n"
    "  -p, --partitions N             partition count of the preceding --topic\n"
    "  -r, --replication-factor N     for new topics (default: the broker's default)\n"
    "      --timeout MS               overall deadline of a command (default 30000)\n"
    "  -X, --kafka-prop KEY=VALUE     a librdkafka property, e.g. -X security.protocol=ssl\n"
    "                                 (env WSGATE_KAFKA_PROPS=\"k=v;k=v\"; -X wins per key)\n"
    "  -v, --verbose                  log librdkafka's informational messages\n"
    "      --api-url URL              wsgate-api's address (env WSGATE_API_URL; default\n"
    "                                 http://127.0.0.1:8080)\n"
    "      --api-key SECRET           an API key (env WSGATE_API_KEY)\n"
    "      --conn ID, --code N, --reason R, --idempotency-key K\n"
    "                                 of send, disconnect and publish (docs/API.md)\n"
    "      --since OFFSET, --limit N  of presence and history (docs/API.md)\n"
    "  -h, --help                     this text\n"
    "      --version                  print the version\n"
    "\n"
    "Exit status: 0 success, 1 failure, 2 usage error.\n";

/* Prints a usage error and returns the usage exit status. */
__attribute__((format(printf, 1, 2))) static int usage_error(const char *fmt, ...) {
  fprintf(stderr, "wsgate-admin: ");
  va_list ap;
  va_start(ap, fmt);
  vfprintf(stderr, fmt, ap);
  va_end(ap);
  fprintf(stderr, "\nTry 'wsgate-admin --help'.\n");
  return EXIT_USAGE;
}

/* A decimal int in [min, max], or -1 after printing which option was wrong. */
static int parse_int(const char *opt, const char *text, int min, int max, int *out) {
  char *end = NULL;
  errno = 0;
  long v = strtol(text, &end, 10);
  if (errno != 0 || end == text || *end != '\0' || v < min || v > max) {
    fprintf(stderr, "wsgate-admin: %s: '%s' is not a number in %d..%d\n", opt, text, min, max);
    return -1;
  }
  *out = (int)v;
  return 0;
}

/* The shared Kafka group with the tools' spelling of the brokers flag. */
static const wsg_option_override kafka_overrides[] = {
    {.name = "kafka-brokers", .flag = "brokers"},
};
static const wsg_config_section kafka_sections[] = {
    {&wsg_kafka_group, offsetof(admin_opts, kafka), kafka_overrides, WSG_COUNTOF(kafka_overrides)},
};
static const wsg_config_spec kafka_spec = {
    .program = "wsgate-admin",
    .sections = kafka_sections,
    .nsections = WSG_COUNTOF(kafka_sections),
};

/* Adds "--brokers=value" or "-Xvalue" to the Kafka flags: one string, so a value such as
 * "--help" stays a value. */
static int kafka_flag(char **kargv, int *kargc, const char *flag, const char *value) {
  size_t len = strlen(flag) + strlen(value) + 1;
  char *arg = malloc(len);
  if (!arg) {
    fprintf(stderr, "wsgate-admin: out of memory\n");
    return -1;
  }
  snprintf(arg, len, "%s%s", flag, value);
  kargv[(*kargc)++] = arg;
  return 0;
}

/* Reads the Kafka group from the collected flags and the environment, as the daemons do. */
static int parse_kafka(admin_opts *o, int kargc, char **kargv) {
  char err[512];
  wsg_config_result r = wsg_config_parse(&kafka_spec, o, kargc, kargv, environ, err, sizeof err);
  if (r == WSG_CONFIG_OK)
    return 0;
  return usage_error("%s", r == WSG_CONFIG_ERROR ? err : "cannot read the Kafka options");
}

/* Parses every option, wherever it stands; positional words stay in argv[optind..]. Returns 0,
 * EXIT_USAGE on a usage error, or -1 after --help/--version were printed. */
static int parse_options(int argc, char **argv, admin_opts *o, char **kargv) {
  enum {
    OPT_TIMEOUT = 256,
    OPT_VERSION,
    OPT_API_URL,
    OPT_API_KEY,
    OPT_CONN,
    OPT_CODE,
    OPT_REASON,
    OPT_IDEM,
    OPT_SINCE,
    OPT_LIMIT
  };
  static const struct option longopts[] = {
      {"brokers", required_argument, NULL, 'b'},
      {"kafka-prop", required_argument, NULL, 'X'},
      {"topic", required_argument, NULL, 't'},
      {"partitions", required_argument, NULL, 'p'},
      {"replication-factor", required_argument, NULL, 'r'},
      {"timeout", required_argument, NULL, OPT_TIMEOUT},
      {"verbose", no_argument, NULL, 'v'},
      {"help", no_argument, NULL, 'h'},
      {"version", no_argument, NULL, OPT_VERSION},
      {"api-url", required_argument, NULL, OPT_API_URL},
      {"api-key", required_argument, NULL, OPT_API_KEY},
      {"conn", required_argument, NULL, OPT_CONN},
      {"code", required_argument, NULL, OPT_CODE},
      {"reason", required_argument, NULL, OPT_REASON},
      {"idempotency-key", required_argument, NULL, OPT_IDEM},
      {"since", required_argument, NULL, OPT_SINCE},
      {"limit", required_argument, NULL, OPT_LIMIT},
      {NULL, 0, NULL, 0},
  };
  int c, kargc = 1; /* kargv[0]: the program, as wsg_config expects */
  kargv[0] = argv[0];
  while ((c = getopt_long(argc, argv, "b:t:p:r:X:vh", longopts, NULL)) != -1) {
    switch (c) {
    case 'b':
      if (kafka_flag(kargv, &kargc, "--brokers=", optarg) != 0)
        return 1;
      break;
    case 't':
      if (o->topic_count == MAX_TOPICS)
        return usage_error("at most %d topics per command", MAX_TOPICS);
      o->topics[o->topic_count++] = optarg;
      break;
    case 'p': {
      int n;
      if (parse_int("--partitions", optarg, 1, 1000000, &n) != 0)
        return EXIT_USAGE;
      /* --partitions belongs to the --topic before it; before any --topic it stands alone (the
       * partition command). */
      int *slot = o->topic_count > 0 ? &o->partitions[o->topic_count - 1] : &o->bare_partitions;
      if (*slot != 0)
        return usage_error("--partitions %s: give one --partitions after each --topic", optarg);
      *slot = n;
      break;
    }
    case 'r':
      if (parse_int("--replication-factor", optarg, 1, 32767, &o->replication_factor) != 0)
        return EXIT_USAGE;
      break;
    case OPT_TIMEOUT:
      if (parse_int("--timeout", optarg, 1, 3600000, &o->timeout_ms) != 0)
        return EXIT_USAGE;
      break;
    case 'X':
      if (kafka_flag(kargv, &kargc, "-X", optarg) != 0)
        return 1;
      break;
    case 'v':
      o->verbose = true;
      break;
    case 'h':
      fputs(usage_text, stdout);
      return -1;
    case OPT_VERSION:
      printf("wsgate-admin %s (librdkafka %s)\n", WSG_VERSION, rd_kafka_version_str());
      return -1;
    case OPT_API_URL:
      o->api.url = optarg;
      break;
    case OPT_API_KEY:
      o->api.key = optarg;
      break;
    case OPT_CONN:
      o->api.conn = optarg;
      break;
    case OPT_CODE:
      if (parse_int("--code", optarg, 1000, 4999, &o->api.code) != 0)
        return EXIT_USAGE;
      break;
    case OPT_REASON:
      o->api.reason = optarg;
      break;
    case OPT_IDEM:
      o->api.idempotency_key = optarg;
      break;
    case OPT_SINCE: /* checked by wsgate-api: one place says what is valid */
      o->api.since = optarg;
      break;
    case OPT_LIMIT:
      o->api.limit = optarg;
      break;
    default:
      fprintf(stderr, "Try 'wsgate-admin --help'.\n");
      return EXIT_USAGE;
    }
  }
  return parse_kafka(o, kargc, kargv);
}

/* An admin client, or NULL after printing why. */
static rd_kafka_t *connect_admin(const admin_opts *o) {
  char err[512];
  rd_kafka_conf_t *conf =
      wsg_kafka_conf_new(WSG_KAFKA_ADMIN, o->kafka.brokers, &o->kafka.props, err, sizeof(err));
  rd_kafka_t *rk = conf ? wsg_kafka_new(RD_KAFKA_PRODUCER, conf, err, sizeof(err)) : NULL;
  if (!rk)
    fprintf(stderr, "wsgate-admin: %s\n", err);
  return rk;
}

static int cmd_topics_ensure(const admin_opts *o) {
  if (o->topic_count == 0)
    return usage_error("topics ensure: %s", "give at least one --topic T --partitions N");
  for (size_t i = 0; i < o->topic_count; i++) {
    if (o->partitions[i] == 0)
      return usage_error("topics ensure: --topic %s has no --partitions", o->topics[i]);
  }
  if (!o->kafka.brokers)
    return usage_error("%s", "no brokers: give --brokers or set WSGATE_KAFKA_BROKERS");
  rd_kafka_t *rk = connect_admin(o);
  if (!rk)
    return 1;
  int rc = 0;
  for (size_t i = 0; i < o->topic_count; i++) {
    char err[512];
    if (wsg_kafka_topic_ensure(rk, o->topics[i], o->partitions[i], o->replication_factor,
                               o->timeout_ms, err, sizeof(err)) != 0) {
      fprintf(stderr, "wsgate-admin: %s\n", err);
      rc = 1;
      continue;
    }
    printf("%s: %d partitions\n", o->topics[i], o->partitions[i]);
  }
  rd_kafka_destroy(rk);
  return rc;
}

static void print_topic(const struct rd_kafka_metadata_topic *t) {
  int rf = t->partition_cnt > 0 ? t->partitions[0].replica_cnt : 0;
  printf("%s partitions=%d replication-factor=%d%s%s\n", t->topic, t->partition_cnt, rf,
         t->err ? " error=" : "", t->err ? rd_kafka_err2name(t->err) : "");
  for (int p = 0; p < t->partition_cnt; p++) {
    const struct rd_kafka_metadata_partition *mp = &t->partitions[p];
    printf("  partition %d leader %d replicas", (int)mp->id, (int)mp->leader);
    for (int r = 0; r < mp->replica_cnt; r++)
      printf("%c%d", r ? ',' : ' ', (int)mp->replicas[r]);
    printf(" isr");
    for (int r = 0; r < mp->isr_cnt; r++)
      printf("%c%d", r ? ',' : ' ', (int)mp->isrs[r]);
    if (mp->err)
      printf(" error %s", rd_kafka_err2name(mp->err));
    printf("\n");
  }
}

static int cmd_topics_describe(const admin_opts *o) {
  if (!o->kafka.brokers)
    return usage_error("%s", "no brokers: give --brokers or set WSGATE_KAFKA_BROKERS");
  rd_kafka_t *rk = connect_admin(o);
  if (!rk)
    return 1;
  const struct rd_kafka_metadata *md = NULL;
  rd_kafka_resp_err_t err = rd_kafka_metadata(rk, 1, NULL, &md, o->timeout_ms);
  if (err) {
    fprintf(stderr, "wsgate-admin: cannot read the metadata of %s: %s\n", o->kafka.brokers,
            rd_kafka_err2str(err));
    rd_kafka_destroy(rk);
    return 1;
  }
  int rc = 0;
  if (o->topic_count == 0) {
    for (int i = 0; i < md->topic_cnt; i++) {
      if (strncmp(md->topics[i].topic, "__", 2) != 0) /* __consumer_offsets and friends */
        print_topic(&md->topics[i]);
    }
  }
  for (size_t n = 0; n < o->topic_count; n++) {
    int found = -1;
    for (int i = 0; i < md->topic_cnt && found < 0; i++) {
      if (strcmp(md->topics[i].topic, o->topics[n]) == 0 &&
          md->topics[i].err != RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART)
        found = i;
    }
    if (found < 0) {
      fprintf(stderr, "wsgate-admin: topic %s does not exist on %s\n", o->topics[n],
              o->kafka.brokers);
      rc = 1;
      continue;
    }
    print_topic(&md->topics[found]);
  }
  rd_kafka_metadata_destroy(md);
  rd_kafka_destroy(rk);
  return rc;
}

static int cmd_partition(const admin_opts *o, int nkeys, char **keys) {
  if (nkeys == 0)
    return usage_error("partition: %s", "give at least one KEY");
  int partitions = o->bare_partitions;
  if (partitions == 0 && o->topic_count == 1)
    partitions = o->partitions[0];
  if (partitions == 0 && o->topic_count != 1)
    return usage_error("partition: %s", "give --partitions N, or one --topic T and --brokers");
  if (partitions == 0) {
    if (!o->kafka.brokers)
      return usage_error("%s", "no brokers: give --brokers or set WSGATE_KAFKA_BROKERS");
    rd_kafka_t *rk = connect_admin(o);
    if (!rk)
      return 1;
    char err[512];
    partitions = wsg_kafka_topic_partitions(rk, o->topics[0], o->timeout_ms, err, sizeof(err));
    rd_kafka_destroy(rk);
    if (partitions < 0) {
      fprintf(stderr, "wsgate-admin: %s\n", err);
      return 1;
    }
  }
  for (int i = 0; i < nkeys; i++) {
    if (keys[i][0] == '\0') {
      /* librdkafka's murmur2_random sends an empty key to a random partition, not murmur2's. */
      fprintf(stderr, "wsgate-admin: an empty key has no fixed partition\n");
      return 1;
    }
    printf("%d\n", wsg_kafka_murmur2_partition(keys[i], strlen(keys[i]), partitions));
  }
  return 0;
}

static int run(int argc, char **argv, admin_opts *o) {
  /* At most one Kafka flag per argument; kargv[0] is the program. Owned here: kargv[1..]. */
  char **kargv = calloc((size_t)argc + 1, sizeof *kargv);
  if (!kargv) {
    fprintf(stderr, "wsgate-admin: out of memory\n");
    return 1;
  }
  int rc = parse_options(argc, argv, o, kargv);
  o->api.timeout_ms = o->timeout_ms;
  for (int i = 1; i <= argc && kargv[i]; i++)
    free(kargv[i]);
  free(kargv);
  if (rc != 0)
    return rc < 0 ? 0 : rc;
  wsg_log_setup(o->verbose ? WSG_LOG_INFO : WSG_LOG_WARN, false, "wsgate-admin");

  int nargs = argc - optind;
  char **args = argv + optind;
  if (nargs == 0)
    return usage_error("%s", "no command given");
  if (strcmp(args[0], "topics") == 0) {
    if (nargs != 2)
      return usage_error("%s", "usage: topics ensure|describe [OPTIONS]");
    if (strcmp(args[1], "ensure") == 0)
      return cmd_topics_ensure(o);
    if (strcmp(args[1], "describe") == 0)
      return cmd_topics_describe(o);
    return usage_error("unknown topics command '%s' (ensure, describe)", args[1]);
  }
  if (strcmp(args[0], "partition") == 0)
    return cmd_partition(o, nargs - 1, args + 1);
  if (admin_api_command(args[0]))
    return admin_api_run(&o->api, nargs, args);
  return usage_error("unknown command '%s' (topics, partition, send, disconnect, publish, "
                     "presence, history, info)",
                     args[0]);
}

int main(int argc, char **argv) {
  admin_opts o = {.replication_factor = -1, .timeout_ms = DEFAULT_TIMEOUT_MS};
  /* The API's defaults come from the environment, as the Kafka options' do. */
  o.api.url = getenv("WSGATE_API_URL") ? getenv("WSGATE_API_URL") : "http://127.0.0.1:8080";
  o.api.key = getenv("WSGATE_API_KEY");
  int rc = run(argc, argv, &o);
  wsg_config_finish(&kafka_spec, &o);
  return rc;
}
