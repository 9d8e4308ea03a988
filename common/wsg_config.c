/*
 * wsg_config: one option table per program drives flag and environment parsing, validation,
 * --help, the Markdown reference and the start-up log of the effective configuration.
 *
 * Values are applied in precedence order (built-in default, then environment, then flags), each
 * later source replacing the earlier value; KVLIST options are merged per key instead, so a
 * program's tuned librdkafka defaults survive a user overriding one property.
 *
 * Where each value came from is not part of the caller's config struct, so it is kept in a small
 * list keyed by (spec, cfg), created by wsg_config_parse() and dropped by wsg_config_finish();
 * wsg_config_log() reads it to say "(env WSGATE_X)" or "(flag --x)".
 *
 * The combined rows of a spec come from wsg_config_rows.c; --help and the Markdown reference are
 * in wsg_config_help.c.
 *
 * Threads: main thread only, before any other thread starts (the source list is unlocked).
 */
#include "wsg_config.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "wsg_config_rows.h"
#include "wsg_log.h"

#ifndef WSG_VERSION
#define WSG_VERSION "unknown"
#endif

/* A KVLIST holds at most this many keys: librdkafka has ~150 properties. */
#define KVLIST_MAX 256

typedef enum {
  SRC_NONE = 0, /* no default and nothing given */
  SRC_DEFAULT,
  SRC_ENV,
  SRC_FLAG,
} value_source;

typedef struct source_record {
  const wsg_config_spec *spec;
  const void *cfg;
  unsigned char *src; /* one value_source per combined row (wsg_config_rows) */
  struct source_record *next;
} source_record;

/* Process configuration bookkeeping (see the top comment); main thread only. */
static source_record *source_records;

static source_record *source_find(const wsg_config_spec *spec, const void *cfg) {
  for (source_record *r = source_records; r; r = r->next)
    if (r->spec == spec && r->cfg == cfg)
      return r;
  return NULL;
}

static void source_drop(const wsg_config_spec *spec, const void *cfg) {
  for (source_record **pp = &source_records; *pp; pp = &(*pp)->next) {
    if ((*pp)->spec == spec && (*pp)->cfg == cfg) {
      source_record *r = *pp;
      *pp = r->next;
      free(r->src);
      free(r);
      return;
    }
  }
}

/* ---------------------------------------------------------------------------------------------
 * Number parsing */

/* Parses the leading decimal digits of `s` into *out; returns the end, or NULL on no digits or
 * overflow. Signs and spaces are rejected: strtoull would quietly accept "-1" as 2^64-1. */
static const char *parse_u64_prefix(const char *s, uint64_t *out) {
  uint64_t v = 0;
  const char *p = s;
  while (*p >= '0' && *p <= '9') {
    unsigned d = (unsigned)(*p - '0');
    if (v > (UINT64_MAX - d) / 10)
      return NULL;
    v = v * 10 + d;
    p++;
  }
  if (p == s)
    return NULL;
  *out = v;
  return p;
}

static int mul_u64(uint64_t a, uint64_t b, uint64_t *out) {
  if (b != 0 && a > UINT64_MAX / b)
    return -1;
  *out = a * b;
  return 0;
}

int wsg_parse_size(const char *text, uint64_t *out) {
  uint64_t n, mult = 1;
  if (!text)
    return -1;
  const char *p = parse_u64_prefix(text, &n);
  if (!p)
    return -1;
  switch (tolower((unsigned char)*p)) {
  case 'k':
    mult = 1024ull;
    p++;
    break;
  case 'm':
    mult = 1024ull * 1024;
    p++;
    break;
  case 'g':
    mult = 1024ull * 1024 * 1024;
    p++;
    break;
  case 't':
    mult = 1024ull * 1024 * 1024 * 1024;
    p++;
    break;
  default:
    break;
  }
  /* Also accept the spellings people paste from elsewhere: "64KiB", "64kb", "512b". */
  if (mult > 1 && (p[0] == 'i' || p[0] == 'I') && (p[1] == 'b' || p[1] == 'B'))
    p += 2;
  else if (*p == 'b' || *p == 'B')
    p++;
  if (*p != '\0')
    return -1;
  return mul_u64(n, mult, out);
}

