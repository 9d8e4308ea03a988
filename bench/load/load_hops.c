/*
 * load_hops: the per-hop breakdown of a run from the daemons' /metrics (see load_hops.h).
 *
 * Threads: the parent process only.
 */
#include "load_hops.h"

#include <arpa/inet.h>
#include <errno.h>
#include <math.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MAX_ENDPOINTS 16
#define SCRAPE_MAX    (8u << 20) /* a /metrics page larger than this is not ours */
#define SCRAPE_MS     5000

static const struct {
  const char *metric, *label;
} hops[LOAD_HOP__COUNT] = {
    [LOAD_HOP_GW_ACKED] = {"wsgate_gateway_hop_inbound_acked_seconds",
                           "1 gateway   produce -> Kafka ack"},
    [LOAD_HOP_PROC_HANDLER] = {"wsgate_processor_hop_handler_start_seconds",
                               "2 processor frame read -> handler"},
    [LOAD_HOP_PROC_COMMAND] = {"wsgate_processor_hop_command_start_seconds",
                               "2 processor command 202 -> executor"},
    [LOAD_HOP_PROC_ACKED] = {"wsgate_processor_hop_outbound_acked_seconds",
                             "3 processor handler -> reply acked"},
    [LOAD_HOP_GW_HANDOFF] = {"wsgate_gateway_outbound_latency_seconds",
                             "  gateway   reply built -> hand-off"},
    [LOAD_HOP_GW_WRITTEN] = {"wsgate_gateway_hop_outbound_written_seconds",
                             "4 gateway   reply built -> written"},
};

const char *load_hop_metric(load_hop hop) {
  return hop < LOAD_HOP__COUNT ? hops[hop].metric : NULL;
}

const char *load_hop_label(load_hop hop) {
  return hop < LOAD_HOP__COUNT ? hops[hop].label : NULL;
}

/* ------------------------------------------------------------------------------------------ */
/* parsing and arithmetic (pure)                                                              */

/* The hop whose family `name` (up to its suffix) is, or -1. */
static int hop_of(const char *name, size_t len) {
  for (int i = 0; i < LOAD_HOP__COUNT; i++)
    if (strlen(hops[i].metric) == len && memcmp(hops[i].metric, name, len) == 0)
      return i;
  return -1;
}

/* One sample line of a histogram: its family, which part, le when a bucket, the value. */
typedef enum { PART_BUCKET, PART_SUM, PART_COUNT } part;

static int parse_line(const char *line, size_t len, int *hop, part *pt, double *le, double *v) {
  static const struct {
    const char *suffix;
    part pt;
  } parts[] = {{"_bucket", PART_BUCKET}, {"_sum", PART_SUM}, {"_count", PART_COUNT}};
  if (len == 0 || line[0] == '#')
    return -1;
  size_t name_end = strcspn(line, "{ ");
  if (name_end >= len)
    return -1;
  for (size_t i = 0; i < sizeof parts / sizeof parts[0]; i++) {
    size_t sl = strlen(parts[i].suffix);
    if (name_end <= sl || memcmp(line + name_end - sl, parts[i].suffix, sl) != 0)
      continue;
    *hop = hop_of(line, name_end - sl);
    if (*hop < 0)
      return -1;
    *pt = parts[i].pt;
    const char *p = line + name_end;
    if (*pt == PART_BUCKET) {
      const char *l = strstr(p, "le=\"");
      if (!l || l >= line + len)
        return -1;
      l += 4;
      *le = strncmp(l, "+Inf", 4) == 0 ? INFINITY : strtod(l, NULL);
    }
    const char *sp = memchr(p, ' ', len - name_end);
    if (!sp)
      return -1;
    char *end;
    *v = strtod(sp + 1, &end);
    return end == sp + 1 ? -1 : 0;
  }
  return -1;
}

/* The index of bound le in h, appending it on an endpoint's first pass; -1 when it disagrees. */
static int bucket_of(load_hops_hist *h, double le, size_t *next) {
  if (isinf(le))
    return (int)LOAD_HOPS_MAX_BUCKETS; /* mapped to cum[nb] by the caller */
  size_t i = (*next)++;
  if (h->seen == 0) {
    if (i >= LOAD_HOPS_MAX_BUCKETS || i != h->nb)
      return -1;
    h->le[h->nb++] = le;
    return (int)i;
  }
  return i < h->nb && h->le[i] == le ? (int)i : -1;
}

int load_hops_parse(const char *text, load_hops_snap *snap) {
  size_t next[LOAD_HOP__COUNT] = {0};
  bool touched[LOAD_HOP__COUNT] = {false};
  int rc = 0;
  for (const char *p = text; *p;) {
    size_t len = strcspn(p, "\n");
    int hop;
    part pt;
    double le = 0, v = 0;
    if (parse_line(p, len, &hop, &pt, &le, &v) == 0) {
      load_hops_hist *h = &snap->h[hop];
      touched[hop] = true;
      if (pt == PART_SUM) {
        h->sum += v;
      } else if (pt == PART_COUNT) {
        h->count += v;
      } else {
        int b = bucket_of(h, le, &next[hop]);
        if (b < 0)
          rc = -1;
        else
          h->cum[b == LOAD_HOPS_MAX_BUCKETS ? h->nb : (size_t)b] += v;
      }
    }
    p += len;
    if (*p == '\n')
      p++;
  }
  for (int i = 0; i < LOAD_HOP__COUNT; i++)
    if (touched[i])
      snap->h[i].seen++;
  return rc;
}

