/* Unit tests of wsg_config: every option type, precedence, every error path, --help, the
 * Markdown reference and the redacted start-up log. */
#include <criterion/criterion.h>

#include <fcntl.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "wsg_config.h"
#include "wsg_log.h"

typedef struct {
  char *name;
  int64_t port;
  int64_t offset;
  bool deflate;
  bool verbose;
  uint64_t max_message;
  uint64_t timeout_ms;
  wsg_kvlist props;
  char *format;
  char *password;
  char *brokers;
  char *nothing;
} test_config;

#define OPT(f) offsetof(test_config, f)

static const wsg_option options[] = {
    {"name", 'n', "T_NAME", WSG_OPT_STRING, OPT(name), "def", 0, 0, NULL, 0, "A name."},
    {"listen-port", 'p', "T_PORT", WSG_OPT_INT, OPT(port), "8080", 1, 65535, NULL, 0,
     "Port to listen on for WebSocket clients; a long sentence that has to wrap at one hundred "
     "columns in the help output."},
    {"offset", 0, "T_OFFSET", WSG_OPT_INT, OPT(offset), "0", 0, 0, NULL, 0, "Unbounded."},
    {"deflate", 0, "T_DEFLATE", WSG_OPT_BOOL, OPT(deflate), "false", 0, 0, NULL, 0, "Compress."},
    {"verbose", 'v', NULL, WSG_OPT_BOOL, OPT(verbose), NULL, 0, 0, NULL, 0, "More output."},
    {"max-message", 0, "T_MAX", WSG_OPT_SIZE, OPT(max_message), "1m", 1, 16 * 1024 * 1024, NULL, 0,
     "Largest message."},
    {"timeout", 0, "T_TIMEOUT", WSG_OPT_DURATION, OPT(timeout_ms), "5s", 100, 3600000, NULL, 0,
     "Deadline."},
    {"kafka-prop", 'X', "T_PROPS", WSG_OPT_KVLIST, OPT(props), "acks=all;linger.ms=5", 0, 0, NULL,
     0, "librdkafka property."},
    {"log-format", 0, "T_FORMAT", WSG_OPT_ENUM, OPT(format), "text", 0, 0, "text|json", 0,
     "Format."},
    {"password", 0, "T_PASSWORD", WSG_OPT_STRING, OPT(password), NULL, 0, 0, NULL, WSG_OPTF_SECRET,
     "A secret."},
    {"brokers", 'b', "T_BROKERS", WSG_OPT_STRING, OPT(brokers), NULL, 0, 0, NULL, WSG_OPTF_REQUIRED,
     "Bootstrap servers."},
    {"nothing", 0, NULL, WSG_OPT_STRING, OPT(nothing), NULL, 0, 0, NULL, 0, "Unset by default."},
};

static const wsg_config_spec spec = {
    .program = "wsgate-test",
    .summary = "A program that exists to test the option table.",
    .options = options,
    .count = sizeof options / sizeof options[0],
};

static test_config cfg;
static char err[512];

static void reset(void) {
  memset(&cfg, 0, sizeof cfg);
  err[0] = '\0';
}

static void cleanup(void) {
  wsg_config_finish(&spec, &cfg);
}

TestSuite(wsg_config, .init = reset, .fini = cleanup);

/* argv from a NULL-terminated list; argv[0] is the program. */
#define ARGS(...)  ((char *[]){"wsgate-test", __VA_ARGS__, NULL})
#define NARGS(...) ((int)(sizeof((char *[]){"wsgate-test", __VA_ARGS__}) / sizeof(char *)))
#define PARSE(envp, ...)                                                                           \
  wsg_config_parse(&spec, &cfg, NARGS(__VA_ARGS__), ARGS(__VA_ARGS__), (envp), err, sizeof err)
#define ENV(...) ((char *[]){__VA_ARGS__, NULL})

static void expect_error(wsg_config_result r, const char *needle) {
  cr_assert_eq(r, WSG_CONFIG_ERROR, "expected an error containing \"%s\"", needle);
  cr_assert(strstr(err, needle), "error \"%s\" lacks \"%s\"", err, needle);
}

Test(wsg_config, defaults) {
  cr_assert_eq(PARSE(NULL, "--brokers", "k:1"), WSG_CONFIG_OK, "%s", err);
  cr_assert_str_eq(cfg.name, "def");
  cr_assert_eq(cfg.port, 8080);
  cr_assert_eq(cfg.offset, 0);
  cr_assert_eq(cfg.deflate, false);
  cr_assert_eq(cfg.max_message, 1024u * 1024u);
  cr_assert_eq(cfg.timeout_ms, 5000u);
  cr_assert_eq(cfg.props.count, 2u);
  cr_assert_str_eq(cfg.props.keys[0], "acks");
  cr_assert_str_eq(cfg.props.values[0], "all");
  cr_assert_str_eq(cfg.props.keys[1], "linger.ms");
  cr_assert_str_eq(cfg.props.values[1], "5");
  cr_assert_str_eq(cfg.format, "text");
  cr_assert_null(cfg.password);
  cr_assert_null(cfg.nothing);
  cr_assert_str_eq(cfg.brokers, "k:1");
}

