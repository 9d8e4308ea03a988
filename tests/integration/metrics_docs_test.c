/*
 * The metric docs against what the daemons serve: a real wsgate-gateway and wsgate-processor
 * (shared Kafka and Redis) are scraped, and every family of their /metrics must be a row of
 * docs/METRICS-gateway.md or docs/METRICS-processor.md with the same type, help and label values
 * (and bucket bounds), and every row of those pages must be served. The pages are generated from
 * the metric tables (--help-metrics; suite docs checks that), so this fails when a series is
 * registered outside the tables (runtime-labelled rows are registered by their modules).
 */
#include <criterion/criterion.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "harness.h"
#include "harness_kafka.h"

#define SCRAPE_MAX   (1024 * 1024)
#define MAX_FAMILIES 256
#define PROBLEMS_MAX 16384

/* One row of a generated page: | `name` | type | labels | description | */
typedef struct {
  char name[128];
  char type[16];
  char labels[512];
  char desc[512];
  bool served;
} doc_row;

typedef struct {
  doc_row rows[MAX_FAMILIES];
  size_t n;
  char problems[PROBLEMS_MAX];
} check;

__attribute__((format(printf, 2, 3))) static void problem(check *c, const char *fmt, ...) {
  size_t len = strlen(c->problems);
  if (len + 2 >= sizeof c->problems)
    return;
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(c->problems + len, sizeof c->problems - len - 1, fmt, ap);
  va_end(ap);
  strcat(c->problems, "\n");
}

/* A cell's text, trimmed, with the page's escapes (\| and \<) undone. */
static void cell(char *dst, size_t cap, const char *s, size_t n) {
  while (n && *s == ' ')
    s++, n--;
  while (n && s[n - 1] == ' ')
    n--;
  size_t o = 0;
  for (size_t i = 0; i < n && o + 1 < cap; i++) {
    if (s[i] == '\\' && i + 1 < n && (s[i + 1] == '|' || s[i + 1] == '<'))
      i++;
    dst[o++] = s[i];
  }
  dst[o] = '\0';
}

/* Splits a table line on the '|' that are not escaped. Returns the number of cells. */
static size_t split_row(const char *line, const char *cells[8], size_t lens[8]) {
  size_t n = 0;
  const char *start = NULL;
  for (const char *p = line; *p && *p != '\n'; p++) {
    if (*p == '\\' && p[1]) {
      p++;
      continue;
    }
    if (*p == '|') {
      if (start && n < 8) {
        cells[n] = start;
        lens[n++] = (size_t)(p - start);
      }
      start = p + 1;
    }
  }
  return n;
}

static void read_doc(check *c, const char *file) {
  char path[1024];
  snprintf(path, sizeof path, "%s/%s", WSG_DOCS_DIR, file);
  char *buf = malloc(SCRAPE_MAX);
  cr_assert_not_null(buf);
  itest_read_file(path, buf, SCRAPE_MAX);
  for (char *line = buf; line && *line;) {
    const char *cells[8];
    size_t lens[8];
    if (strncmp(line, "| `", 3) == 0 && split_row(line, cells, lens) == 4) {
      cr_assert_lt(c->n, MAX_FAMILIES);
      doc_row *r = &c->rows[c->n++];
      cell(r->name, sizeof r->name, cells[0], lens[0]);
      memmove(r->name, r->name + 1, strlen(r->name)); /* the backquotes */
      r->name[strlen(r->name) - 1] = '\0';
      cell(r->type, sizeof r->type, cells[1], lens[1]);
      cell(r->labels, sizeof r->labels, cells[2], lens[2]);
      cell(r->desc, sizeof r->desc, cells[3], lens[3]);
    }
    char *nl = strchr(line, '\n');
    line = nl ? nl + 1 : NULL;
  }
  free(buf);
}

static doc_row *find_row(check *c, const char *name) {
  for (size_t i = 0; i < c->n; i++)
    if (strcmp(c->rows[i].name, name) == 0)
      return &c->rows[i];
  return NULL;
}

/* Whether the labels cell lists label `k`, and when it lists values for it, value `v`. */
static bool label_documented(const char *cellv, const char *k, size_t klen, const char *v,
                             size_t vlen) {
  char key[80], val[200];
  snprintf(key, sizeof key, "`%.*s`", (int)klen, k);
  const char *at = strstr(cellv, key);
  if (!at)
    return false;
  at += strlen(key);
  if (strncmp(at, ": ", 2) != 0)
    return true; /* values appear at run time */
  size_t span = strcspn(at, ";");
  snprintf(val, sizeof val, "`%.*s`", (int)vlen, v);
  const char *hit = strstr(at, val);
  return hit && (size_t)(hit - at) < span;
}

