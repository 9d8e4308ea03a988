/*
 * wsg_metrics: a registry of counters, gauges and histograms, rendered in the Prometheus text
 * exposition format 0.0.4.
 *
 * Layout: a list of families (one per metric name, in registration order), each with a list of
 * series (one per label set). Registration and rendering hold the registry mutex; updates touch
 * only the series' own atomics (relaxed: a scrape needs each value, not an order between them),
 * so the WebSocket thread never waits on a scrape.
 *
 * A histogram keeps one counter per bucket (not cumulative) and derives the cumulative counts and
 * `_count` while rendering, so `_count` always equals the `+Inf` bucket even when observations
 * race with a scrape. The sum is a double kept as its bit pattern in a uint64_t and added with a
 * compare-and-swap loop.
 *
 * Threads: any, for everything.
 */
#include "wsg_metrics.h"

#include <inttypes.h>
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "wsg_log.h"

/* Cardinality guard: a label value taken from input must not grow the registry without end. */
#define MAX_SERIES  10000
#define MAX_BUCKETS 64

typedef enum { KIND_COUNTER, KIND_GAUGE, KIND_GAUGE_FN, KIND_HISTOGRAM } metric_kind;

struct wsg_counter {
  atomic_uint_least64_t value;
};

struct wsg_gauge {
  atomic_int_least64_t value;
};

struct wsg_histogram {
  size_t nbounds;
  double bounds[MAX_BUCKETS];
  atomic_uint_least64_t buckets[MAX_BUCKETS + 1]; /* last one: above every bound (+Inf) */
  atomic_uint_least64_t sum_bits;                 /* a double's bits */
};

typedef struct series {
  metric_kind kind; /* a gauge family may mix set and computed series */
  char *labels;     /* canonical "a=\"x\",b=\"y\"", "" for none */
  struct series *next;
  union {
    wsg_counter counter;
    wsg_gauge gauge;
    struct {
      int64_t (*fn)(void *arg);
      void *arg;
    } gauge_fn;
    wsg_histogram histogram;
  } u;
} series;

typedef struct family {
  char *name;
  char *help;
  metric_kind kind;
  series *first, *last;
  struct family *next;
} family;

struct wsg_metrics {
  pthread_mutex_t lock;
  family *first, *last;
  size_t nseries;
  bool full_logged;
};

wsg_metrics *wsg_metrics_create(void) {
  wsg_metrics *m = calloc(1, sizeof *m);
  if (!m)
    return NULL;
  if (pthread_mutex_init(&m->lock, NULL) != 0) {
    free(m);
    return NULL;
  }
  return m;
}

void wsg_metrics_destroy(wsg_metrics *m) {
  if (!m)
    return;
  for (family *f = m->first, *fn; f; f = fn) {
    fn = f->next;
    for (series *s = f->first, *sn; s; s = sn) {
      sn = s->next;
      free(s->labels);
      free(s);
    }
    free(f->name);
    free(f->help);
    free(f);
  }
  pthread_mutex_destroy(&m->lock);
  free(m);
}

/* ---------------------------------------------------------------------------------------------
 * Names and labels */