Test(wsg_config, precedence_default_env_flag) {
  char **env = ENV("T_NAME=from-env", "T_PORT=9000", "T_BROKERS=e:1", "OTHER=1", "T_NAMEX=no");
  cr_assert_eq(PARSE(env, "--name", "from-flag"), WSG_CONFIG_OK, "%s", err);
  cr_assert_str_eq(cfg.name, "from-flag");
  cr_assert_eq(cfg.port, 9000);
  cr_assert_str_eq(cfg.brokers, "e:1");
}

Test(wsg_config, flag_forms) {
  cr_assert_eq(PARSE(NULL, "-b", "k:1", "--listen-port=81", "-n", "short", "--deflate", "-v",
                     "--max-message", "64k", "--timeout=2m", "--log-format", "JSON"),
               WSG_CONFIG_OK, "%s", err);
  cr_assert_eq(cfg.port, 81);
  cr_assert_str_eq(cfg.name, "short");
  cr_assert(cfg.deflate);
  cr_assert(cfg.verbose);
  cr_assert_eq(cfg.max_message, 65536u);
  cr_assert_eq(cfg.timeout_ms, 120000u);
  cr_assert_str_eq(cfg.format, "json", "the table's spelling is stored");
}

Test(wsg_config, short_attached_value_and_last_flag_wins) {
  cr_assert_eq(PARSE(NULL, "-bk:1", "-p80", "-p", "81", "--listen-port", "82"), WSG_CONFIG_OK, "%s",
               err);
  cr_assert_str_eq(cfg.brokers, "k:1");
  cr_assert_eq(cfg.port, 82);
}

Test(wsg_config, bool_forms) {
  static const struct {
    const char *text;
    bool want;
  } cases[] = {{"true", true},   {"1", true},  {"yes", true}, {"on", true},   {"TRUE", true},
               {"false", false}, {"0", false}, {"no", false}, {"off", false}, {"Off", false}};
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    char env[64], flag[64];
    snprintf(env, sizeof env, "T_DEFLATE=%s", cases[i].text);
    cr_assert_eq(PARSE(ENV(env), "-b", "k"), WSG_CONFIG_OK, "%s: %s", env, err);
    cr_assert_eq(cfg.deflate, cases[i].want, "%s", env);
    wsg_config_finish(&spec, &cfg);
    snprintf(flag, sizeof flag, "--deflate=%s", cases[i].text);
    cr_assert_eq(PARSE(NULL, "-b", "k", flag), WSG_CONFIG_OK, "%s: %s", flag, err);
    cr_assert_eq(cfg.deflate, cases[i].want, "%s", flag);
    wsg_config_finish(&spec, &cfg);
  }
  cr_assert_eq(PARSE(ENV("T_DEFLATE=1"), "-b", "k", "--no-deflate"), WSG_CONFIG_OK, "%s", err);
  cr_assert_not(cfg.deflate);
}

Test(wsg_config, bool_errors) {
  expect_error(PARSE(ENV("T_DEFLATE=maybe"), "-b", "k"),
               "--deflate: 'maybe' is not a boolean (true|false, yes|no, on|off, 1|0) (from "
               "T_DEFLATE)");
  wsg_config_finish(&spec, &cfg);
  expect_error(PARSE(NULL, "-b", "k", "--no-deflate=true"), "--no-deflate takes no value");
  wsg_config_finish(&spec, &cfg);
  expect_error(PARSE(NULL, "-b", "k", "--no-listen-port"), "unknown option '--no-listen-port'");
  wsg_config_finish(&spec, &cfg);
  expect_error(PARSE(NULL, "-b", "k", "-vx"), "unknown option '-vx'");
}

Test(wsg_config, int_errors) {
  expect_error(PARSE(ENV("T_PORT=70000"), "-b", "k"),
               "--listen-port: 70000 is out of range (1..65535) (from T_PORT)");
  wsg_config_finish(&spec, &cfg);
  expect_error(PARSE(NULL, "-b", "k", "-p", "0"),
               "--listen-port: 0 is out of range (1..65535) (from -p)");
  wsg_config_finish(&spec, &cfg);
  expect_error(PARSE(NULL, "-b", "k", "--listen-port=80x"),
               "--listen-port: '80x' is not an integer (1..65535) (from --listen-port)");
  wsg_config_finish(&spec, &cfg);
  expect_error(PARSE(NULL, "-b", "k", "--listen-port="), "'' is not an integer");
  wsg_config_finish(&spec, &cfg);
  expect_error(PARSE(NULL, "-b", "k", "--listen-port", " 80"), "' 80' is not an integer");
  wsg_config_finish(&spec, &cfg);
  expect_error(PARSE(NULL, "-b", "k", "--offset", "9223372036854775808"), "is not an integer");
  wsg_config_finish(&spec, &cfg);
  cr_assert_eq(PARSE(NULL, "-b", "k", "--offset", "-9223372036854775808"), WSG_CONFIG_OK);
  cr_assert_eq(cfg.offset, INT64_MIN, "min == max == 0 means unbounded");
  wsg_config_finish(&spec, &cfg);
  cr_assert_eq(PARSE(NULL, "-b", "k", "--offset", "9223372036854775807"), WSG_CONFIG_OK);
  cr_assert_eq(cfg.offset, INT64_MAX);
}