int wsg_parse_duration_ms(const char *text, uint64_t *out) {
  uint64_t n, mult;
  if (!text)
    return -1;
  const char *p = parse_u64_prefix(text, &n);
  if (!p)
    return -1;
  if (*p == '\0' || strcmp(p, "ms") == 0)
    mult = 1;
  else if (strcmp(p, "s") == 0)
    mult = 1000;
  else if (strcmp(p, "m") == 0 || strcmp(p, "min") == 0)
    mult = 60ull * 1000;
  else if (strcmp(p, "h") == 0)
    mult = 3600ull * 1000;
  else if (strcmp(p, "d") == 0)
    mult = 86400ull * 1000;
  else
    return -1;
  return mul_u64(n, mult, out);
}

static int parse_i64(const char *text, int64_t *out) {
  bool neg = false;
  uint64_t v;
  const char *p = text;
  if (*p == '-' || *p == '+')
    neg = *p++ == '-';
  p = parse_u64_prefix(p, &v);
  if (!p || *p != '\0')
    return -1;
  if (neg) {
    if (v > (uint64_t)INT64_MAX + 1)
      return -1;
    *out = v == (uint64_t)INT64_MAX + 1 ? INT64_MIN : -(int64_t)v;
  } else {
    if (v > (uint64_t)INT64_MAX)
      return -1;
    *out = (int64_t)v;
  }
  return 0;
}

static int parse_bool(const char *text, bool *out) {
  static const char *const yes[] = {"true", "1", "yes", "on"};
  static const char *const no[] = {"false", "0", "no", "off"};
  for (size_t i = 0; i < 4; i++) {
    if (strcasecmp(text, yes[i]) == 0) {
      *out = true;
      return 0;
    }
    if (strcasecmp(text, no[i]) == 0) {
      *out = false;
      return 0;
    }
  }
  return -1;
}

/* ---------------------------------------------------------------------------------------------
 * Fields */

/* A row's field in the config struct (absolute: wsg_config_rows added the section's offset). */
static void *field(void *cfg, const wsg_option *o) {
  return (char *)cfg + o->offset;
}

static const void *cfield(const void *cfg, const wsg_option *o) {
  return (const char *)cfg + o->offset;
}

/* Whether a KVLIST key names a credential (librdkafka's sasl.password, ssl.key.password, ...). */
static bool key_is_secret(const char *key) {
  static const char *const words[] = {"password", "secret", "sasl",
                                      "ssl.key",  "token",  "credential"};
  for (size_t i = 0; i < sizeof words / sizeof words[0]; i++)
    if (strcasestr(key, words[i]))
      return true;
  return false;
}

/* ---------------------------------------------------------------------------------------------
 * Setting values */

typedef struct {
  const wsg_option *rows; /* the spec's combined rows */
  size_t count;
  void *cfg;
  unsigned char *src;
  char *err;
  size_t errlen;
} parse_ctx;

/* Shows a user's value in an error message: quoted and cut, so a pasted blob stays readable. */
static const char *quote_value(const char *v, char *buf, size_t len) {
  size_t n = strlen(v);
  if (n > 60)
    snprintf(buf, len, "'%.60s...'", v);
  else
    snprintf(buf, len, "'%s'", v);
  return buf;
}

