/* Unit tests of wsg_metrics: exact exposition text, grouping, escaping, histograms, concurrency. */
#include <criterion/criterion.h>

#include <fcntl.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "wsg_log.h"
#include "wsg_metrics.h"

static wsg_metrics *m;

static void setup(void) {
  m = wsg_metrics_create();
  cr_assert_not_null(m);
  /* Registration errors are logged; keep them out of the TAP stream on stdout. */
  wsg_log_set_fd(open("/dev/null", O_WRONLY | O_CLOEXEC));
}

static void teardown(void) {
  wsg_metrics_destroy(m);
}

TestSuite(wsg_metrics, .init = setup, .fini = teardown);

static char *render(void) {
  char *out = NULL;
  size_t len = 0;
  cr_assert_eq(wsg_metrics_render(m, &out, &len), 0);
  cr_assert_eq(len, strlen(out));
  return out;
}

static int64_t forty_two(void *arg) {
  (*(int *)arg)++;
  return 42;
}

Test(wsg_metrics, exact_exposition_text) {
  wsg_counter *in_ok = wsg_metrics_counter(m, "wsgate_frames_total", "Frames.\nSecond \\ line",
                                           "dir=\"in\",result=\"ok\"");
  wsg_gauge *conns = wsg_metrics_gauge(m, "wsgate_connections", "Open connections.", NULL);
  double bounds[] = {0.005, 0.1, 1};
  wsg_histogram *lat =
      wsg_metrics_histogram(m, "wsgate_latency_seconds", "Latency.", "op=\"send\"", bounds, 3);
  /* Registered after the other families, rendered next to its siblings. */
  wsg_counter *in_bad =
      wsg_metrics_counter(m, "wsgate_frames_total", "ignored", "dir=\"in\",result=\"bad\"");
  int calls = 0;
  cr_assert_eq(wsg_metrics_gauge_fn(m, "wsgate_queue_depth", "Queue.", NULL, forty_two, &calls), 0);
  wsg_counter_add(in_ok, 3);
  wsg_counter_add(in_bad, 1);
  wsg_gauge_set(conns, 10);
  wsg_gauge_add(conns, -3);
  wsg_histogram_observe(lat, 0.005); /* le is inclusive */
  wsg_histogram_observe(lat, 0.05);
  wsg_histogram_observe(lat, 7.5);
  wsg_histogram_observe(lat, NAN); /* dropped */
  char *out = render();
  cr_assert_str_eq(out, "# HELP wsgate_frames_total Frames.\\nSecond \\\\ line\n"
                        "# TYPE wsgate_frames_total counter\n"
                        "wsgate_frames_total{dir=\"in\",result=\"ok\"} 3\n"
                        "wsgate_frames_total{dir=\"in\",result=\"bad\"} 1\n"
                        "# HELP wsgate_connections Open connections.\n"
                        "# TYPE wsgate_connections gauge\n"
                        "wsgate_connections 7\n"
                        "# HELP wsgate_latency_seconds Latency.\n"
                        "# TYPE wsgate_latency_seconds histogram\n"
                        "wsgate_latency_seconds_bucket{op=\"send\",le=\"0.005\"} 1\n"
                        "wsgate_latency_seconds_bucket{op=\"send\",le=\"0.1\"} 2\n"
                        "wsgate_latency_seconds_bucket{op=\"send\",le=\"1\"} 2\n"
                        "wsgate_latency_seconds_bucket{op=\"send\",le=\"+Inf\"} 3\n"
                        "wsgate_latency_seconds_sum{op=\"send\"} 7.555\n"
                        "wsgate_latency_seconds_count{op=\"send\"} 3\n"
                        "# HELP wsgate_queue_depth Queue.\n"
                        "# TYPE wsgate_queue_depth gauge\n"
                        "wsgate_queue_depth 42\n");
  cr_assert_eq(calls, 1, "gauge_fn is called at render");
  free(out);
  out = render();
  cr_assert_eq(calls, 2);
  free(out);
}

Test(wsg_metrics, empty_registry_and_histogram_without_labels) {
  char *out = render();
  cr_assert_str_eq(out, "");
  free(out);
  wsg_histogram *h = wsg_metrics_histogram(m, "h", "H.", NULL, NULL, 0);
  wsg_histogram_observe(h, -1.5);
  wsg_histogram_observe(h, INFINITY);
  out = render();
  cr_assert_str_eq(out, "# HELP h H.\n# TYPE h histogram\nh_bucket{le=\"+Inf\"} 2\nh_sum +Inf\n"
                        "h_count 2\n");
  free(out);
}