Test(wsg_config, size_and_duration_errors) {
  expect_error(PARSE(NULL, "-b", "k", "--max-message", "32m"),
               "--max-message: 32m is out of range (1..16m) (from --max-message)");
  wsg_config_finish(&spec, &cfg);
  expect_error(PARSE(NULL, "-b", "k", "--max-message", "0"), "0 is out of range (1..16m)");
  wsg_config_finish(&spec, &cfg);
  expect_error(PARSE(ENV("T_MAX=12q"), "-b", "k"),
               "--max-message: '12q' is not a size (bytes, or a number with suffix k, m or g, e.g. "
               "64k; range 1..16m) (from T_MAX)");
  wsg_config_finish(&spec, &cfg);
  expect_error(PARSE(NULL, "-b", "k", "--timeout", "-5s"),
               "--timeout: '-5s' is not a duration (milliseconds, or a number with suffix ms, s, "
               "m or h, e.g. 5s; range 100ms..1h) (from --timeout)");
  wsg_config_finish(&spec, &cfg);
  expect_error(PARSE(NULL, "-b", "k", "--timeout", "2h"),
               "--timeout: 2h is out of range (100ms..1h)");
  wsg_config_finish(&spec, &cfg);
  expect_error(PARSE(ENV("T_TIMEOUT="), "-b", "k"), "--timeout: '' is not a duration");
}

/* wsg_parse_size and wsg_parse_duration_ms, table-driven. */
typedef int (*parse_fn)(const char *, uint64_t *);

static const struct {
  parse_fn fn;
  const char *text;
  int rc;
  uint64_t want;
} parse_cases[] = {
    {wsg_parse_size, "0", 0, 0},
    {wsg_parse_size, "512", 0, 512},
    {wsg_parse_size, "512b", 0, 512},
    {wsg_parse_size, "64k", 0, 65536},
    {wsg_parse_size, "64K", 0, 65536},
    {wsg_parse_size, "64KiB", 0, 65536},
    {wsg_parse_size, "64kb", 0, 65536},
    {wsg_parse_size, "1m", 0, 1048576},
    {wsg_parse_size, "2g", 0, 2147483648ull},
    {wsg_parse_size, "1t", 0, 1099511627776ull},
    {wsg_parse_size, "18446744073709551615", 0, UINT64_MAX},
    {wsg_parse_size, "18446744073709551616", -1, 0},
    {wsg_parse_size, "17179869184g", -1, 0}, /* 2^34 GiB = 2^64 bytes: overflow */
    {wsg_parse_size, "", -1, 0},
    {wsg_parse_size, "k", -1, 0},
    {wsg_parse_size, "-1", -1, 0},
    {wsg_parse_size, "+1", -1, 0},
    {wsg_parse_size, " 1", -1, 0},
    {wsg_parse_size, "1 ", -1, 0},
    {wsg_parse_size, "1.5m", -1, 0},
    {wsg_parse_size, "1x", -1, 0},
    {wsg_parse_size, "1mm", -1, 0},
    {wsg_parse_duration_ms, "0", 0, 0},
    {wsg_parse_duration_ms, "250", 0, 250},
    {wsg_parse_duration_ms, "250ms", 0, 250},
    {wsg_parse_duration_ms, "5s", 0, 5000},
    {wsg_parse_duration_ms, "2m", 0, 120000},
    {wsg_parse_duration_ms, "2min", 0, 120000},
    {wsg_parse_duration_ms, "1h", 0, 3600000},
    {wsg_parse_duration_ms, "1d", 0, 86400000},
    {wsg_parse_duration_ms, "18446744073709551615ms", 0, UINT64_MAX},
    {wsg_parse_duration_ms, "18446744073709551615s", -1, 0},
    {wsg_parse_duration_ms, "", -1, 0},
    {wsg_parse_duration_ms, "s", -1, 0},
    {wsg_parse_duration_ms, "-5s", -1, 0},
    {wsg_parse_duration_ms, "5 s", -1, 0},
    {wsg_parse_duration_ms, "5S", -1, 0},
    {wsg_parse_duration_ms, "1.5s", -1, 0},
    {wsg_parse_duration_ms, "5sec", -1, 0},
};