/* "--name: what (from where)". */
static int fail(parse_ctx *c, const wsg_option *o, const char *from, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static int fail(parse_ctx *c, const wsg_option *o, const char *from, const char *fmt, ...) {
  char what[512];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(what, sizeof what, fmt, ap);
  va_end(ap);
  if (c->err && c->errlen)
    snprintf(c->err, c->errlen, "--%s: %s (from %s)", o->name, what, from);
  return -1;
}

static int set_string(parse_ctx *c, const wsg_option *o, const char *from, const char *v) {
  char *copy = strdup(v);
  if (!copy)
    return fail(c, o, from, "out of memory");
  char **slot = field(c->cfg, o);
  free(*slot);
  *slot = copy;
  return 0;
}

static int kv_put(parse_ctx *c, const wsg_option *o, const char *from, const char *k, size_t klen,
                  const char *v, size_t vlen) {
  wsg_kvlist *kv = field(c->cfg, o);
  char *val = strndup(v, vlen);
  if (!val)
    return fail(c, o, from, "out of memory");
  for (size_t i = 0; i < kv->count; i++) {
    if (strlen(kv->keys[i]) == klen && memcmp(kv->keys[i], k, klen) == 0) {
      free(kv->values[i]);
      kv->values[i] = val;
      return 0;
    }
  }
  if (kv->count >= KVLIST_MAX) {
    free(val);
    return fail(c, o, from, "more than %d keys", KVLIST_MAX);
  }
  char *key = strndup(k, klen);
  char **keys = realloc(kv->keys, (kv->count + 1) * sizeof *keys);
  if (keys)
    kv->keys = keys;
  char **values = keys ? realloc(kv->values, (kv->count + 1) * sizeof *values) : NULL;
  if (values)
    kv->values = values;
  if (!key || !keys || !values) {
    free(key);
    free(val);
    return fail(c, o, from, "out of memory");
  }
  kv->keys[kv->count] = key;
  kv->values[kv->count] = val;
  kv->count++;
  return 0;
}

/* One "key=value" pair; the value is everything after the first '=' and may be empty. */
static int kv_pair(parse_ctx *c, const wsg_option *o, const char *from, const char *pair,
                   size_t len) {
  const char *eq = memchr(pair, '=', len);
  if (!eq || eq == pair) {
    char shown[64], q[96];
    snprintf(shown, sizeof shown, "%.*s", (int)(len < 63 ? len : 63), pair);
    return fail(c, o, from, "%s is not key=value (e.g. acks=all)", quote_value(shown, q, sizeof q));
  }
  size_t klen = (size_t)(eq - pair);
  return kv_put(c, o, from, pair, klen, eq + 1, len - klen - 1);
}

/* The environment and default forms: "k=v;k=v", empty parts skipped. */
static int kv_list(parse_ctx *c, const wsg_option *o, const char *from, const char *v) {
  const char *p = v;
  while (*p) {
    const char *semi = strchr(p, ';');
    size_t len = semi ? (size_t)(semi - p) : strlen(p);
    if (len > 0 && kv_pair(c, o, from, p, len) != 0)
      return -1;
    p += len;
    if (*p == ';')
      p++;
  }
  return 0;
}

/*
 * Parses `v` for option `o` and stores it. `from` names the source for error messages ("--x",
 * "-x", "WSGATE_X" or "the built-in default"); `list_form` selects "k=v;k=v" for KVLIST.
 */
static int set_value(parse_ctx *c, const wsg_option *o, const char *from, const char *v,
                     bool list_form) {
  char range[256], q[96];
  wsg_opt_describe_range(o, range, sizeof range);
  switch (o->type) {
  case WSG_OPT_STRING:
    if (v[0] == '\0' && (o->flags & WSG_OPTF_REQUIRED))
      return fail(c, o, from, "must not be empty");
    return set_string(c, o, from, v);
  case WSG_OPT_INT: {
    int64_t n;
    if (parse_i64(v, &n) != 0)
      return fail(c, o, from, "%s is not an integer%s%s%s", quote_value(v, q, sizeof q),
                  range[0] ? " (" : "", range, range[0] ? ")" : "");
    if (wsg_opt_has_bounds(o) && (n < o->min || n > o->max))
      return fail(c, o, from, "%" PRId64 " is out of range (%s)", n, range);
    *(int64_t *)field(c->cfg, o) = n;
    return 0;
  }
  case WSG_OPT_BOOL: {
    bool b;
    if (parse_bool(v, &b) != 0)
      return fail(c, o, from, "%s is not a boolean (true|false, yes|no, on|off, 1|0)",
                  quote_value(v, q, sizeof q));
    *(bool *)field(c->cfg, o) = b;
    return 0;
  }
  case WSG_OPT_SIZE:
  case WSG_OPT_DURATION: {
    uint64_t n;
    bool size = o->type == WSG_OPT_SIZE;
    int rc = size ? wsg_parse_size(v, &n) : wsg_parse_duration_ms(v, &n);
    if (rc != 0)
      return fail(c, o, from, "%s is not a %s (%s%s%s)", quote_value(v, q, sizeof q),
                  size ? "size" : "duration",
                  size ? "bytes, or a number with suffix k, m or g, e.g. 64k"
                       : "milliseconds, or a number with suffix ms, s, m or h, e.g. 5s",
                  range[0] ? "; range " : "", range);
    if (n < wsg_opt_umin(o) || n > wsg_opt_umax(o)) {
      char shown[32];
      wsg_opt_format_amount(o, n, shown, sizeof shown);
      return fail(c, o, from, "%s is out of range (%s)", shown, range);
    }
    *(uint64_t *)field(c->cfg, o) = n;
    return 0;
  }
  case WSG_OPT_KVLIST:
    return list_form ? kv_list(c, o, from, v) : kv_pair(c, o, from, v, strlen(v));
  case WSG_OPT_ENUM: {
    /* Stores the table's own spelling, so "JSON" reads back as "json". */
    const char *ch = o->choices ? o->choices : "";
    size_t vlen = strlen(v);
    while (vlen > 0 && *ch) {
      const char *bar = strchr(ch, '|');
      size_t wlen = bar ? (size_t)(bar - ch) : strlen(ch);
      if (wlen == vlen && strncasecmp(ch, v, vlen) == 0) {
        char word[128];
        snprintf(word, sizeof word, "%.*s", (int)wlen, ch);
        return set_string(c, o, from, word);
      }
      ch += wlen + (bar ? 1 : 0);
    }
    return fail(c, o, from, "%s is not one of %s", quote_value(v, q, sizeof q), range);
  }
  }
  return fail(c, o, from, "unknown option type %d", (int)o->type);
}

static int apply(parse_ctx *c, size_t idx, const char *from, const char *v, bool list_form,
                 value_source s) {
  if (set_value(c, &c->rows[idx], from, v, list_form) != 0)
    return -1;
  if (c->src[idx] < s)
    c->src[idx] = (unsigned char)s;
  return 0;
}

/* ---------------------------------------------------------------------------------------------
 * Command line */

static const char *env_lookup(char **envp, const char *name) {
  size_t n = strlen(name);
  for (char **e = envp; e && *e; e++)
    if (strncmp(*e, name, n) == 0 && (*e)[n] == '=')
      return *e + n + 1;
  return NULL;
}

static size_t edit_distance(const char *a, const char *b) {
  size_t la = strlen(a), lb = strlen(b);
  size_t row[64];
  if (la >= 64 || lb >= 64)
    return SIZE_MAX;
  for (size_t j = 0; j <= lb; j++)
    row[j] = j;
  for (size_t i = 1; i <= la; i++) {
    size_t diag = row[0];
    row[0] = i;
    for (size_t j = 1; j <= lb; j++) {
      size_t up = row[j];
      size_t best = diag + (a[i - 1] == b[j - 1] ? 0 : 1);
      if (up + 1 < best)
        best = up + 1;
      if (row[j - 1] + 1 < best)
        best = row[j - 1] + 1;
      row[j] = best;
      diag = up;
    }
  }
  return row[lb];
}

static int unknown_option(parse_ctx *c, const char *arg) {
  const char *name = arg;
  while (*name == '-')
    name++;
  char word[64];
  size_t wl = strcspn(name, "=");
  snprintf(word, sizeof word, "%.*s", (int)(wl < 63 ? wl : 63), name);
  const char *best = NULL;
  size_t best_d = 3; /* suggest only close misspellings */
  for (size_t i = 0; i < c->count; i++) {
    const char *cand = c->rows[i].name;
    size_t d = edit_distance(word, cand);
    if (d < best_d || (!best && word[0] && strncmp(cand, word, strlen(word)) == 0)) {
      best = cand;
      best_d = d < best_d ? d : best_d;
    }
  }
  char shown[96];
  snprintf(shown, sizeof shown, "%.*s", (int)strcspn(arg, "="), arg);
  if (c->err && c->errlen) {
    if (best && strlen(word) > 1)
      snprintf(c->err, c->errlen, "unknown option '%s' (did you mean --%s? see --help)", shown,
               best);
    else
      snprintf(c->err, c->errlen, "unknown option '%s' (see --help)", shown);
  }
  return -1;
}

static int missing_value(parse_ctx *c, const wsg_option *o, const char *from) {
  char range[256];
  wsg_opt_describe_range(o, range, sizeof range);
  if (c->err && c->errlen)
    snprintf(c->err, c->errlen, "--%s: missing value (%s%s%s) (from %s)", o->name,
             wsg_opt_type_name(o->type), range[0] ? " " : "", range, from);
  return -1;
}

static long find_long(const parse_ctx *c, const char *name, size_t len) {
  for (size_t i = 0; i < c->count; i++)
    if (strlen(c->rows[i].name) == len && strncmp(c->rows[i].name, name, len) == 0)
      return (long)i;
  return -1;
}

static long find_short(const parse_ctx *c, char ch) {
  for (size_t i = 0; i < c->count; i++)
    if (c->rows[i].short_name == ch)
      return (long)i;
  return -1;
}

/* One argument at argv[*i]; consumes the next one too when it is the value. */
static int parse_arg(parse_ctx *c, int argc, char **argv, int *i) {
  const char *arg = argv[*i];
  if (arg[0] == '-' && arg[1] == '-') {
    const char *name = arg + 2;
    const char *eq = strchr(name, '=');
    size_t len = eq ? (size_t)(eq - name) : strlen(name);
    char from[96];
    snprintf(from, sizeof from, "--%.*s", (int)(len < 80 ? len : 80), name);
    long idx = find_long(c, name, len);
    if (idx < 0 && len > 3 && strncmp(name, "no-", 3) == 0) {
      long b = find_long(c, name + 3, len - 3);
      if (b >= 0 && c->rows[b].type == WSG_OPT_BOOL) {
        if (eq) {
          if (c->err && c->errlen)
            snprintf(c->err, c->errlen, "%s takes no value (use --%s=true|false)", from,
                     c->rows[b].name);
          return -1;
        }
        return apply(c, (size_t)b, from, "false", false, SRC_FLAG);
      }
    }
    if (idx < 0)
      return unknown_option(c, arg);
    const wsg_option *o = &c->rows[idx];
    if (eq)
      return apply(c, (size_t)idx, from, eq + 1, false, SRC_FLAG);
    if (o->type == WSG_OPT_BOOL)
      return apply(c, (size_t)idx, from, "true", false, SRC_FLAG);
    if (*i + 1 >= argc)
      return missing_value(c, o, from);
    return apply(c, (size_t)idx, from, argv[++*i], false, SRC_FLAG);
  }
  /* "-x value", "-xvalue", or "-x" alone for a boolean. */
  char from[3] = {'-', arg[1], '\0'};
  long idx = find_short(c, arg[1]);
  if (idx < 0)
    return unknown_option(c, arg);
  const wsg_option *o = &c->rows[idx];
  if (o->type == WSG_OPT_BOOL) {
    if (arg[2] != '\0')
      return unknown_option(c, arg);
    return apply(c, (size_t)idx, from, "true", false, SRC_FLAG);
  }
  if (arg[2] != '\0')
    return apply(c, (size_t)idx, from, arg + 2, false, SRC_FLAG);
  if (*i + 1 >= argc)
    return missing_value(c, o, from);
  return apply(c, (size_t)idx, from, argv[++*i], false, SRC_FLAG);
}

typedef enum {
  BUILTIN_NONE,
  BUILTIN_HELP,
  BUILTIN_VERSION,
  BUILTIN_MARKDOWN,
  BUILTIN_PRINT
} builtin;

static builtin find_builtin(int argc, char **argv) {
  for (int i = 1; i < argc && argv[i]; i++) {
    const char *a = argv[i];
    if (strcmp(a, "--") == 0)
      break;
    if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0)
      return BUILTIN_HELP;
    if (strcmp(a, "--version") == 0)
      return BUILTIN_VERSION;
    if (strcmp(a, "--help-markdown") == 0)
      return BUILTIN_MARKDOWN;
  }
  return BUILTIN_NONE;
}