Test(wsg_metrics, same_name_and_labels_same_series) {
  wsg_counter *a = wsg_metrics_counter(m, "c_total", "C.", "x=\"1\"");
  wsg_counter *b = wsg_metrics_counter(m, "c_total", "C.", "x=\"1\"");
  wsg_counter *c = wsg_metrics_counter(m, "c_total", "C.", "x=\"2\"");
  wsg_counter *d = wsg_metrics_counter(m, "c_total", "C.", NULL);
  wsg_counter *e = wsg_metrics_counter(m, "c_total", "C.", "");
  cr_assert_not_null(a);
  cr_assert_eq(a, b);
  cr_assert_neq(a, c);
  cr_assert_eq(d, e, "NULL and \"\" are the same empty label set");
  double bounds[] = {1, 2};
  wsg_histogram *h1 = wsg_metrics_histogram(m, "h", "H.", NULL, bounds, 2);
  cr_assert_eq(wsg_metrics_histogram(m, "h", "H.", NULL, bounds, 1), h1);
  wsg_gauge *g = wsg_metrics_gauge(m, "g", "G.", "k=\"v\"");
  cr_assert_eq(wsg_metrics_gauge(m, "g", "G.", "k=\"v\""), g);
}

Test(wsg_metrics, label_values_escaped) {
  /* A raw newline and quote are escaped; an already escaped one is kept as it is. */
  wsg_counter *c = wsg_metrics_counter(m, "c_total", "C.", "a=\"x\ny\",b=\"q\\\"\\\\\\n\"");
  cr_assert_not_null(c);
  char esc[64];
  cr_assert_eq(wsg_metrics_label_escape(esc, sizeof esc, "say \"hi\"\\\n"), 14u);
  cr_assert_str_eq(esc, "say \\\"hi\\\"\\\\\\n");
  char label[96];
  snprintf(label, sizeof label, "user=\"%s\"", esc);
  cr_assert_not_null(wsg_metrics_counter(m, "c_total", "C.", label));
  char *out = render();
  cr_assert(strstr(out, "c_total{a=\"x\\ny\",b=\"q\\\"\\\\\\n\"} 0\n"), "%s", out);
  cr_assert(strstr(out, "c_total{user=\"say \\\"hi\\\"\\\\\\n\"} 0\n"), "%s", out);
  free(out);
  cr_assert_eq(wsg_metrics_label_escape(esc, 4, "abcdef"), 6u, "returns the needed length");
  cr_assert_str_eq(esc, "abc");
}

Test(wsg_metrics, rejected_registrations_return_null_and_updates_ignore_null) {
  int calls = 0;
  cr_assert_null(wsg_metrics_counter(m, "bad name", "x", NULL));
  cr_assert_null(wsg_metrics_counter(m, "9lives", "x", NULL));
  cr_assert_null(wsg_metrics_counter(m, "ok_total", "x", "noquotes=1"));
  cr_assert_null(wsg_metrics_counter(m, "ok_total", "x", "a=\"unterminated"));
  cr_assert_null(wsg_metrics_counter(m, "ok_total", "x", "a=\"1\"b=\"2\""));
  cr_assert_null(wsg_metrics_counter(m, "ok_total", "x", "le=\"1\""), "le is reserved");
  cr_assert_null(wsg_metrics_counter(m, "ok_total", "x", "a=\"\\t\""), "unknown escape");
  cr_assert_not_null(wsg_metrics_counter(m, "dual", "x", NULL));
  cr_assert_null(wsg_metrics_gauge(m, "dual", "x", "a=\"1\""), "one type per name");
  cr_assert_not_null(wsg_metrics_gauge(m, "g", "x", NULL));
  cr_assert_neq(wsg_metrics_gauge_fn(m, "g", "x", NULL, forty_two, &calls), 0,
                "a set gauge is not replaced by a computed one");
  cr_assert_eq(wsg_metrics_gauge_fn(m, "g", "x", "k=\"fn\"", forty_two, &calls), 0);
  cr_assert_null(wsg_metrics_gauge(m, "g", "x", "k=\"fn\""));
  cr_assert_neq(wsg_metrics_gauge_fn(m, "g2", "x", NULL, NULL, NULL), 0);
  double desc[] = {2, 1};
  cr_assert_null(wsg_metrics_histogram(m, "h", "x", NULL, desc, 2));
  double many[65];
  for (int i = 0; i < 65; i++)
    many[i] = i;
  cr_assert_null(wsg_metrics_histogram(m, "h", "x", NULL, many, 65));
  wsg_counter_add(NULL, 1);
  wsg_gauge_set(NULL, 1);
  wsg_gauge_add(NULL, 1);
  wsg_histogram_observe(NULL, 1);
  cr_assert_eq(wsg_counter_get(NULL), 0u);
  cr_assert_eq(wsg_gauge_get(NULL), 0);
  char *out = render();
  cr_assert_null(strstr(out, "ok_total"), "nothing half-registered: %s", out);
  free(out);
}