Test(wsg_config, parse_size_and_duration) {
  for (size_t i = 0; i < sizeof parse_cases / sizeof parse_cases[0]; i++) {
    uint64_t v = 12345;
    const char *what = parse_cases[i].fn == wsg_parse_size ? "size" : "duration";
    cr_assert_eq(parse_cases[i].fn(parse_cases[i].text, &v), parse_cases[i].rc, "%s \"%s\"", what,
                 parse_cases[i].text);
    if (parse_cases[i].rc == 0)
      cr_assert_eq(v, parse_cases[i].want, "%s \"%s\"", what, parse_cases[i].text);
  }
  uint64_t v;
  cr_assert_eq(wsg_parse_size(NULL, &v), -1);
  cr_assert_eq(wsg_parse_duration_ms(NULL, &v), -1);
}

Test(wsg_config, enum_errors) {
  expect_error(PARSE(ENV("T_FORMAT=xml"), "-b", "k"),
               "--log-format: 'xml' is not one of text|json (from T_FORMAT)");
  wsg_config_finish(&spec, &cfg);
  expect_error(PARSE(NULL, "-b", "k", "--log-format", "tex"), "'tex' is not one of text|json");
  wsg_config_finish(&spec, &cfg);
  expect_error(PARSE(NULL, "-b", "k", "--log-format", ""), "'' is not one of text|json");
}

Test(wsg_config, kvlist_merge_per_key) {
  char **env = ENV("T_PROPS=linger.ms=10;;sasl.password=p=w;client.id=", "T_BROKERS=k");
  cr_assert_eq(
      PARSE(env, "-X", "acks=1", "-Xfoo=bar", "--kafka-prop", "linger.ms=20", "--kafka-prop=x=a;b"),
      WSG_CONFIG_OK, "%s", err);
  static const char *const want[][2] = {
      {"acks", "1"},     {"linger.ms", "20"}, {"sasl.password", "p=w"},
      {"client.id", ""}, {"foo", "bar"},      {"x", "a;b"}};
  cr_assert_eq(cfg.props.count, 6u);
  for (size_t i = 0; i < 6; i++) {
    cr_assert_str_eq(cfg.props.keys[i], want[i][0]);
    cr_assert_str_eq(cfg.props.values[i], want[i][1], "key %s", want[i][0]);
  }
}

Test(wsg_config, kvlist_long_value) {
  /* ssl.ca.pem holds a whole certificate chain: kilobytes in one value. */
  static char arg[9000];
  int n = snprintf(arg, sizeof arg, "ssl.ca.pem=");
  memset(arg + n, 'A', sizeof arg - (size_t)n - 1);
  cr_assert_eq(PARSE(NULL, "-b", "k", "-X", arg), WSG_CONFIG_OK, "%s", err);
  cr_assert_str_eq(cfg.props.keys[2], "ssl.ca.pem");
  cr_assert_eq(strlen(cfg.props.values[2]), sizeof arg - (size_t)n - 1);
}

Test(wsg_config, kvlist_errors) {
  expect_error(PARSE(NULL, "-b", "k", "-X", "novalue"),
               "--kafka-prop: 'novalue' is not key=value (e.g. acks=all) (from -X)");
  wsg_config_finish(&spec, &cfg);
  expect_error(PARSE(NULL, "-b", "k", "-X", "=v"), "'=v' is not key=value");
  wsg_config_finish(&spec, &cfg);
  expect_error(PARSE(ENV("T_PROPS=a=1;oops"), "-b", "k"),
               "--kafka-prop: 'oops' is not key=value (e.g. acks=all) (from T_PROPS)");
  wsg_config_finish(&spec, &cfg);
  char *argv[2 + 2 * 300];
  int argc = 0;
  char keys[300][16];
  argv[argc++] = "wsgate-test";
  argv[argc++] = "-bk";
  for (int i = 0; i < 300; i++) {
    snprintf(keys[i], sizeof keys[i], "-Xk%d=v", i);
    argv[argc++] = keys[i];
  }
  expect_error(wsg_config_parse(&spec, &cfg, argc, argv, NULL, err, sizeof err),
               "more than 256 keys");
}

Test(wsg_config, required) {
  expect_error(PARSE(NULL, "-n", "x"), "--brokers is required: set --brokers or T_BROKERS");
  wsg_config_finish(&spec, &cfg);
  expect_error(PARSE(ENV("T_BROKERS="), "-n", "x"),
               "--brokers: must not be empty (from T_BROKERS)");
  wsg_config_finish(&spec, &cfg);
  cr_assert_eq(PARSE(ENV("T_BROKERS=k"), "-n", "x"), WSG_CONFIG_OK);
}