static void print_config(const wsg_config_spec *spec, const void *cfg, FILE *out);

/* Defaults, then the environment, then argv; then the required rows. 0, or -1 with c->err. */
static int parse_sources(parse_ctx *c, int argc, char **argv, char **envp, bool *print) {
  char *err = c->err;
  size_t errlen = c->errlen;
  for (size_t i = 0; i < c->count; i++) {
    const wsg_option *o = &c->rows[i];
    if (o->def && apply(c, i, "the built-in default", o->def, true, SRC_DEFAULT) != 0)
      return -1;
  }
  for (size_t i = 0; i < c->count; i++) {
    const wsg_option *o = &c->rows[i];
    const char *v = o->env ? env_lookup(envp, o->env) : NULL;
    if (v && apply(c, i, o->env, v, true, SRC_ENV) != 0)
      return -1;
  }
  for (int i = 1; i < argc && argv[i]; i++) {
    const char *a = argv[i];
    if (strcmp(a, "--print-config") == 0) {
      *print = true;
      continue;
    }
    if (strcmp(a, "--") == 0 || a[0] != '-' || a[1] == '\0') {
      const char *shown = strcmp(a, "--") == 0 && i + 1 < argc ? argv[i + 1] : a;
      if (err && errlen)
        snprintf(err, errlen, "unexpected argument '%.80s' (options start with --; see --help)",
                 shown);
      return -1;
    }
    if (parse_arg(c, argc, argv, &i) != 0)
      return -1;
  }
  for (size_t i = 0; i < c->count; i++) {
    const wsg_option *o = &c->rows[i];
    if ((o->flags & WSG_OPTF_REQUIRED) && c->src[i] < SRC_ENV) {
      if (err && errlen) {
        if (o->env)
          snprintf(err, errlen, "--%s is required: set --%s or %s", o->name, o->name, o->env);
        else
          snprintf(err, errlen, "--%s is required", o->name);
      }
      return -1;
    }
  }
  return 0;
}