Test(wsg_metrics, series_cap) {
  char label[32];
  for (int i = 0; i < 10000; i++) {
    snprintf(label, sizeof label, "id=\"%d\"", i);
    cr_assert_not_null(wsg_metrics_counter(m, "c_total", "C.", label));
  }
  cr_assert_null(wsg_metrics_counter(m, "c_total", "C.", "id=\"x\""));
  cr_assert_not_null(wsg_metrics_counter(m, "c_total", "C.", "id=\"5\""), "existing still found");
}

Test(wsg_metrics, destroy_null) {
  wsg_metrics_destroy(NULL);
}

#define THREADS    8
#define INCREMENTS 100000

typedef struct {
  wsg_counter *c;
  wsg_gauge *g;
  wsg_histogram *h;
} shared;

static void *hammer(void *arg) {
  shared *s = arg;
  for (int i = 0; i < INCREMENTS; i++) {
    wsg_counter_add(s->c, 1);
    wsg_gauge_add(s->g, (i & 1) ? 1 : -1);
    wsg_histogram_observe(s->h, (i % 4) * 0.5); /* 0, 0.5, 1, 1.5: sums exactly in binary */
  }
  return NULL;
}

static void *scrape(void *arg) {
  volatile bool *stop = arg;
  while (!*stop) {
    char *out = NULL;
    if (wsg_metrics_render(m, &out, NULL) == 0)
      free(out);
  }
  return NULL;
}

Test(wsg_metrics, concurrent_updates_are_exact) {
  double bounds[] = {0.5, 1};
  shared s = {wsg_metrics_counter(m, "n_total", "N.", NULL), wsg_metrics_gauge(m, "g", "G.", NULL),
              wsg_metrics_histogram(m, "h", "H.", NULL, bounds, 2)};
  pthread_t th[THREADS], scraper;
  volatile bool stop = false;
  cr_assert_eq(pthread_create(&scraper, NULL, scrape, (void *)&stop), 0);
  for (int i = 0; i < THREADS; i++)
    cr_assert_eq(pthread_create(&th[i], NULL, hammer, &s), 0);
  for (int i = 0; i < THREADS; i++)
    pthread_join(th[i], NULL);
  stop = true;
  pthread_join(scraper, NULL);
  cr_assert_eq(wsg_counter_get(s.c), (uint64_t)THREADS * INCREMENTS);
  cr_assert_eq(wsg_gauge_get(s.g), 0);
  char *out = render();
  char want[512];
  const uint64_t n = (uint64_t)THREADS * INCREMENTS;
  snprintf(want, sizeof want,
           "h_bucket{le=\"0.5\"} %llu\nh_bucket{le=\"1\"} %llu\nh_bucket{le=\"+Inf\"} %llu\n"
           "h_sum %llu\nh_count %llu\n",
           (unsigned long long)(n / 2), (unsigned long long)(n * 3 / 4), (unsigned long long)n,
           (unsigned long long)(n / 4 * 3), (unsigned long long)n);
  cr_assert(strstr(out, want), "want:\n%s\ngot:\n%s", want, out);
  free(out);
}

/* --- metric tables ------------------------------------------------------------------------- */

typedef struct {
  int calls;
  wsg_counter *ok, *failed;
  wsg_gauge *depth;
  wsg_histogram *lat;
  wsg_counter *by_code[2];
} owner;

static int64_t owner_calls(void *arg) {
  return ++((owner *)arg)->calls;
}

static const double lat_bounds[] = {0.01, 0.1};