void load_hops_diff(const load_hops_snap *after, const load_hops_snap *before,
                    load_hops_snap *out) {
  *out = *after;
  for (int i = 0; i < LOAD_HOP__COUNT; i++) {
    const load_hops_hist *b = &before->h[i];
    load_hops_hist *o = &out->h[i];
    if (!b->seen || b->nb != o->nb)
      continue;
    for (size_t k = 0; k <= o->nb; k++)
      o->cum[k] -= b->cum[k];
    o->sum -= b->sum;
    o->count -= b->count;
  }
}

double load_hops_quantile(const load_hops_hist *h, double q) {
  double total = h->cum[h->nb];
  if (total <= 0 || h->nb == 0)
    return NAN;
  double rank = q * total;
  for (size_t i = 0; i < h->nb; i++) {
    if (h->cum[i] >= rank) {
      double lo = i ? h->le[i - 1] : 0, below = i ? h->cum[i - 1] : 0;
      double in = h->cum[i] - below;
      return in > 0 ? lo + (h->le[i] - lo) * (rank - below) / in : h->le[i];
    }
  }
  return h->le[h->nb - 1];
}

/* ------------------------------------------------------------------------------------------ */
/* scraping                                                                                   */

typedef struct {
  struct sockaddr_in addr;
  char path[256];
  char url[300];
} endpoint;

struct load_hops {
  endpoint ep[MAX_ENDPOINTS];
  size_t nep;
  int marks;
  load_hops_snap before, after, diff;
};

/* "http://127.a.b.c:port[/path]" or "http://localhost:port[/path]". */
static int parse_url(const char *url, size_t len, endpoint *e, char *err, size_t errlen) {
  snprintf(e->url, sizeof e->url, "%.*s", (int)len, url);
  if (len < 8 || strncmp(url, "http://", 7) != 0) {
    snprintf(err, errlen, "--hops-from %s: only http:// URLs", e->url);
    return -1;
  }
  const char *host = e->url + 7, *colon = strchr(host, ':');
  if (!colon) {
    snprintf(err, errlen, "--hops-from %s: give the port (http://127.0.0.1:9090)", e->url);
    return -1;
  }
  char h[64];
  snprintf(h, sizeof h, "%.*s", (int)(colon - host), host);
  if (strcmp(h, "localhost") == 0)
    snprintf(h, sizeof h, "127.0.0.1");
  memset(&e->addr, 0, sizeof e->addr);
  e->addr.sin_family = AF_INET;
  if (inet_pton(AF_INET, h, &e->addr.sin_addr) != 1 ||
      (ntohl(e->addr.sin_addr.s_addr) >> 24) != 127) {
    snprintf(err, errlen, "--hops-from %s: the host must be on 127.0.0.0/8", e->url);
    return -1;
  }
  char *end;
  long port = strtol(colon + 1, &end, 10);
  if (port <= 0 || port > 65535 || (*end && *end != '/')) {
    snprintf(err, errlen, "--hops-from %s: bad port", e->url);
    return -1;
  }
  e->addr.sin_port = htons((uint16_t)port);
  snprintf(e->path, sizeof e->path, "%s", *end ? end : "/metrics");
  return 0;
}

load_hops *load_hops_create(const char *urls, char *err, size_t errlen) {
  load_hops *h = calloc(1, sizeof *h);
  if (!h) {
    snprintf(err, errlen, "out of memory");
    return NULL;
  }
  for (const char *p = urls; *p;) {
    size_t len = strcspn(p, ",");
    if (len > 0) {
      if (h->nep == MAX_ENDPOINTS) {
        snprintf(err, errlen, "--hops-from: at most %d endpoints", MAX_ENDPOINTS);
        goto fail;
      }
      if (parse_url(p, len, &h->ep[h->nep], err, errlen) != 0)
        goto fail;
      h->nep++;
    }
    p += len;
    if (*p == ',')
      p++;
  }
  if (h->nep == 0) {
    snprintf(err, errlen, "--hops-from: no endpoint given");
    goto fail;
  }
  return h;
fail:
  free(h);
  return NULL;
}

void load_hops_destroy(load_hops *h) {
  free(h);
}

