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
 * Option groups (common/wsg_options.h: Kafka, Redis, operations HTTP, logging) are declared once
 * with offsets inside their own struct; a program embeds that struct in its config and lists the
 * group as a section of its spec at the struct's offset, optionally overriding a row's default,
 * flag name or flags for that program. Parsing, --help, --help-markdown, --print-config and the
 * start-up log all read the combined rows, in spec order.
 *
 * Threads: main thread only, before any other thread starts.
 */
#ifndef WSG_CONFIG_H
#define WSG_CONFIG_H

#include <stdbool.h>
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

#define WSG_COUNTOF(a) (sizeof(a) / sizeof((a)[0]))

/* Units of the option rows' defaults and bounds: sizes in bytes, durations in milliseconds. */
#define WSG_KIB  1024LL
#define WSG_MIB  (1024LL * 1024LL)
#define WSG_SEC  1000LL
#define WSG_HOUR (3600LL * 1000LL)

/* A list of rows declared once, with offsets inside the struct the rows fill. */
typedef struct {
  const char *name; /* "kafka", in spec errors */
  const wsg_option *options;
  size_t count;
} wsg_option_group;

/* How one program changes one row of a group it embeds (e.g. the processor's --http-port). */
typedef struct {
  const char *name;   /* the group row's long flag name, e.g. "http-port" */
  const char *def;    /* replaces the row's default; NULL keeps it */
  const char *flag;   /* replaces the long flag name (wsgate-admin's --brokers); NULL keeps it */
  unsigned add_flags; /* WSG_OPTF_* added to the row's, e.g. WSG_OPTF_REQUIRED */
} wsg_option_override;

/* A group placed inside a program's config struct. */
typedef struct {
  const wsg_option_group *group;
  size_t offset; /* offsetof(program_config, embedded group struct); 0 for the program's own */
  const wsg_option_override *overrides; /* may be NULL */
  size_t noverrides;
} wsg_config_section;

typedef struct {
  const char *program;       /* e.g. "wsgate-gateway" */
  const char *summary;       /* one paragraph for --help */
  const wsg_option *options; /* rows listed first; may be NULL */
  size_t count;
  const wsg_config_section *sections; /* then these, in order; may be NULL */
  size_t nsections;
  bool help_metrics; /* main() answers --help-metrics: --help lists it with the built-ins */
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

/*
 * The effective rows of `spec` in the order parsing and the docs use: `options`, then each
 * section's with offsets made absolute and overrides applied. Returns a malloc'd array (the
 * caller frees it; the strings stay the spec's) and its length in *count, or NULL with the
 * problem in `err`: an override naming no row of its group, or two rows sharing a long flag,
 * short flag or environment variable.
 */
wsg_option *wsg_config_rows(const wsg_config_spec *spec, size_t *count, char *err, size_t errlen);

/* Parses "64k", "1m" into bytes, "250ms", "5s", "2m" into ms. Return 0 or -1. */
int wsg_parse_size(const char *text, uint64_t *out);
int wsg_parse_duration_ms(const char *text, uint64_t *out);

/* Reads a secret from `path` (option `opt` names it in errors): at most `max` bytes, one trailing
 * newline (as `echo` writes it) removed. Returns 0 with *out (malloc'd; the caller wipes and frees
 * it) and *outlen, or -1 with a message. */
int wsg_config_read_secret(const char *opt, const char *path, size_t max, uint8_t **out,
                           size_t *outlen, char *err, size_t errlen);

#endif