static bool valid_name(const char *s, bool colon_ok) {
  if (!s || !*s)
    return false;
  for (const char *p = s; *p; p++) {
    char c = *p;
    bool alpha =
        (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || (colon_ok && c == ':');
    if (!alpha && !(p != s && c >= '0' && c <= '9'))
      return false;
  }
  return true;
}

/* A growable output string; `failed` sticks after the first allocation failure. */
typedef struct {
  char *buf;
  size_t len, cap;
  bool failed;
} strbuf;

static void sb_put(strbuf *b, const char *s, size_t n) {
  if (b->failed)
    return;
  if (b->len + n + 1 > b->cap) {
    size_t cap = b->cap ? b->cap : 4096;
    while (cap < b->len + n + 1)
      cap *= 2;
    char *nb = realloc(b->buf, cap);
    if (!nb) {
      b->failed = true;
      return;
    }
    b->buf = nb;
    b->cap = cap;
  }
  memcpy(b->buf + b->len, s, n);
  b->len += n;
  b->buf[b->len] = '\0';
}

static void sb_puts(strbuf *b, const char *s) {
  sb_put(b, s, strlen(s));
}

static void sb_printf(strbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void sb_printf(strbuf *b, const char *fmt, ...) {
  char tmp[128];
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
  va_end(ap);
  if (n < 0 || (size_t)n >= sizeof tmp) {
    b->failed = true;
    return;
  }
  sb_put(b, tmp, (size_t)n);
}

/* Escapes a label value (backslash, quote, newline) or a HELP text (backslash, newline). */
static void sb_escaped(strbuf *b, const char *s, size_t n, bool quote) {
  for (size_t i = 0; i < n; i++) {
    if (s[i] == '\\')
      sb_puts(b, "\\\\");
    else if (s[i] == '\n')
      sb_puts(b, "\\n");
    else if (quote && s[i] == '"')
      sb_puts(b, "\\\"");
    else
      sb_put(b, s + i, 1);
  }
}

size_t wsg_metrics_label_escape(char *out, size_t outlen, const char *value) {
  strbuf b = {0};
  sb_escaped(&b, value, strlen(value), true);
  size_t need = b.failed ? 0 : b.len;
  if (out && outlen) {
    size_t n = need < outlen - 1 ? need : outlen - 1;
    if (n)
      memcpy(out, b.buf, n);
    out[n] = '\0';
  }
  free(b.buf);
  return need;
}

/*
 * Parses `name="value",...` (the caller's label set) into the canonical form: values re-escaped,
 * so both a raw newline and an already escaped "\n" come out as "\n". Returns a heap string ("" for
 * NULL/empty input), or NULL with *bad set when the set is malformed, or NULL on no memory.
 */
static char *canonical_labels(const char *in, bool *bad) {
  strbuf b = {0};
  *bad = false;
  sb_puts(&b, "");
  const char *p = in ? in : "";
  while (*p) {
    const char *eq = strchr(p, '=');
    if (!eq || eq[1] != '"')
      goto malformed;
    char lname[128];
    size_t nlen = (size_t)(eq - p);
    if (nlen == 0 || nlen >= sizeof lname)
      goto malformed;
    memcpy(lname, p, nlen);
    lname[nlen] = '\0';
    if (!valid_name(lname, false) || strcmp(lname, "le") == 0)
      goto malformed;
    if (b.len)
      sb_puts(&b, ",");
    sb_puts(&b, lname);
    sb_puts(&b, "=\"");
    const char *v = eq + 2;
    for (;; v++) {
      if (*v == '\0')
        goto malformed;
      if (*v == '"')
        break;
      if (*v == '\\') {
        v++;
        if (*v == 'n')
          sb_puts(&b, "\\n");
        else if (*v == '\\' || *v == '"')
          sb_escaped(&b, v, 1, true);
        else
          goto malformed;
      } else {
        sb_escaped(&b, v, 1, true);
      }
    }
    sb_puts(&b, "\"");
    p = v + 1;
    if (*p == ',')
      p++;
    else if (*p != '\0')
      goto malformed;
  }
  if (b.failed) {
    free(b.buf);
    return NULL;
  }
  return b.buf;
malformed:
  free(b.buf);
  *bad = true;
  return NULL;
}

/* ---------------------------------------------------------------------------------------------
 * Registration */

static const char *kind_type(metric_kind k) {
  switch (k) {
  case KIND_COUNTER:
    return "counter";
  case KIND_GAUGE:
  case KIND_GAUGE_FN:
    return "gauge";
  case KIND_HISTOGRAM:
    return "histogram";
  }
  return "untyped";
}

/*
 * Finds or creates the series (name, labels) of kind `kind`; `created` says which. NULL when out of
 * memory, when the name or labels are malformed, when the name is registered with another type,
 * or when the registry is full (each logged: all are bugs or a cardinality problem to fix).
 * Called with the lock held.
 */
static series *lookup(wsg_metrics *m, const char *name, const char *help, const char *labels,
                      metric_kind kind, bool *created) {
  *created = false;
  if (!valid_name(name, true)) {
    WSG_ERROR("metrics", "invalid metric name '%s' (letters, digits, '_' and ':')",
              name ? name : "(null)");
    return NULL;
  }
  bool bad;
  char *canon = canonical_labels(labels, &bad);
  if (!canon) {
    if (bad)
      WSG_ERROR("metrics", "%s: malformed label set '%s' (expected name=\"value\",...)", name,
                labels);
    return NULL;
  }
  family *f = m->first;
  while (f && strcmp(f->name, name) != 0)
    f = f->next;
  if (f && strcmp(kind_type(f->kind), kind_type(kind)) != 0) {
    WSG_ERROR("metrics", "%s is already registered as a %s, not a %s", name, kind_type(f->kind),
              kind_type(kind));
    free(canon);
    return NULL;
  }
  if (f) {
    for (series *s = f->first; s; s = s->next) {
      if (strcmp(s->labels, canon) == 0) {
        free(canon);
        return s;
      }
    }
  }
  if (m->nseries >= MAX_SERIES) {
    if (!m->full_logged)
      WSG_ERROR("metrics",
                "more than %d series (last: %s{%s}): not registering more; a label "
                "probably carries unbounded values",
                MAX_SERIES, name, canon);
    m->full_logged = true;
    free(canon);
    return NULL;
  }
  series *s = calloc(1, sizeof *s);
  if (!s) {
    free(canon);
    return NULL;
  }
  s->kind = kind;
  s->labels = canon;
  if (!f) {
    f = calloc(1, sizeof *f);
    if (f) {
      f->name = strdup(name);
      f->help = strdup(help ? help : "");
    }
    if (!f || !f->name || !f->help) {
      if (f) {
        free(f->name);
        free(f->help);
      }
      free(f);
      free(canon);
      free(s);
      return NULL;
    }
    f->kind = kind;
    if (m->last)
      m->last->next = f;
    else
      m->first = f;
    m->last = f;
  }
  if (f->last)
    f->last->next = s;
  else
    f->first = s;
  f->last = s;
  m->nseries++;
  *created = true;
  return s;
}

wsg_counter *wsg_metrics_counter(wsg_metrics *m, const char *name, const char *help,
                                 const char *labels) {
  bool created;
  pthread_mutex_lock(&m->lock);
  series *s = lookup(m, name, help, labels, KIND_COUNTER, &created);
  pthread_mutex_unlock(&m->lock);
  return s ? &s->u.counter : NULL;
}

wsg_gauge *wsg_metrics_gauge(wsg_metrics *m, const char *name, const char *help,
                             const char *labels) {
  bool created;
  pthread_mutex_lock(&m->lock);
  series *s = lookup(m, name, help, labels, KIND_GAUGE, &created);
  pthread_mutex_unlock(&m->lock);
  if (s && s->kind != KIND_GAUGE) {
    WSG_ERROR("metrics", "%s{%s} is a computed gauge, not a settable one", name, s->labels);
    return NULL;
  }
  return s ? &s->u.gauge : NULL;
}

wsg_histogram *wsg_metrics_histogram(wsg_metrics *m, const char *name, const char *help,
                                     const char *labels, const double *bounds, size_t nbounds) {
  if (nbounds > MAX_BUCKETS) {
    WSG_ERROR("metrics", "%s: %zu buckets, at most %d", name, nbounds, MAX_BUCKETS);
    return NULL;
  }
  for (size_t i = 0; i < nbounds; i++) {
    if (isnan(bounds[i]) || (i > 0 && !(bounds[i] > bounds[i - 1]))) {
      WSG_ERROR("metrics", "%s: bucket bounds must be ascending numbers", name);
      return NULL;
    }
  }
  bool created;
  pthread_mutex_lock(&m->lock);
  series *s = lookup(m, name, help, labels, KIND_HISTOGRAM, &created);
  if (s && created) {
    /* Only the HTTP thread reads these, after taking the same lock. */
    s->u.histogram.nbounds = nbounds;
    if (nbounds)
      memcpy(s->u.histogram.bounds, bounds, nbounds * sizeof *bounds);
  }
  pthread_mutex_unlock(&m->lock);
  return s ? &s->u.histogram : NULL;
}

int wsg_metrics_gauge_fn(wsg_metrics *m, const char *name, const char *help, const char *labels,
                         int64_t (*fn)(void *arg), void *arg) {
  bool created;
  int rc = -1;
  if (!fn)
    return -1;
  pthread_mutex_lock(&m->lock);
  series *s = lookup(m, name, help, labels, KIND_GAUGE_FN, &created);
  if (s && s->kind == KIND_GAUGE_FN) {
    s->u.gauge_fn.fn = fn;
    s->u.gauge_fn.arg = arg;
    rc = 0;
  } else if (s) {
    WSG_ERROR("metrics", "%s{%s} is a settable gauge, not a computed one", name, s->labels);
  }
  pthread_mutex_unlock(&m->lock);
  return rc;
}

/* ---------------------------------------------------------------------------------------------
 * Updates: lock-free, NULL-tolerant so a series that failed to register costs nothing. */

void wsg_counter_add(wsg_counter *c, uint64_t n) {
  if (c)
    atomic_fetch_add_explicit(&c->value, n, memory_order_relaxed);
}

uint64_t wsg_counter_get(const wsg_counter *c) {
  return c ? atomic_load_explicit(&((wsg_counter *)c)->value, memory_order_relaxed) : 0;
}

void wsg_gauge_set(wsg_gauge *g, int64_t v) {
  if (g)
    atomic_store_explicit(&g->value, v, memory_order_relaxed);
}

void wsg_gauge_add(wsg_gauge *g, int64_t delta) {
  if (g)
    atomic_fetch_add_explicit(&g->value, delta, memory_order_relaxed);
}

int64_t wsg_gauge_get(const wsg_gauge *g) {
  return g ? atomic_load_explicit(&((wsg_gauge *)g)->value, memory_order_relaxed) : 0;
}

static uint64_t double_bits(double d) {
  uint64_t u;
  memcpy(&u, &d, sizeof u);
  return u;
}

static double bits_double(uint64_t u) {
  double d;
  memcpy(&d, &u, sizeof d);
  return d;
}

void wsg_histogram_observe(wsg_histogram *h, double value) {
  if (!h || isnan(value))
    return;
  size_t i = 0;
  while (i < h->nbounds && value > h->bounds[i])
    i++;
  atomic_fetch_add_explicit(&h->buckets[i], 1, memory_order_relaxed);
  uint64_t old = atomic_load_explicit(&h->sum_bits, memory_order_relaxed);
  while (!atomic_compare_exchange_weak_explicit(&h->sum_bits, &old,
                                                double_bits(bits_double(old) + value),
                                                memory_order_relaxed, memory_order_relaxed))
    ;
}

/* ---------------------------------------------------------------------------------------------
 * Rendering */

/* Shortest text that reads back as the same double (Prometheus clients print "0.005", not
 * "0.0050000000000000001"), and the format's spellings of the special values. */
static void format_double(double d, char *buf, size_t len) {
  if (isnan(d)) {
    snprintf(buf, len, "NaN");
    return;
  }
  if (isinf(d)) {
    snprintf(buf, len, d > 0 ? "+Inf" : "-Inf");
    return;
  }
  /* The fewest significant digits that round-trip, but at least 6 so that %g, like the Go
   * client's FormatFloat(v, 'g', -1), writes 600000 rather than 6e+05. */
  int prec = 1;
  while (prec < 17) {
    snprintf(buf, len, "%.*g", prec, d);
    if (strtod(buf, NULL) == d)
      break;
    prec++;
  }
  for (prec = prec < 6 ? 6 : prec; prec <= 17; prec++) {
    snprintf(buf, len, "%.*g", prec, d);
    if (strtod(buf, NULL) == d)
      return;
  }
}

/* name{labels[,extra]} value */
static void sample(strbuf *b, const char *name, const char *suffix, const char *labels,
                   const char *extra, const char *value) {
  sb_puts(b, name);
  sb_puts(b, suffix);
  if (labels[0] || extra) {
    sb_puts(b, "{");
    sb_puts(b, labels);
    if (labels[0] && extra)
      sb_puts(b, ",");
    if (extra)
      sb_puts(b, extra);
    sb_puts(b, "}");
  }
  sb_puts(b, " ");
  sb_puts(b, value);
  sb_puts(b, "\n");
}

static void render_histogram(strbuf *b, const family *f, const series *s) {
  const wsg_histogram *h = &s->u.histogram;
  uint64_t cum = 0;
  char le[64], val[32], num[32];
  for (size_t i = 0; i <= h->nbounds; i++) {
    cum += atomic_load_explicit(&((wsg_histogram *)h)->buckets[i], memory_order_relaxed);
    if (i < h->nbounds)
      format_double(h->bounds[i], num, sizeof num);
    snprintf(le, sizeof le, "le=\"%s\"", i < h->nbounds ? num : "+Inf");
    snprintf(val, sizeof val, "%" PRIu64, cum);
    sample(b, f->name, "_bucket", s->labels, le, val);
  }
  format_double(
      bits_double(atomic_load_explicit(&((wsg_histogram *)h)->sum_bits, memory_order_relaxed)), num,
      sizeof num);
  sample(b, f->name, "_sum", s->labels, NULL, num);
  snprintf(val, sizeof val, "%" PRIu64, cum);
  sample(b, f->name, "_count", s->labels, NULL, val);
}

int wsg_metrics_render(wsg_metrics *m, char **out, size_t *len) {
  strbuf b = {0};
  char val[32];
  sb_puts(&b, "");
  pthread_mutex_lock(&m->lock);
  for (const family *f = m->first; f; f = f->next) {
    sb_puts(&b, "# HELP ");
    sb_puts(&b, f->name);
    sb_puts(&b, " ");
    sb_escaped(&b, f->help, strlen(f->help), false);
    sb_printf(&b, "\n# TYPE %s %s\n", f->name, kind_type(f->kind));
    for (const series *s = f->first; s; s = s->next) {
      switch (s->kind) {
      case KIND_COUNTER:
        snprintf(val, sizeof val, "%" PRIu64, wsg_counter_get(&s->u.counter));
        sample(&b, f->name, "", s->labels, NULL, val);
        break;
      case KIND_GAUGE:
        snprintf(val, sizeof val, "%" PRId64, wsg_gauge_get(&s->u.gauge));
        sample(&b, f->name, "", s->labels, NULL, val);
        break;
      case KIND_GAUGE_FN:
        snprintf(val, sizeof val, "%" PRId64, s->u.gauge_fn.fn(s->u.gauge_fn.arg));
        sample(&b, f->name, "", s->labels, NULL, val);
        break;
      case KIND_HISTOGRAM:
        render_histogram(&b, f, s);
        break;
      }
    }
  }
  pthread_mutex_unlock(&m->lock);
  if (b.failed) {
    free(b.buf);
    return -1;
  }
  *out = b.buf;
  if (len)
    *len = b.len;
  return 0;
}