Test(wsg_config, unknown_and_stray_arguments) {
  expect_error(PARSE(NULL, "-b", "k", "--lisen-port", "80"),
               "unknown option '--lisen-port' (did you mean --listen-port? see --help)");
  wsg_config_finish(&spec, &cfg);
  expect_error(PARSE(NULL, "-b", "k", "--frobnicate=3"),
               "unknown option '--frobnicate' (see --help)");
  wsg_config_finish(&spec, &cfg);
  expect_error(PARSE(NULL, "-b", "k", "-z"), "unknown option '-z' (see --help)");
  wsg_config_finish(&spec, &cfg);
  expect_error(PARSE(NULL, "-b", "k", "stray"), "unexpected argument 'stray'");
  wsg_config_finish(&spec, &cfg);
  expect_error(PARSE(NULL, "-b", "k", "--", "x"), "unexpected argument 'x'");
  wsg_config_finish(&spec, &cfg);
  expect_error(PARSE(NULL, "-b", "k", "--listen-port"),
               "--listen-port: missing value (integer 1..65535) (from --listen-port)");
  wsg_config_finish(&spec, &cfg);
  expect_error(PARSE(NULL, "-b", "k", "-X"),
               "--kafka-prop: missing value (key=value list) (from -X)");
}

Test(wsg_config, strings_replaced_without_leaks) {
  /* Under ASan this also proves the default and the environment value are freed when replaced. */
  cr_assert_eq(PARSE(ENV("T_NAME=env", "T_FORMAT=json", "T_BROKERS=a"), "-n", "one", "-n", "two",
                     "--log-format", "text", "-b", "b"),
               WSG_CONFIG_OK);
  cr_assert_str_eq(cfg.name, "two");
  cr_assert_str_eq(cfg.format, "text");
  cr_assert_str_eq(cfg.brokers, "b");
}

Test(wsg_config, finish_is_idempotent_and_safe_on_zero) {
  wsg_config_finish(&spec, &cfg);
  cr_assert_eq(PARSE(NULL, "-b", "k"), WSG_CONFIG_OK);
  wsg_config_finish(&spec, &cfg);
  cr_assert_null(cfg.name);
  cr_assert_eq(cfg.props.count, 0u);
  cr_assert_null(cfg.props.keys);
  wsg_config_finish(&spec, &cfg);
  wsg_config_finish(&spec, NULL);
  wsg_config_finish(NULL, &cfg);
}

/* Runs `fn` with stdout sent to a temporary file and returns what it wrote (caller frees).
 * Criterion's TAP report goes to stdout, so nothing of ours may reach the real one. */
static char *capture_stdout(wsg_config_result (*fn)(char **argv, int argc), char **argv,
                            wsg_config_result *r) {
  int argc = 0;
  while (argv[argc])
    argc++;
  fflush(stdout);
  int saved = dup(1);
  FILE *tmp = tmpfile();
  cr_assert_not_null(tmp);
  dup2(fileno(tmp), 1);
  *r = fn(argv, argc);
  fflush(stdout);
  dup2(saved, 1);
  close(saved);
  off_t len = lseek(fileno(tmp), 0, SEEK_END);
  char *buf = calloc(1, (size_t)len + 1);
  cr_assert_eq(pread(fileno(tmp), buf, (size_t)len, 0), len);
  fclose(tmp);
  return buf;
}

static wsg_config_result run_parse(char **argv, int argc) {
  return wsg_config_parse(&spec, &cfg, argc, argv, NULL, err, sizeof err);
}

Test(wsg_config, builtins_win_and_exit) {
  wsg_config_result r;
  char *out = capture_stdout(run_parse, ARGS("--listen-port=99999", "--version"), &r);
  cr_assert_eq(r, WSG_CONFIG_EXIT);
  cr_assert_str_eq(out, "wsgate-test " WSG_VERSION "\n");
  free(out);
  out = capture_stdout(run_parse, ARGS("--bogus", "-h"), &r);
  cr_assert_eq(r, WSG_CONFIG_EXIT, "help wins even over an unknown option");
  cr_assert(strstr(out, "Usage: wsgate-test [OPTIONS]"));
  free(out);
}

Test(wsg_config, help_lists_every_option_and_fits_100_columns) {
  wsg_config_result r;
  char *out = capture_stdout(run_parse, ARGS("--help"), &r);
  cr_assert_eq(r, WSG_CONFIG_EXIT);
  for (size_t i = 0; i < spec.count; i++) {
    char flag[64];
    snprintf(flag, sizeof flag, "--%s%s", options[i].type == WSG_OPT_BOOL ? "[no-]" : "",
             options[i].name);
    cr_assert(strstr(out, flag), "help lacks %s", flag);
    if (options[i].env) {
      char env[64];
      snprintf(env, sizeof env, "[env: %s]", options[i].env);
      cr_assert(strstr(out, env), "help lacks %s", env);
    }
  }
  cr_assert(strstr(out, "  -p, --listen-port N "));
  cr_assert_null(strstr(out, "--help-metrics"), "listed only for a spec with help_metrics");
  cr_assert(strstr(out, "[env: T_PORT] [default: 8080] [range: 1..65535]"));
  cr_assert(strstr(out, "[default: 1m] [range: 1..16m]"));
  cr_assert(strstr(out, "[range: 100ms..1h]"));
  cr_assert(strstr(out, "[choices: text|json]"));
  cr_assert(strstr(out, "[env: T_BROKERS] [required]"));
  cr_assert(strstr(out, "[env: T_PASSWORD] [secret]"));
  cr_assert(strstr(out, "--help-markdown"));
  cr_assert(strstr(out, "A program that exists to test the option table."));
  /* Every line within 100 columns, descriptions aligned in one column. */
  size_t col = 0;
  for (char *line = out, *nl; (nl = strchr(line, '\n')); line = nl + 1) {
    cr_assert_leq((size_t)(nl - line), 100u, "line too long: %.*s", (int)(nl - line), line);
    char *d = strstr(line, "  A name.");
    if (d && d < nl)
      col = (size_t)(d - line) + 2;
  }
  cr_assert_gt(col, 0u);
  char *port = strstr(out, "Port to listen on");
  char *bol = port;
  while (bol > out && bol[-1] != '\n')
    bol--;
  cr_assert_eq((size_t)(port - bol), col, "descriptions start in the same column");
  free(out);
}