enum { ROW_PEER = 7 };
static const wsg_metric_def rows[] = {
    WSG_COUNTER_ROW(owner, ok, "t_results_total", "Results | outcomes.", "result=\"ok\""),
    WSG_COUNTER_ROW(owner, failed, "t_results_total", "Results | outcomes.", "result=\"failed\""),
    WSG_GAUGE_ROW(owner, depth, "t_depth", "Depth of <queue>.", NULL),
    WSG_HISTOGRAM_ROW(owner, lat, "t_latency_seconds", "Latency", NULL, lat_bounds),
    WSG_GAUGE_FN_ROW(owner_calls, "t_scrapes", "Scrapes so far.", NULL),
    WSG_COUNTER_ROW(owner, by_code[0], "t_codes_total", "By code.", "dir=\"in\",code=\"1000\""),
    WSG_COUNTER_ROW(owner, by_code[1], "t_codes_total", "By code.", "dir=\"out\",code=\"1001\""),
    [ROW_PEER] = WSG_RUNTIME_ROW(WSG_METRIC_GAUGE, "t_peer_up", "Per peer.", "peer,zone"),
};
static const wsg_metric_table table = WSG_METRIC_TABLE("test.c", rows);

Test(wsg_metrics, table_registers_every_row_into_its_field) {
  owner o = {0};
  cr_assert_eq(wsg_metrics_register_table(m, &table, &o), 0);
  cr_assert(o.ok && o.failed && o.depth && o.lat && o.by_code[0] && o.by_code[1]);
  cr_assert_eq(o.ok, wsg_metrics_counter(m, "t_results_total", "x", "result=\"ok\""),
               "the same series a hand registration finds");
  wsg_counter_add(o.failed, 2);
  wsg_gauge_set(o.depth, 5);
  wsg_histogram_observe(o.lat, 0.05);
  wsg_counter_add(o.by_code[1], 1);
  cr_assert_null(wsg_metrics_counter_def(m, &rows[ROW_PEER], "peer=\"a\",zone=\"z\""),
                 "the runtime row is a gauge");
  wsg_gauge_set(wsg_metrics_gauge_def(m, &rows[ROW_PEER], "peer=\"a\",zone=\"z\""), 1);
  char *out = render();
  cr_assert_str_eq(out, "# HELP t_results_total Results | outcomes.\n"
                        "# TYPE t_results_total counter\n"
                        "t_results_total{result=\"ok\"} 0\n"
                        "t_results_total{result=\"failed\"} 2\n"
                        "# HELP t_depth Depth of <queue>.\n"
                        "# TYPE t_depth gauge\n"
                        "t_depth 5\n"
                        "# HELP t_latency_seconds Latency\n"
                        "# TYPE t_latency_seconds histogram\n"
                        "t_latency_seconds_bucket{le=\"0.01\"} 0\n"
                        "t_latency_seconds_bucket{le=\"0.1\"} 1\n"
                        "t_latency_seconds_bucket{le=\"+Inf\"} 1\n"
                        "t_latency_seconds_sum 0.05\n"
                        "t_latency_seconds_count 1\n"
                        "# HELP t_scrapes Scrapes so far.\n"
                        "# TYPE t_scrapes gauge\n"
                        "t_scrapes 1\n"
                        "# HELP t_codes_total By code.\n"
                        "# TYPE t_codes_total counter\n"
                        "t_codes_total{dir=\"in\",code=\"1000\"} 0\n"
                        "t_codes_total{dir=\"out\",code=\"1001\"} 1\n"
                        "# HELP t_peer_up Per peer.\n"
                        "# TYPE t_peer_up gauge\n"
                        "t_peer_up{peer=\"a\",zone=\"z\"} 1\n");
  free(out);
  cr_assert_eq(o.calls, 1, "the computed gauge gets the owner");
}

Test(wsg_metrics, table_failures_and_null_registry) {
  owner o = {0};
  cr_assert_eq(wsg_metrics_register_table(NULL, &table, &o), 0, "no registry: nothing to do");
  cr_assert_null(o.ok);
  cr_assert_null(wsg_metrics_gauge_def(NULL, &rows[ROW_PEER], "peer=\"a\""));
  static const wsg_metric_def bad_rows[] = {
      /* a counter row without a field to store its series in (a bug) */
      {.type = WSG_METRIC_COUNTER,
       .name = "t_hand_total",
       .help = "No field.",
       .field = WSG_METRIC_UNBOUND},
      WSG_COUNTER_ROW(owner, ok, "t_ok_total", "Still registered.", NULL),
      WSG_GAUGE_ROW(owner, depth, "t_ok_total", "A counter already.", NULL),
  };
  static const wsg_metric_table bad = WSG_METRIC_TABLE("bad.c", bad_rows);
  cr_assert_eq(wsg_metrics_register_table(m, &bad, &o), -1);
  cr_assert_not_null(o.ok, "every row is tried");
  cr_assert_null(o.depth, "a failed row leaves NULL");
  char *out = render();
  cr_assert_null(strstr(out, "t_hand_total"), "%s", out);
  free(out);
}