wsg_config_result wsg_config_parse(const wsg_config_spec *spec, void *cfg, int argc, char **argv,
                                   char **envp, char *err, size_t errlen) {
  if (err && errlen)
    err[0] = '\0';
  /* Help and version win over anything else on the line, even an invalid value before them. */
  switch (find_builtin(argc, argv)) {
  case BUILTIN_HELP:
    wsg_config_print_help(spec, stdout);
    return WSG_CONFIG_EXIT;
  case BUILTIN_VERSION:
    printf("%s %s\n", spec->program, WSG_VERSION);
    return WSG_CONFIG_EXIT;
  case BUILTIN_MARKDOWN:
    wsg_config_print_markdown(spec, stdout);
    return WSG_CONFIG_EXIT;
  default:
    break;
  }

  size_t count = 0;
  wsg_option *rows = wsg_config_rows(spec, &count, err, errlen);
  if (!rows)
    return WSG_CONFIG_ERROR;
  source_drop(spec, cfg);
  source_record *rec = calloc(1, sizeof *rec);
  unsigned char *src = calloc(count ? count : 1, 1);
  if (!rec || !src) {
    free(rec);
    free(src);
    free(rows);
    if (err && errlen)
      snprintf(err, errlen, "out of memory while reading the configuration");
    return WSG_CONFIG_ERROR;
  }
  rec->spec = spec;
  rec->cfg = cfg;
  rec->src = src;
  rec->next = source_records;
  source_records = rec;
  parse_ctx c = {rows, count, cfg, src, err, errlen};
  bool print = false;
  int rc = parse_sources(&c, argc, argv, envp, &print);
  free(rows);
  if (rc != 0)
    return WSG_CONFIG_ERROR;
  if (print) {
    print_config(spec, cfg, stdout);
    return WSG_CONFIG_EXIT;
  }
  return WSG_CONFIG_OK;
}

