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

#include <stddef.h>
#include <stdint.h>

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

#endif