Test(wsg_config, markdown_table) {
  wsg_config_result r;
  char *out = capture_stdout(run_parse, ARGS("--help-markdown"), &r);
  cr_assert_eq(r, WSG_CONFIG_EXIT);
  cr_assert(strstr(out, "# wsgate-test configuration\n"));
  cr_assert(strstr(out, "| Flag | Environment | Type | Default | Range | Description |\n"
                        "|---|---|---|---|---|---|\n"));
  cr_assert(strstr(out, "| `-p, --listen-port` | `T_PORT` | integer | `8080` | 1..65535 | Port to "
                        "listen on"));
  cr_assert(
      strstr(out, "| `--log-format` | `T_FORMAT` | choice | `text` | text\\|json | Format. |\n"));
  cr_assert(strstr(out, "| `-v, --verbose` |  | boolean |  |  | More output. |\n"));
  cr_assert(
      strstr(out, "| `--max-message` | `T_MAX` | size | `1m` | 1..16m | Largest message. |\n"));
  cr_assert(strstr(out, "**Required.**"));
  /* One row per option. */
  size_t rows = 0;
  for (const char *p = out; (p = strstr(p, "\n| `")); p++)
    rows++;
  cr_assert_eq(rows, spec.count);
  free(out);
}

static int log_pipe[2];

static char *capture_log(void) {
  static char buf[65536];
  size_t used = 0;
  for (;;) {
    ssize_t n = read(log_pipe[0], buf + used, sizeof buf - 1 - used);
    if (n <= 0)
      break;
    used += (size_t)n;
  }
  buf[used] = '\0';
  return buf;
}

Test(wsg_config, log_redacts_secrets_and_names_sources) {
  cr_assert_eq(pipe2(log_pipe, O_NONBLOCK), 0);
  int saved = wsg_log_set_fd(log_pipe[1]);
  wsg_log_setup(WSG_LOG_INFO, false, "config_test");
  char **env = ENV("T_PASSWORD=hunter2", "T_PORT=81", "T_BROKERS=k:1",
                   "T_PROPS=sasl.password=pw1;ssl.key.password=pw2;client.secret=pw3;acks=1");
  cr_assert_eq(PARSE(env, "--timeout", "250ms", "-X", "sasl.username=u"), WSG_CONFIG_OK, "%s", err);
  wsg_config_log(&spec, &cfg);
  wsg_log_set_fd(saved);
  char *log = capture_log();
  close(log_pipe[0]);
  close(log_pipe[1]);
  cr_assert_null(strstr(log, "hunter2"), "%s", log);
  cr_assert_null(strstr(log, "pw1"));
  cr_assert_null(strstr(log, "pw2"));
  cr_assert_null(strstr(log, "pw3"));
  cr_assert(strstr(log, "] config: password = (set, redacted) (env T_PASSWORD)\n"), "%s", log);
  cr_assert(strstr(log, "] config: listen-port = 81 (env T_PORT)\n"));
  cr_assert(strstr(log, "] config: timeout = 250ms (flag --timeout)\n"));
  cr_assert(strstr(log, "] config: name = \"def\" (default)\n"));
  cr_assert(strstr(log, "] config: nothing = (unset) (not set)\n"));
  cr_assert(strstr(log, "] config: max-message = 1m (default)\n"));
  cr_assert(strstr(log, "] config: deflate = false (default)\n"));
  cr_assert(strstr(log, "] config: kafka-prop = acks=1;linger.ms=5;sasl.password=(set, redacted);"
                        "ssl.key.password=(set, redacted);client.secret=(set, redacted);"
                        "sasl.username=(set, redacted) (flag --kafka-prop)\n"),
            "%s", log);
  cr_assert(strstr(log, "INFO  [wsg_config.c:"));
}

static wsg_config_result run_print(char **argv, int argc) {
  char **env = ENV("T_PASSWORD=hunter2");
  return wsg_config_parse(&spec, &cfg, argc, argv, env, err, sizeof err);
}

