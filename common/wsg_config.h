/*
 * wsg_config: one table of options per program drives parsing (flags and WSGATE_* environment),
 * validation, --help, the Markdown reference in docs/ and the start-up log line (nginx's
 * ngx_command_t, Redis' createIntConfig rows).
 *
 * Precedence: built-in default < environment variable < command-line flag. KVLIST options merge
 * per key across the three instead (a flag replaces one key, the others keep their values).
 * Flag forms: "--name value", "--name=value", "-x value", "-xvalue"; BOOL: "--name", "--no-name",
 * "--name=false"; KVLIST: repeated "-X k=v" (the value may contain '=' and ';'), environment and
 * default "k=v;k=v". Built-ins: --help/-h, --version, --help-markdown, --print-config.
 * Each row names a field of the program's own config struct by offset. String fields are
 * heap-allocated by the parser and freed by wsg_config_finish().
 *
 * Threads: main thread only, before any other thread starts.
 */
#ifndef WSG_CONFIG_H
#define WSG_CONFIG_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

typedef enum {
  WSG_OPT_STRING,   /* char *; NULL when the default is NULL and nothing was given */
  WSG_OPT_INT,      /* int64_t, bounded by min/max */
  WSG_OPT_BOOL,     /* bool; flag form "--name" sets true, "--name=false" sets false */
  WSG_OPT_SIZE,     /* uint64_t bytes; accepts suffixes k, m, g (powers of 1024), bounded */
  WSG_OPT_DURATION, /* uint64_t milliseconds; accepts suffixes ms, s, m, h; a bare number is ms */
  WSG_OPT_KVLIST,   /* wsg_kvlist; flag repeated "-X k=v" / env "k=v;k=v" (librdkafka props) */
  WSG_OPT_ENUM,     /* char * restricted to the '|'-separated words in `choices` */
} wsg_opt_type;

enum {
  WSG_OPTF_SECRET = 1u << 0,   /* redacted in logs and --print-config */
  WSG_OPTF_REQUIRED = 1u << 1, /* parsing fails if neither flag nor environment gives it */
};

typedef struct {
  const char *name; /* long flag without the dashes, e.g. "listen-port" */
  char short_name;  /* optional one-letter flag, 0 for none */
  const char *env;  /* environment variable, e.g. "WSGATE_LISTEN_PORT", or NULL */
  wsg_opt_type type;
  size_t offset;       /* offsetof(program_config, field) */
  const char *def;     /* default, written as a user would write it; NULL for none */
  int64_t min, max;    /* bounds for INT, SIZE and DURATION (inclusive); 0, 0: unbounded */
  const char *choices; /* ENUM only: "json|text" */
  unsigned flags;      /* WSG_OPTF_* */
  const char *help;    /* one sentence for --help and docs */
} wsg_option;

/* A list of key=value pairs (librdkafka properties). Owned by the config struct. */
typedef struct {
  size_t count;
  char **keys;
  char **values;
} wsg_kvlist;

typedef enum {
  WSG_CONFIG_OK = 0,
  WSG_CONFIG_EXIT = 1,  /* --help, --version or --help-markdown was printed: exit 0 */
  WSG_CONFIG_ERROR = 2, /* invalid configuration: err holds the message, exit 2 */
} wsg_config_result;

typedef struct {
  const char *program; /* e.g. "wsgate-gateway" */
  const char *summary; /* one paragraph for --help */
  const wsg_option *options;
  size_t count;
} wsg_config_spec;

/*
 * Fills `cfg` (zeroed by the caller) from defaults, then `envp` (may be NULL for none), then argv.
 * On WSG_CONFIG_ERROR, `err` says which option and why, e.g.
 * "--listen-port: 70000 is out of range (1..65535) (from WSGATE_LISTEN_PORT)".
 * Whatever the result, release with wsg_config_finish().
 */
wsg_config_result wsg_config_parse(const wsg_config_spec *spec, void *cfg, int argc, char **argv,
                                   char **envp, char *err, size_t errlen);

/* Frees what wsg_config_parse() allocated inside `cfg`. Safe on a zeroed struct. */
void wsg_config_finish(const wsg_config_spec *spec, void *cfg);

void wsg_config_print_help(const wsg_config_spec *spec, FILE *out);
void wsg_config_print_markdown(const wsg_config_spec *spec, FILE *out);

/* Logs the effective configuration at INFO, one option per line, secrets redacted:
 * "config: name = value (default|env WSGATE_X|flag --x|not set)". KVLIST values whose key
 * contains password, secret, sasl, ssl.key, token or credential are redacted too. */
void wsg_config_log(const wsg_config_spec *spec, const void *cfg);

/* Parses "64k", "1m" into bytes, "250ms", "5s", "2m" into ms. Return 0 or -1. */
int wsg_parse_size(const char *text, uint64_t *out);
int wsg_parse_duration_ms(const char *text, uint64_t *out);

#endif