void wsg_config_finish(const wsg_config_spec *spec, void *cfg) {
  if (!spec || !cfg)
    return;
  size_t count = 0;
  char err[256];
  wsg_option *rows = wsg_config_rows(spec, &count, err, sizeof err);
  for (size_t i = 0; rows && i < count; i++) {
    const wsg_option *o = &rows[i];
    if (o->type == WSG_OPT_STRING || o->type == WSG_OPT_ENUM) {
      char **s = field(cfg, o);
      free(*s);
      *s = NULL;
    } else if (o->type == WSG_OPT_KVLIST) {
      wsg_kvlist *kv = field(cfg, o);
      for (size_t k = 0; k < kv->count; k++) {
        free(kv->keys[k]);
        free(kv->values[k]);
      }
      free(kv->keys);
      free(kv->values);
      memset(kv, 0, sizeof *kv);
    }
  }
  free(rows);
  source_drop(spec, cfg);
}

/* ---------------------------------------------------------------------------------------------
 * Showing values */

/* The effective value as text, secrets redacted. */
static void format_value(const wsg_option *o, const void *cfg, char *buf, size_t len) {
  const void *f = cfield(cfg, o);
  switch (o->type) {
  case WSG_OPT_STRING:
  case WSG_OPT_ENUM: {
    const char *s = *(char *const *)f;
    if (!s)
      snprintf(buf, len, "(unset)");
    else if (o->flags & WSG_OPTF_SECRET)
      snprintf(buf, len, "%s", s[0] ? "(set, redacted)" : "(empty)");
    else
      snprintf(buf, len, "\"%s\"", s);
    return;
  }
  case WSG_OPT_INT:
    snprintf(buf, len, "%" PRId64, *(const int64_t *)f);
    return;
  case WSG_OPT_BOOL:
    snprintf(buf, len, "%s", *(const bool *)f ? "true" : "false");
    return;
  case WSG_OPT_SIZE:
  case WSG_OPT_DURATION:
    wsg_opt_format_amount(o, *(const uint64_t *)f, buf, len);
    return;
  case WSG_OPT_KVLIST: {
    const wsg_kvlist *kv = f;
    size_t used = 0;
    buf[0] = '\0';
    if (kv->count == 0)
      snprintf(buf, len, "(none)");
    for (size_t k = 0; k < kv->count && used < len; k++) {
      bool secret = (o->flags & WSG_OPTF_SECRET) || key_is_secret(kv->keys[k]);
      int n = snprintf(buf + used, len - used, "%s%s=%s", k ? ";" : "", kv->keys[k],
                       secret ? "(set, redacted)" : kv->values[k]);
      if (n < 0)
        break;
      used += (size_t)n;
    }
    return;
  }
  }
  snprintf(buf, len, "?");
}