static char *markdown(const wsg_metric_table *const *tables, int *rc, char *err, size_t errlen) {
  char *buf = NULL;
  size_t len = 0;
  FILE *f = open_memstream(&buf, &len);
  cr_assert_not_null(f);
  *rc = wsg_metrics_print_markdown(f, "wsgate-test", tables, err, errlen);
  fclose(f);
  return buf;
}

Test(wsg_metrics, markdown_one_row_per_family) {
  static const wsg_metric_def more_rows[] = {
      /* a second module adding a label value to a family of the first */
      WSG_COUNTER_ROW(owner, ok, "t_results_total", "Results | outcomes.", "result=\"lost\""),
      WSG_COUNTER_ROW(owner, failed, "t_other_total", "Other.", NULL),
  };
  static const wsg_metric_table more = WSG_METRIC_TABLE("more.c", more_rows);
  const wsg_metric_table *const tables[] = {&table, &more, NULL};
  char err[256] = "";
  int rc;
  char *md = markdown(tables, &rc, err, sizeof err);
  cr_assert_eq(rc, 0, "%s", err);
  cr_assert_str_eq(
      md,
      "# wsgate-test metrics\n\n"
      "<!-- Generated by `wsgate-test --help-metrics`; edit the metric tables in the source, not "
      "this file. -->\n\n"
      "Every series `GET /metrics` serves on the operations port (`--http-port`), in the "
      "Prometheus text format. A label listed with values has one series per value; a label "
      "listed alone takes its values at run time.\n\n"
      "| Metric | Type | Labels | Description |\n"
      "|---|---|---|---|\n"
      "| `t_results_total` | counter | `result`: `ok`, `failed`, `lost` | Results \\| outcomes. |\n"
      "| `t_depth` | gauge |  | Depth of \\<queue>. |\n"
      "| `t_latency_seconds` | histogram |  | Latency. Buckets: 0.01, 0.1, +Inf. |\n"
      "| `t_scrapes` | gauge |  | Scrapes so far. |\n"
      "| `t_codes_total` | counter | `dir`: `in`, `out`; `code`: `1000`, `1001` | By code. |\n"
      "| `t_peer_up` | gauge | `peer`, `zone` | Per peer. |\n"
      "| `t_other_total` | counter |  | Other. |\n");
  free(md);
}

Test(wsg_metrics, markdown_refuses_inconsistent_rows) {
  static const wsg_metric_def type_rows[] = {
      WSG_GAUGE_ROW(owner, depth, "t_results_total", "Results | outcomes.", "result=\"x\""),
  };
  static const wsg_metric_def help_rows[] = {
      WSG_COUNTER_ROW(owner, ok, "t_results_total", "Other words.", "result=\"x\""),
  };
  static const wsg_metric_def twice_rows[] = {
      WSG_COUNTER_ROW(owner, ok, "t_results_total", "Results | outcomes.", "result=\"ok\""),
  };
  static const wsg_metric_table type_t = WSG_METRIC_TABLE("type.c", type_rows);
  static const wsg_metric_table help_t = WSG_METRIC_TABLE("help.c", help_rows);
  static const wsg_metric_table twice_t = WSG_METRIC_TABLE("twice.c", twice_rows);
  const wsg_metric_table *bad[] = {&type_t, &help_t, &twice_t};
  for (size_t i = 0; i < 3; i++) {
    const wsg_metric_table *const tables[] = {&table, bad[i], NULL};
    char err[256] = "";
    int rc;
    free(markdown(tables, &rc, err, sizeof err));
    cr_assert_eq(rc, -1, "%s", bad[i]->module);
    cr_assert(strstr(err, bad[i]->module) && strstr(err, "t_results_total"), "%s", err);
  }
}

Test(wsg_metrics, help_metrics_flag) {
  char *with[] = {"prog", "--kafka-brokers", "x", "--help-metrics", NULL};
  char *after_dashes[] = {"prog", "--", "--help-metrics", NULL};
  char *without[] = {"prog", "--help", NULL};
  cr_assert(wsg_metrics_help_requested(4, with));
  cr_assert_not(wsg_metrics_help_requested(3, after_dashes));
  cr_assert_not(wsg_metrics_help_requested(2, without));
}
