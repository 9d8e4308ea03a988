/*
 * wsg_metrics: counters, gauges and histograms rendered in the Prometheus text format.
 *
 * Series are registered once (start-up, or the first time a label value appears) and updated
 * with relaxed atomics, so any thread may update any series without a lock. Rendering takes the
 * registry lock only to walk the list of series.
 *
 * Ownership: the registry owns every series; the pointers returned stay valid until
 * wsg_metrics_destroy().
 */
#ifndef WSG_METRICS_H
#define WSG_METRICS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

typedef struct wsg_metrics wsg_metrics;
typedef struct wsg_counter wsg_counter;
typedef struct wsg_gauge wsg_gauge;
typedef struct wsg_histogram wsg_histogram;

wsg_metrics *wsg_metrics_create(void);
void wsg_metrics_destroy(wsg_metrics *m); /* NULL is a no-op */

/*
 * `name` is the full metric name ("wsgate_gateway_frames_in_total"); `labels` is the label set
 * without braces ("result=\"ok\"") or NULL. Registering the same name and labels twice returns
 * the same series (a histogram keeps its first bounds). Returns NULL when out of memory, and also
 * (logged at ERROR: these are bugs) for a malformed name or label set, a name already registered
 * with another type, or beyond 10,000 series (a label carrying unbounded values). Every update
 * function accepts NULL and does nothing, so a failed registration never crashes a hot path.
 */
wsg_counter *wsg_metrics_counter(wsg_metrics *m, const char *name, const char *help,
                                 const char *labels);
wsg_gauge *wsg_metrics_gauge(wsg_metrics *m, const char *name, const char *help,
                             const char *labels);
/* `bounds` are the upper bounds of the buckets, ascending; +Inf is added. Copied. */
wsg_histogram *wsg_metrics_histogram(wsg_metrics *m, const char *name, const char *help,
                                     const char *labels, const double *bounds, size_t nbounds);

/* A gauge computed when scraped; `fn` runs on the scraping thread, under the registry lock (so it
 * must be thread-safe and must not register metrics). Registering it again replaces fn and arg.
 * A gauge name may mix set and computed series. Returns 0, or -1 as above. */
int wsg_metrics_gauge_fn(wsg_metrics *m, const char *name, const char *help, const char *labels,
                         int64_t (*fn)(void *arg), void *arg);

void wsg_counter_add(wsg_counter *c, uint64_t n);
uint64_t wsg_counter_get(const wsg_counter *c);
void wsg_gauge_set(wsg_gauge *g, int64_t v);
void wsg_gauge_add(wsg_gauge *g, int64_t delta);
int64_t wsg_gauge_get(const wsg_gauge *g);
void wsg_histogram_observe(wsg_histogram *h, double value);

/*
 * Escapes a label value taken from input (backslash, quote, newline) for a `labels` string:
 * writes at most outlen-1 bytes and a NUL, returns the escaped length (like snprintf).
 * `value` borrowed.
 */
size_t wsg_metrics_label_escape(char *out, size_t outlen, const char *value);

/* Renders every series. *out is heap-allocated, owned by the caller (free()). Returns 0 or -1. */
int wsg_metrics_render(wsg_metrics *m, char **out, size_t *len);

/* ---------------------------------------------------------------------------------------------
 * Metric tables (common/wsg_metrics_table.c): each module declares its series once, in a const
 * table of rows; the table drives the registration (wsg_metrics_register_table) and the docs
 * (wsg_metrics_print_markdown, `--help-metrics`, docs/METRICS-*.md). A family with several
 * fixed label values is several rows of the same name, type and help.
 */
typedef enum {
  WSG_METRIC_COUNTER,
  WSG_METRIC_GAUGE,
  WSG_METRIC_GAUGE_FN, /* computed when scraped: fn(owner) */
  WSG_METRIC_HISTOGRAM,
} wsg_metric_type;

/* `field` of a row that registers nothing (runtime labels, computed gauges). */
#define WSG_METRIC_UNBOUND SIZE_MAX

typedef struct {
  wsg_metric_type type;
  const char *name;
  const char *help;
  const char *labels;         /* fixed label set ("result=\"ok\""), or NULL */
  const char *runtime_labels; /* label names whose values appear at run time ("partition"), or
                                 NULL; such a row only documents: the module registers each
                                 series with wsg_metrics_counter_def / wsg_metrics_gauge_def */
  size_t field;               /* offsetof the series pointer in the owner, or WSG_METRIC_UNBOUND */
  const double *bounds;       /* histogram bucket bounds, ascending */
  size_t nbounds;
  int64_t (*fn)(void *owner); /* WSG_METRIC_GAUGE_FN */
} wsg_metric_def;

typedef struct {
  const char *module; /* the source file that owns the series, for messages */
  const wsg_metric_def *rows;
  size_t count;
} wsg_metric_table;