static void format_source(const wsg_option *o, value_source s, char *buf, size_t len) {
  switch (s) {
  case SRC_DEFAULT:
    snprintf(buf, len, "default");
    break;
  case SRC_ENV:
    snprintf(buf, len, "env %s", o->env ? o->env : "?");
    break;
  case SRC_FLAG:
    snprintf(buf, len, "flag --%s", o->name);
    break;
  default:
    snprintf(buf, len, "not set");
    break;
  }
}

/* Calls `emit` once per option with its name, effective value (redacted) and source. */
static void each_value(const wsg_config_spec *spec, const void *cfg,
                       void (*emit)(const char *name, const char *value, const char *source,
                                    void *arg),
                       void *arg) {
  const source_record *rec = source_find(spec, cfg);
  size_t count = 0;
  char err[256];
  wsg_option *rows = wsg_config_rows(spec, &count, err, sizeof err);
  if (!rows) {
    emit("(option table)", err, "error", arg);
    return;
  }
  for (size_t i = 0; i < count; i++) {
    const wsg_option *o = &rows[i];
    char value[2048], source[128];
    format_value(o, cfg, value, sizeof value);
    format_source(o, rec ? (value_source)rec->src[i] : SRC_NONE, source, sizeof source);
    emit(o->name, value, source, arg);
  }
  free(rows);
}

static void emit_log(const char *name, const char *value, const char *source, void *arg) {
  WSG_INFO("config", "%s = %s (%s)", name, value, source);
}

static void emit_file(const char *name, const char *value, const char *source, void *arg) {
  fprintf(arg, "%s = %s  # %s\n", name, value, source);
}

void wsg_config_log(const wsg_config_spec *spec, const void *cfg) {
  each_value(spec, cfg, emit_log, NULL);
}

static void print_config(const wsg_config_spec *spec, const void *cfg, FILE *out) {
  each_value(spec, cfg, emit_file, out);
}

/* Reads the secret file: bounded, one trailing newline (as `echo` writes it) removed. */
int wsg_config_read_secret(const char *opt, const char *path, size_t max, uint8_t **out,
                           size_t *outlen, char *err, size_t errlen) {
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    snprintf(err, errlen, "%s %s: %s", opt, path, strerror(errno));
    return -1;
  }
  uint8_t *buf = malloc(max + 1);
  if (!buf) {
    close(fd);
    snprintf(err, errlen, "%s: out of memory", opt);
    return -1;
  }
  size_t len = 0;
  for (;;) {
    ssize_t n = read(fd, buf + len, max + 1 - len);
    if (n < 0 && errno == EINTR)
      continue;
    if (n < 0) {
      snprintf(err, errlen, "%s %s: %s", opt, path, strerror(errno));
      goto fail;
    }
    if (n == 0)
      break;
    len += (size_t)n;
    if (len > max) {
      snprintf(err, errlen, "%s %s: longer than %zu bytes; is it the right file?", opt, path, max);
      goto fail;
    }
  }
  close(fd);
  if (len > 0 && buf[len - 1] == '\n')
    len--;
  if (len > 0 && buf[len - 1] == '\r')
    len--;
  *out = buf;
  *outlen = len;
  return 0;
fail:
  close(fd);
  explicit_bzero(buf, max + 1);
  free(buf);
  return -1;
}