/* One series line "name{labels} value": the family is `fam` (histogram suffixes removed). */
static void check_series(check *c, doc_row *r, const char *line, size_t name_len) {
  const char *p = line + name_len;
  if (*p != '{')
    return;
  p++;
  while (*p && *p != '}') {
    const char *eq = strchr(p, '=');
    if (!eq || eq[1] != '"')
      return;
    const char *v = eq + 2, *end = strchr(v, '"');
    if (!end)
      return;
    size_t klen = (size_t)(eq - p), vlen = (size_t)(end - v);
    if (klen == 2 && strncmp(p, "le", 2) == 0) {
      /* a bucket bound: "Buckets: 0.001, ..., +Inf." in the description */
      char tok[64], last[64];
      snprintf(tok, sizeof tok, " %.*s,", (int)vlen, v);
      snprintf(last, sizeof last, " %.*s.", (int)vlen, v);
      const char *b = strstr(r->desc, "Buckets:");
      if (!b || (!strstr(b, tok) && !strstr(b, last)))
        problem(c, "%s: bucket le=\"%.*s\" is not in the documented buckets (%s)", r->name,
                (int)vlen, v, b ? b : "none");
    } else if (!label_documented(r->labels, p, klen, v, vlen)) {
      problem(c, "%s: label %.*s=\"%.*s\" is not documented (labels: %s)", r->name, (int)klen, p,
              (int)vlen, v, r->labels[0] ? r->labels : "none");
    }
    p = end + 1;
    if (*p == ',')
      p++;
  }
}

/* Every family of one /metrics text against the rows; marks the rows served. */
static void check_scrape(check *c, const char *who, const char *text) {
  char name[128], help[512], type[16] = "";
  doc_row *r = NULL;
  for (const char *line = text; line && *line;) {
    const char *nl = strchr(line, '\n');
    size_t len = nl ? (size_t)(nl - line) : strlen(line);
    if (strncmp(line, "# HELP ", 7) == 0) {
      const char *sp = memchr(line + 7, ' ', len - 7);
      cr_assert_not_null(sp, "%s: %.*s", who, (int)len, line);
      snprintf(name, sizeof name, "%.*s", (int)(sp - line - 7), line + 7);
      snprintf(help, sizeof help, "%.*s", (int)(line + len - sp - 1), sp + 1);
      r = find_row(c, name);
      if (!r) {
        problem(c,
                "%s serves %s (\"%s\"), which no metric table declares: add its row to its "
                "module's table (gateway/gw_metrics.h, processor/proc_metrics.h list them) and "
                "regenerate docs/METRICS-*.md with --help-metrics",
                who, name, help);
      } else {
        r->served = true;
        /* the description is the help, then ". Buckets: ..." for a histogram */
        size_t hl = strlen(help);
        const char *rest = r->desc + hl;
        if (strncmp(r->desc, help, hl) != 0 ||
            (*rest && strncmp(rest, " Buckets:", 9) != 0 && strncmp(rest, ". Buckets:", 10) != 0))
          problem(c, "%s: help \"%s\" on %s, \"%s\" in the docs", name, help, who, r->desc);
      }
    } else if (strncmp(line, "# TYPE ", 7) == 0) {
      snprintf(type, sizeof type, "%.*s", (int)(len - 8 - strlen(name)), line + 8 + strlen(name));
      if (r && strcmp(r->type, type) != 0)
        problem(c, "%s: a %s on %s, a %s in the docs", name, type, who, r->type);
    } else if (r && line[0] != '#') {
      size_t nlen = strcspn(line, "{ ");
      check_series(c, r, line, nlen);
    }
    line = nl ? nl + 1 : NULL;
  }
}

/* Whether `text` has a series of family `name` with label k="v". */
static bool value_served(const char *text, const char *name, const char *k, size_t klen,
                         const char *v, size_t vlen) {
  char start[160], pair[256];
  snprintf(start, sizeof start, "%s{", name);
  snprintf(pair, sizeof pair, "%.*s=\"%.*s\"", (int)klen, k, (int)vlen, v);
  for (const char *line = text; line && *line;) {
    const char *nl = strchr(line, '\n');
    size_t len = nl ? (size_t)(nl - line) : strlen(line);
    if (strncmp(line, start, strlen(start)) == 0) {
      const char *hit = strstr(line, pair);
      if (hit && hit < line + len && (hit[-1] == '{' || hit[-1] == ','))
        return true;
    }
    line = nl ? nl + 1 : NULL;
  }
  return false;
}