#define WSG_METRIC_TABLE(module_, rows_)                                                           \
  { (module_), (rows_), sizeof(rows_) / sizeof((rows_)[0]) }

/* offsetof(T, f), and a compile error unless T's member f has type `ptr` (typed rows). */
#define WSG_METRIC_FIELD(T, f, ptr) _Generic(((T *)0)->f, ptr : offsetof(T, f))

/* Rows whose series pointer is member `f` of the owner struct `T`. */
#define WSG_COUNTER_ROW(T, f, name_, help_, labels_)                                               \
  {                                                                                                \
    .type = WSG_METRIC_COUNTER, .name = (name_), .help = (help_), .labels = (labels_),             \
    .field = WSG_METRIC_FIELD(T, f, wsg_counter *)                                                 \
  }
#define WSG_GAUGE_ROW(T, f, name_, help_, labels_)                                                 \
  {                                                                                                \
    .type = WSG_METRIC_GAUGE, .name = (name_), .help = (help_), .labels = (labels_),               \
    .field = WSG_METRIC_FIELD(T, f, wsg_gauge *)                                                   \
  }
/* `bounds_` must be an array (its size is taken here). */
#define WSG_HISTOGRAM_ROW(T, f, name_, help_, labels_, bounds_)                                    \
  {                                                                                                \
    .type = WSG_METRIC_HISTOGRAM, .name = (name_), .help = (help_), .labels = (labels_),           \
    .field = WSG_METRIC_FIELD(T, f, wsg_histogram *), .bounds = (bounds_),                         \
    .nbounds = sizeof(bounds_) / sizeof((bounds_)[0])                                              \
  }
/*
 * Buckets of the per-hop latency histograms (`*_hop_*_seconds`, docs/GATEWAY.md "Where the time
 * goes"): fine below 10 ms, where the goals of a round trip are, and up to 5 s for stalls. One list
 * for every hop, so wsgate-load can add and subtract them bucket by bucket. Use as
 * `static const double b[] = WSG_HOP_BOUNDS;`.
 */
#define WSG_HOP_BOUNDS                                                                             \
  {                                                                                                \
    0.0001, 0.00025, 0.0005, 0.001, 0.0015, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03,  \
        0.05, 0.075, 0.1, 0.25, 0.5, 1, 2.5, 5                                                     \
  }

/* A computed gauge: fn(owner) runs at each scrape (wsg_metrics_gauge_fn's rules apply). */
#define WSG_GAUGE_FN_ROW(fn_, name_, help_, labels_)                                               \
  {                                                                                                \
    .type = WSG_METRIC_GAUGE_FN, .name = (name_), .help = (help_), .labels = (labels_),            \
    .field = WSG_METRIC_UNBOUND, .fn = (fn_)                                                       \
  }
/* A family whose label values appear at run time: documented here, registered by its module. */
#define WSG_RUNTIME_ROW(type_, name_, help_, label_names_)                                         \
  {                                                                                                \
    .type = (type_), .name = (name_), .help = (help_), .runtime_labels = (label_names_),           \
    .field = WSG_METRIC_UNBOUND                                                                    \
  }
/*
 * Registers every row of `t` into `m` and stores each series pointer at owner + row->field
 * (computed gauges get `owner` as their argument). Rows with runtime labels are skipped. Every row
 * is tried; returns 0, or -1 when one failed (logged; its pointer is NULL, which updates accept)
 * or when a counter, gauge or histogram row has no field (a bug). m NULL: nothing is registered,
 * returns 0. `t` and `owner` borrowed; `owner` must outlive `m` when the table has computed gauges.
 */
int wsg_metrics_register_table(wsg_metrics *m, const wsg_metric_table *t, void *owner);

/* One series of a runtime-labelled row (`labels` like wsg_metrics_counter's). NULL if m is NULL,
 * the row is of another type, or as wsg_metrics_counter / wsg_metrics_gauge. */
wsg_counter *wsg_metrics_counter_def(wsg_metrics *m, const wsg_metric_def *def, const char *labels);
wsg_gauge *wsg_metrics_gauge_def(wsg_metrics *m, const wsg_metric_def *def, const char *labels);

/*
 * Prints the Markdown page of a program's metrics (docs/METRICS-<program>.md): one table row per
 * family, in the order of `tables` (NULL-terminated) and their rows, with its type, its labels and
 * their fixed values, and its help. Returns 0, or -1 with `err` set when two rows of one name
 * disagree on type or help, or repeat a label set (bugs the doc test catches).
 */
int wsg_metrics_print_markdown(FILE *out, const char *program,
                               const wsg_metric_table *const *tables, char *err, size_t errlen);

/* Whether argv (up to "--") holds `--help-metrics`: the daemons check it before their options,
 * which it needs none of. */
bool wsg_metrics_help_requested(int argc, char **argv);

#endif