Test(wsg_config, print_config) {
  wsg_config_result r;
  char *out = capture_stdout(run_print, ARGS("-bk", "--print-config"), &r);
  cr_assert_eq(r, WSG_CONFIG_EXIT, "%s", err);
  cr_assert_null(strstr(out, "hunter2"));
  cr_assert(strstr(out, "password = (set, redacted)  # env T_PASSWORD\n"), "%s", out);
  cr_assert(strstr(out, "brokers = \"k\"  # flag --brokers\n"));
  free(out);
}

/* ---------------------------------------------------------------------------------------------
 * Sections: a group declared once, embedded at an offset, with per-program overrides. */

typedef struct {
  char *host;
  int64_t port;
} test_group;

typedef struct {
  char *name;
  test_group primary; /* the embedded group */
  bool verbose;
} embed_config;

static const wsg_option group_rows[] = {
    {"host", 0, "T_HOST", WSG_OPT_STRING, offsetof(test_group, host), "localhost", 0, 0, NULL, 0,
     "Host of the service."},
    {"port", 'P', "T_GPORT", WSG_OPT_INT, offsetof(test_group, port), "10", 1, 100, NULL, 0,
     "Port of the service."},
};
static const wsg_option_group test_grp = {"test", group_rows, WSG_COUNTOF(group_rows)};

static const wsg_option own_rows[] = {
    {"name", 'n', "T_NAME", WSG_OPT_STRING, offsetof(embed_config, name), "def", 0, 0, NULL, 0,
     "A name."},
};
static const wsg_option tail_rows[] = {
    {"verbose", 'v', NULL, WSG_OPT_BOOL, offsetof(embed_config, verbose), "false", 0, 0, NULL, 0,
     "More output."},
};
static const wsg_option_group tail_grp = {"tail", tail_rows, WSG_COUNTOF(tail_rows)};

static const wsg_option_override port_20[] = {{.name = "port", .def = "20"}};
static const wsg_config_section embed_sections[] = {
    {&test_grp, offsetof(embed_config, primary), port_20, WSG_COUNTOF(port_20)},
    {&tail_grp, 0, NULL, 0},
};
static const wsg_config_spec embed_spec = {
    .program = "wsgate-embed",
    .options = own_rows,
    .count = WSG_COUNTOF(own_rows),
    .sections = embed_sections,
    .nsections = WSG_COUNTOF(embed_sections),
};

static embed_config ecfg;

static void embed_reset(void) {
  memset(&ecfg, 0, sizeof ecfg);
  err[0] = '\0';
}

static void embed_cleanup(void) {
  wsg_config_finish(&embed_spec, &ecfg);
}

TestSuite(wsg_config_sections, .init = embed_reset, .fini = embed_cleanup);

#define EPARSE(sp, envp, ...)                                                                      \
  wsg_config_parse((sp), &ecfg, NARGS(__VA_ARGS__), ARGS(__VA_ARGS__), (envp), err, sizeof err)

Test(wsg_config_sections, rows_in_order_with_absolute_offsets_and_overrides) {
  size_t n = 0;
  wsg_option *rows = wsg_config_rows(&embed_spec, &n, err, sizeof err);
  cr_assert(rows, "%s", err);
  cr_assert_eq(n, 4u);
  cr_assert_str_eq(rows[0].name, "name");
  cr_assert_str_eq(rows[1].name, "host");
  cr_assert_str_eq(rows[2].name, "port");
  cr_assert_str_eq(rows[3].name, "verbose");
  cr_assert_eq(rows[1].offset, offsetof(embed_config, primary) + offsetof(test_group, host));
  cr_assert_eq(rows[2].offset, offsetof(embed_config, primary) + offsetof(test_group, port));
  cr_assert_eq(rows[3].offset, offsetof(embed_config, verbose));
  cr_assert_str_eq(rows[2].def, "20", "the embedding's default");
  cr_assert_str_eq(group_rows[1].def, "10", "the group's own table is left alone");
  free(rows);
}

Test(wsg_config_sections, embedded_fields_are_filled_from_every_source) {
  cr_assert_eq(EPARSE(&embed_spec, NULL, "-v"), WSG_CONFIG_OK, "%s", err);
  cr_assert_str_eq(ecfg.name, "def");
  cr_assert_str_eq(ecfg.primary.host, "localhost");
  cr_assert_eq(ecfg.primary.port, 20, "the override's default, not the group's 10");
  cr_assert(ecfg.verbose);
  wsg_config_finish(&embed_spec, &ecfg);
  cr_assert_null(ecfg.primary.host, "finish frees the embedded strings");

  char **env = ENV("T_HOST=from-env", "T_GPORT=30");
  cr_assert_eq(EPARSE(&embed_spec, env, "-P", "40"), WSG_CONFIG_OK, "%s", err);
  cr_assert_str_eq(ecfg.primary.host, "from-env");
  cr_assert_eq(ecfg.primary.port, 40, "the flag wins over the environment");
  cr_assert_eq(EPARSE(&embed_spec, NULL, "--port", "101"), WSG_CONFIG_ERROR);
  cr_assert(strstr(err, "--port: 101 is out of range (1..100)"), "%s", err);
}