static uint64_t mono_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* One HTTP/1.0 GET with a deadline; *body is heap (free()), NUL-terminated. */
static int scrape(const endpoint *e, char **body, char *err, size_t errlen) {
  *body = NULL;
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0 || connect(fd, (const struct sockaddr *)&e->addr, sizeof e->addr) != 0) {
    snprintf(err, errlen, "%s: %s", e->url, strerror(errno));
    if (fd >= 0)
      close(fd);
    return -1;
  }
  char req[400];
  int n = snprintf(req, sizeof req, "GET %s HTTP/1.0\r\nHost: wsgate-load\r\n\r\n", e->path);
  if (send(fd, req, (size_t)n, MSG_NOSIGNAL) != n) {
    snprintf(err, errlen, "%s: cannot send the request", e->url);
    close(fd);
    return -1;
  }
  size_t cap = 65536, len = 0;
  char *buf = malloc(cap);
  uint64_t deadline = mono_ms() + SCRAPE_MS;
  int rc = -1;
  while (buf) {
    uint64_t now = mono_ms();
    struct pollfd pfd = {.fd = fd, .events = POLLIN};
    if (now >= deadline || poll(&pfd, 1, (int)(deadline - now)) <= 0) {
      snprintf(err, errlen, "%s: no complete answer within %d ms", e->url, SCRAPE_MS);
      break;
    }
    if (len + 1 == cap) {
      char *nb = cap < SCRAPE_MAX ? realloc(buf, cap * 2) : NULL;
      if (!nb) {
        snprintf(err, errlen, "%s: answer larger than %u bytes", e->url, SCRAPE_MAX);
        break;
      }
      buf = nb;
      cap *= 2;
    }
    ssize_t got = recv(fd, buf + len, cap - len - 1, 0);
    if (got < 0 && errno == EINTR)
      continue;
    if (got < 0) {
      snprintf(err, errlen, "%s: %s", e->url, strerror(errno));
      break;
    }
    if (got == 0) {
      buf[len] = '\0';
      rc = strncmp(buf, "HTTP/1.", 7) == 0 && strstr(buf, " 200 ") ? 0 : -1;
      if (rc != 0)
        snprintf(err, errlen, "%s: not a 200 answer", e->url);
      break;
    }
    len += (size_t)got;
  }
  close(fd);
  if (rc != 0) {
    free(buf);
    return -1;
  }
  char *start = strstr(buf, "\r\n\r\n");
  memmove(buf, start ? start + 4 : buf, strlen(start ? start + 4 : buf) + 1);
  *body = buf;
  return 0;
}

int load_hops_mark(load_hops *h, char *err, size_t errlen) {
  if (h->marks >= 2) {
    snprintf(err, errlen, "load_hops_mark: already marked twice");
    return -1;
  }
  load_hops_snap *s = h->marks == 0 ? &h->before : &h->after;
  memset(s, 0, sizeof *s);
  for (size_t i = 0; i < h->nep; i++) {
    char *body;
    if (scrape(&h->ep[i], &body, err, errlen) != 0)
      return -1;
    int rc = load_hops_parse(body, s);
    free(body);
    if (rc != 0) {
      snprintf(err, errlen, "%s: a hop histogram has other buckets than the other endpoints'",
               h->ep[i].url);
      return -1;
    }
  }
  if (++h->marks == 2)
    load_hops_diff(&h->after, &h->before, &h->diff);
  return 0;
}

static double ms_of(double s) {
  return s * 1e3;
}

json_t *load_hops_json(const load_hops *h) {
  json_t *o = json_object();
  if (!o || h->marks < 2)
    return o;
  static const double qs[] = {0.5, 0.9, 0.99};
  static const char *const qn[] = {"p50_ms", "p90_ms", "p99_ms"};
  for (int i = 0; i < LOAD_HOP__COUNT; i++) {
    const load_hops_hist *x = &h->diff.h[i];
    if (!x->seen)
      continue;
    json_t *e = json_pack("{sI sf}", "count", (json_int_t)x->count, "mean_ms",
                          x->count > 0 ? ms_of(x->sum / x->count) : 0.0);
    for (size_t k = 0; k < 3; k++) {
      double v = load_hops_quantile(x, qs[k]);
      json_object_set_new(e, qn[k], isnan(v) ? json_null() : json_real(ms_of(v)));
    }
    json_object_set_new(o, hops[i].metric, e);
  }
  return o;
}

void load_hops_print(const load_hops *h, FILE *out) {
  if (h->marks < 2)
    return;
  fprintf(out, "  per hop, from the daemons' histograms over the measured window (ms):\n");
  for (int i = 0; i < LOAD_HOP__COUNT; i++) {
    const load_hops_hist *x = &h->diff.h[i];
    if (!x->seen) {
      fprintf(out, "    %-36s not exposed by any endpoint\n", hops[i].label);
      continue;
    }
    fprintf(out, "    %-36s n=%-9.0f mean %7.3f  p50 %7.3f  p90 %7.3f  p99 %7.3f\n", hops[i].label,
            x->count, x->count > 0 ? ms_of(x->sum / x->count) : 0.0,
            ms_of(load_hops_quantile(x, 0.5)), ms_of(load_hops_quantile(x, 0.9)),
            ms_of(load_hops_quantile(x, 0.99)));
  }
}
