/*
 * wsg_metrics_table: metric tables (wsg_metrics.h). A module declares its series once, as const
 * rows; this file registers them into a wsg_metrics registry (series pointers stored into the
 * owner struct at each row's offset) and renders a program's tables as the Markdown page of
 * docs/METRICS-<program>.md, so the docs cannot miss a series the code registers.
 *
 * Threads: any (registration takes the registry's lock; printing touches only the tables).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "wsg_log.h"
#include "wsg_metrics.h"

/* ---------------------------------------------------------------------------------------------
 * Registration */

static void **slot(void *owner, const wsg_metric_def *d) {
  return (void **)((char *)owner + d->field);
}

int wsg_metrics_register_table(wsg_metrics *m, const wsg_metric_table *t, void *owner) {
  if (!m)
    return 0;
  int rc = 0;
  for (size_t i = 0; i < t->count; i++) {
    const wsg_metric_def *d = &t->rows[i];
    if (d->runtime_labels)
      continue;
    if (d->type == WSG_METRIC_GAUGE_FN) {
      if (wsg_metrics_gauge_fn(m, d->name, d->help, d->labels, d->fn, owner) != 0)
        rc = -1;
      continue;
    }
    if (d->field == WSG_METRIC_UNBOUND || !owner) {
      WSG_ERROR("metrics", "%s: row %s has no field to store its series in", t->module, d->name);
      rc = -1;
      continue;
    }
    void *s = NULL;
    switch (d->type) {
    case WSG_METRIC_COUNTER:
      s = wsg_metrics_counter(m, d->name, d->help, d->labels);
      break;
    case WSG_METRIC_GAUGE:
      s = wsg_metrics_gauge(m, d->name, d->help, d->labels);
      break;
    case WSG_METRIC_HISTOGRAM:
      s = wsg_metrics_histogram(m, d->name, d->help, d->labels, d->bounds, d->nbounds);
      break;
    case WSG_METRIC_GAUGE_FN:
      break;
    }
    *slot(owner, d) = s;
    if (!s)
      rc = -1;
  }
  return rc;
}

wsg_counter *wsg_metrics_counter_def(wsg_metrics *m, const wsg_metric_def *def,
                                     const char *labels) {
  if (!m || def->type != WSG_METRIC_COUNTER)
    return NULL;
  return wsg_metrics_counter(m, def->name, def->help, labels);
}

wsg_gauge *wsg_metrics_gauge_def(wsg_metrics *m, const wsg_metric_def *def, const char *labels) {
  if (!m || def->type != WSG_METRIC_GAUGE)
    return NULL;
  return wsg_metrics_gauge(m, def->name, def->help, labels);
}

bool wsg_metrics_help_requested(int argc, char **argv) {
  for (int i = 1; i < argc && argv[i]; i++) {
    if (strcmp(argv[i], "--") == 0)
      break;
    if (strcmp(argv[i], "--help-metrics") == 0)
      return true;
  }
  return false;
}

/* ---------------------------------------------------------------------------------------------
 * Markdown */

static const char *type_name(wsg_metric_type t) {
  switch (t) {
  case WSG_METRIC_COUNTER:
    return "counter";
  case WSG_METRIC_GAUGE:
  case WSG_METRIC_GAUGE_FN:
    return "gauge";
  case WSG_METRIC_HISTOGRAM:
    return "histogram";
  }
  return "untyped";
}

/* A table cell's text: '|' and '<' escaped (help texts say "user:<id>", not an HTML tag), line
 * breaks as spaces. */
static void md_text(FILE *out, const char *s) {
  for (; *s; s++) {
    if (*s == '|' || *s == '<')
      fprintf(out, "\\%c", *s);
    else if (*s == '\n' || *s == '\r')
      fputc(' ', out);
    else
      fputc(*s, out);
  }
}

/* The label names of a family, each with its fixed values in order of first appearance. */
#define MAX_LABELS 8
#define MAX_VALUES 64
typedef struct {
  char name[64];
  bool runtime;
  size_t nvalues;
  char values[MAX_VALUES][64];
} label_col;

typedef struct {
  label_col cols[MAX_LABELS];
  size_t ncols;
} label_set;

static label_col *col_get(label_set *ls, const char *name, size_t len) {
  for (size_t i = 0; i < ls->ncols; i++)
    if (strlen(ls->cols[i].name) == len && strncmp(ls->cols[i].name, name, len) == 0)
      return &ls->cols[i];
  if (ls->ncols == MAX_LABELS || len >= sizeof ls->cols[0].name)
    return NULL;
  label_col *c = &ls->cols[ls->ncols++];
  memset(c, 0, sizeof *c);
  memcpy(c->name, name, len);
  return c;
}

static int col_add_value(label_col *c, const char *v, size_t len) {
  if (len >= sizeof c->values[0])
    return -1;
  for (size_t i = 0; i < c->nvalues; i++)
    if (strlen(c->values[i]) == len && strncmp(c->values[i], v, len) == 0)
      return 0;
  if (c->nvalues == MAX_VALUES)
    return -1;
  memcpy(c->values[c->nvalues], v, len);
  c->values[c->nvalues++][len] = '\0';
  return 0;
}

/* Adds a fixed label set `a="x",b="y"` (values without escapes: tables hold plain words) or a
 * runtime list of names `a,b`. Returns 0, or -1 when it does not parse or does not fit. */