Test(wsg_config_sections, override_renames_and_requires) {
  static const wsg_option_override server[] = {
      {.name = "host", .flag = "server", .add_flags = WSG_OPTF_REQUIRED | WSG_OPTF_SECRET}};
  static const wsg_config_section sections[] = {
      {&test_grp, offsetof(embed_config, primary), server, WSG_COUNTOF(server)}};
  static const wsg_config_spec sp = {
      .program = "wsgate-embed", .sections = sections, .nsections = WSG_COUNTOF(sections)};
  wsg_config_result r = EPARSE(&sp, NULL, "--port", "5");
  expect_error(r, "--server is required: set --server or T_HOST");
  expect_error(EPARSE(&sp, NULL, "--host", "h"), "unknown option '--host'");
  cr_assert_eq(EPARSE(&sp, NULL, "--server=h"), WSG_CONFIG_OK, "%s", err);
  cr_assert_str_eq(ecfg.primary.host, "h");
  cr_assert_eq(ecfg.primary.port, 10, "no default override here: the group's");
  char *buf = NULL;
  size_t len = 0;
  FILE *f = open_memstream(&buf, &len);
  wsg_config_print_markdown(&sp, f);
  fclose(f);
  cr_assert(strstr(buf, "| `--server` | `T_HOST` | string | `localhost` |  | Host of the service. "
                        "**Required.** Secret: redacted in logs. |"),
            "%s", buf);
  free(buf);
  wsg_config_finish(&sp, &ecfg);
}

Test(wsg_config_sections, help_markdown_and_print_config_use_the_combined_rows) {
  char *buf = NULL;
  size_t len = 0;
  FILE *f = open_memstream(&buf, &len);
  wsg_config_print_help(&embed_spec, f);
  fclose(f);
  char *name = strstr(buf, "--name"), *host = strstr(buf, "--host"),
       *verbose = strstr(buf, "verbose");
  cr_assert(name && host && verbose && name < host && host < verbose, "%s", buf);
  cr_assert(strstr(buf, "[env: T_GPORT] [default: 20] [range: 1..100]"), "%s", buf);
  free(buf);
  f = open_memstream(&buf, &len);
  wsg_config_print_markdown(&embed_spec, f);
  fclose(f);
  cr_assert(strstr(buf, "| `-P, --port` | `T_GPORT` | integer | `20` | 1..100 |"), "%s", buf);
  free(buf);

  char **env = ENV("T_HOST=e");
  char **argv = ARGS("--port=7", "--print-config");
  FILE *tmp = tmpfile();
  int saved = dup(1);
  fflush(stdout);
  dup2(fileno(tmp), 1);
  wsg_config_result r = wsg_config_parse(&embed_spec, &ecfg, 3, argv, env, err, sizeof err);
  fflush(stdout);
  dup2(saved, 1);
  close(saved);
  cr_assert_eq(r, WSG_CONFIG_EXIT, "%s", err);
  char out[512] = "";
  cr_assert_gt(pread(fileno(tmp), out, sizeof out - 1, 0), 0);
  fclose(tmp);
  cr_assert_str_eq(out, "name = \"def\"  # default\n"
                        "host = \"e\"  # env T_HOST\n"
                        "port = 7  # flag --port\n"
                        "verbose = false  # default\n");
}

Test(wsg_config_sections, table_errors_are_caught) {
  static const wsg_option_override bogus[] = {{.name = "hots", .def = "x"}};
  static const wsg_config_section bad_override[] = {{&test_grp, 0, bogus, WSG_COUNTOF(bogus)}};
  static const wsg_config_spec sp1 = {
      .program = "wsgate-embed", .sections = bad_override, .nsections = 1};
  size_t n = 0;
  cr_assert_null(wsg_config_rows(&sp1, &n, err, sizeof err));
  cr_assert(strstr(err, "the override of --hots names no row of group test"), "%s", err);
  expect_error(EPARSE(&sp1, NULL, "--port", "5"), "names no row");

  /* The same group twice (two Redis connections, say) needs its second copy renamed. */
  static const wsg_config_section twice[] = {{&test_grp, 0, NULL, 0}, {&test_grp, 0, NULL, 0}};
  static const wsg_config_spec sp2 = {.program = "wsgate-embed", .sections = twice, .nsections = 2};
  cr_assert_null(wsg_config_rows(&sp2, &n, err, sizeof err));
  cr_assert(strstr(err, "--host and --host share a long flag"), "%s", err);

  static const wsg_option clash[] = {
      {"other", 'P', NULL, WSG_OPT_INT, 0, NULL, 0, 0, NULL, 0, "Clashes with -P."}};
  static const wsg_config_section one[] = {{&test_grp, 0, NULL, 0}};
  static const wsg_config_spec sp3 = {
      .program = "wsgate-embed", .options = clash, .count = 1, .sections = one, .nsections = 1};
  cr_assert_null(wsg_config_rows(&sp3, &n, err, sizeof err));
  cr_assert(strstr(err, "--other and --port share a short flag"), "%s", err);
}