/* Every fixed label value a row documents ("`k`: `v1`, `v2`; `k2`: ...") is served. */
static void check_values_served(check *c, const doc_row *r, const char *who, const char *text) {
  const char *p = r->labels;
  while ((p = strchr(p, '`')) != NULL) {
    const char *k = p + 1, *kend = strchr(k, '`');
    if (!kend)
      return;
    p = kend + 1;
    if (strncmp(p, ": ", 2) != 0)
      continue; /* a label without fixed values */
    p += 2;
    while (*p == '`') {
      const char *v = p + 1, *vend = strchr(v, '`');
      if (!vend)
        return;
      if (!value_served(text, r->name, k, (size_t)(kend - k), v, (size_t)(vend - v)))
        problem(c, "%s: the docs list %.*s=\"%.*s\", which %s does not serve", r->name,
                (int)(kend - k), k, (int)(vend - v), v, who);
      p = vend + 1;
      if (strncmp(p, ", `", 3) == 0)
        p += 2;
    }
  }
}

static char *scrape(int port) {
  char *buf = malloc(SCRAPE_MAX);
  cr_assert_not_null(buf);
  int st = itest_http_get(port, "/metrics", buf, SCRAPE_MAX);
  cr_assert_eq(st, 200, "GET /metrics: %d", st);
  cr_assert_lt(strlen(buf), (size_t)SCRAPE_MAX - 1, "/metrics truncated");
  return buf;
}

static bool lag_registered(void *arg) {
  return itest_metric(*(int *)arg, "wsgate_processor_consumer_lag{partition=\"0\"}") >= 0 &&
         itest_metric(*(int *)arg, "wsgate_processor_commands_lag{partition=\"0\"}") >= 0;
}

Test(metrics_docs, every_served_family_is_documented_and_every_documented_one_served,
     .fini = itest_fini) {
  itest_require_servers();
  itest_cluster c;
  itest_cluster_init(&c, 1, 1, false);
  itest_cluster_add_commands(&c, 1); /* for the commands topic's lag series */
  /* Optional modules with metrics of their own are on: the direct reply path. */
  char secret[128];
  snprintf(secret, sizeof secret, "/tmp/wsgate-metrics-docs-direct-%d", (int)getpid());
  FILE *sf = fopen(secret, "w");
  cr_assert_not_null(sf);
  fputs("metrics-docs-direct-secret-0123456789\n", sf);
  fclose(sf);
  const char *pextra[] = {"--direct-secret-file", secret, NULL};
  const char *gextra[] = {"--direct-listen", "127.0.0.1:0", "--direct-secret-file", secret, NULL};
  itest_daemon_opts po = {.extra = pextra}, go = {.extra = gextra};
  itest_processor p;
  itest_processor_start(&p, &c, "metrics-docs", "echo", &po);
  itest_gateway g;
  itest_gateway_start(&g, &c, "metrics-docs", &go);
  /* The lag gauges' series appear with the partitions' assignment. */
  cr_assert(itest_wait_until(lag_registered, &p.http_port, ITEST_TIMEOUT_MS),
            "no consumer lag series");

  static check gw, proc;
  memset(&gw, 0, sizeof gw);
  memset(&proc, 0, sizeof proc);
  read_doc(&gw, "METRICS-gateway.md");
  read_doc(&proc, "METRICS-processor.md");
  cr_assert_gt(gw.n, 10, "no table in docs/METRICS-gateway.md");
  cr_assert_gt(proc.n, 10, "no table in docs/METRICS-processor.md");

  check *both[] = {&gw, &proc};
  const char *who[] = {"wsgate-gateway", "wsgate-processor"};
  const char *docs[] = {"docs/METRICS-gateway.md", "docs/METRICS-processor.md"};
  int ports[] = {g.http_port, p.http_port};
  for (size_t d = 0; d < 2; d++) {
    char *text = scrape(ports[d]);
    check_scrape(both[d], who[d], text);
    for (size_t i = 0; i < both[d]->n; i++) {
      doc_row *r = &both[d]->rows[i];
      if (!r->served)
        problem(both[d], "%s documents %s, which %s does not serve", docs[d], r->name, who[d]);
      else
        check_values_served(both[d], r, who[d], text);
    }
    free(text);
  }
  cr_assert(!gw.problems[0] && !proc.problems[0],
            "/metrics and docs/METRICS-*.md disagree (a series registered outside the metric "
            "tables, or a table row unlike its registration):\nwsgate-gateway:\n%s"
            "wsgate-processor:\n%s",
            gw.problems, proc.problems);
  itest_gateway_cleanup(&g);
  itest_processor_cleanup(&p);
}