static int labels_add(label_set *ls, const char *s, bool runtime) {
  while (s && *s) {
    size_t n = strcspn(s, runtime ? "," : "=");
    label_col *c = col_get(ls, s, n);
    if (!c || n == 0)
      return -1;
    s += n;
    if (runtime) {
      c->runtime = true;
    } else {
      if (s[0] != '=' || s[1] != '"')
        return -1;
      const char *v = s + 2;
      const char *end = strchr(v, '"');
      if (!end || memchr(v, '\\', (size_t)(end - v)) || col_add_value(c, v, (size_t)(end - v)))
        return -1;
      s = end + 1;
    }
    if (*s == ',')
      s++;
    else if (*s)
      return -1;
  }
  return 0;
}

static void print_labels(FILE *out, const label_set *ls) {
  for (size_t i = 0; i < ls->ncols; i++) {
    const label_col *c = &ls->cols[i];
    /* "; " after a label with values, so that names and values do not run together */
    bool values = c->nvalues || (i && ls->cols[i - 1].nvalues);
    fprintf(out, "%s`%s`", i ? (values ? "; " : ", ") : "", c->name);
    for (size_t v = 0; v < c->nvalues; v++)
      fprintf(out, "%s`%s`", v ? ", " : ": ", c->values[v]);
  }
}

static bool same_labels(const char *a, const char *b) {
  return strcmp(a ? a : "", b ? b : "") == 0;
}

/* Every row named `name` (from the first, at tables[ti].rows[ri]) into one Markdown row. */
static int print_family(FILE *out, const wsg_metric_table *const *tables, size_t ti, size_t ri,
                        char *err, size_t errlen) {
  const wsg_metric_def *first = &tables[ti]->rows[ri];
  label_set *ls = calloc(1, sizeof *ls);
  if (!ls) {
    snprintf(err, errlen, "out of memory");
    return -1;
  }
  int rc = 0;
  for (size_t t = ti; tables[t] && rc == 0; t++) {
    for (size_t r = t == ti ? ri : 0; r < tables[t]->count && rc == 0; r++) {
      const wsg_metric_def *d = &tables[t]->rows[r];
      if (strcmp(d->name, first->name) != 0)
        continue;
      if (strcmp(type_name(d->type), type_name(first->type)) != 0 ||
          strcmp(d->help, first->help) != 0) {
        snprintf(err, errlen, "%s: %s differs from its first row (%s) in type or help",
                 tables[t]->module, d->name, tables[ti]->module);
        rc = -1;
        break;
      }
      if (d != first && same_labels(d->labels, first->labels) && !d->runtime_labels) {
        snprintf(err, errlen, "%s: %s{%s} is declared twice", tables[t]->module, d->name,
                 d->labels ? d->labels : "");
        rc = -1;
        break;
      }
      if (labels_add(ls, d->labels, false) != 0 || labels_add(ls, d->runtime_labels, true) != 0) {
        snprintf(err, errlen, "%s: %s: labels '%s' do not parse or are too many", tables[t]->module,
                 d->name, d->labels ? d->labels : d->runtime_labels);
        rc = -1;
      }
    }
  }
  if (rc == 0) {
    fprintf(out, "| `%s` | %s | ", first->name, type_name(first->type));
    print_labels(out, ls);
    fputs(" | ", out);
    md_text(out, first->help);
    if (first->type == WSG_METRIC_HISTOGRAM) {
      size_t n = strlen(first->help);
      fputs(n && first->help[n - 1] == '.' ? " Buckets:" : ". Buckets:", out);
      for (size_t b = 0; b < first->nbounds; b++)
        fprintf(out, "%s %g", b ? "," : "", first->bounds[b]);
      fputs(", +Inf.", out);
    }
    fputs(" |\n", out);
  }
  free(ls);
  return rc;
}

/* Whether a row named like tables[ti].rows[ri] comes earlier (its family is already printed). */
static bool seen_before(const wsg_metric_table *const *tables, size_t ti, size_t ri) {
  const char *name = tables[ti]->rows[ri].name;
  for (size_t t = 0; t <= ti; t++)
    for (size_t r = 0; r < (t == ti ? ri : tables[t]->count); r++)
      if (strcmp(tables[t]->rows[r].name, name) == 0)
        return true;
  return false;
}

int wsg_metrics_print_markdown(FILE *out, const char *program,
                               const wsg_metric_table *const *tables, char *err, size_t errlen) {
  fprintf(out, "# %s metrics\n\n", program);
  fprintf(out,
          "<!-- Generated by `%s --help-metrics`; edit the metric tables in the source, not "
          "this file. -->\n\n",
          program);
  fprintf(out,
          "Every series `GET /metrics` serves on the operations port (`--http-port`), in the "
          "Prometheus text format. A label listed with values has one series per value; a label "
          "listed alone takes its values at run time.\n\n");
  fprintf(out, "| Metric | Type | Labels | Description |\n");
  fprintf(out, "|---|---|---|---|\n");
  for (size_t t = 0; tables[t]; t++)
    for (size_t r = 0; r < tables[t]->count; r++)
      if (!seen_before(tables, t, r) && print_family(out, tables, t, r, err, errlen) != 0)
        return -1;
  return 0;
}
