/*
 * load_api: the HTTP sender of --mode api (see load_api.h).
 *
 * Threads: one.
 */
#include "load_api.h"

#include <curl/curl.h>
#include <errno.h>
#include <jansson.h>
#include <poll.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "load_hist.h"
#include "load_ws.h"

#define NS             1000000000ull
#define MAX_STATUS     600
#define REQ_TIMEOUT_MS 10000L

typedef struct {
  CURL *h;
  uint64_t started_ns, due_ns, g; /* sends g .. g+n-1, all due at due_ns */
  unsigned n;
  bool busy;
} client;

typedef struct {
  const load_plan *p;
  int ctl;
  CURLM *multi;
  client *cl;
  unsigned ncl;
  struct curl_slist *headers;
  char *body; /* one request's body, rebuilt per request (libcurl copies it) */
  size_t body_cap;
  char *pad; /* --size bytes of padding after the marker */
  uint64_t t0, t_measure, t_end, g_next;
  double interval_ns;
  /* accepted_measured: 202s of sends due in the measured window (what receivers count);
   * accepted_window: 202s answered in it (the throughput, whatever the schedule's lag) */
  uint64_t started, accepted, accepted_measured, accepted_window, expected_measured, failed,
      failed_measured, requests, requests_window; /* sends, except requests* */
  uint64_t expected; /* deliveries of every accepted send: the receivers drain until they hold it */
  uint64_t status[MAX_STATUS];
  uint64_t curl_errors;
  char first_error[256];
  load_hist h_request, h_lag;
} sender;

static uint64_t mono_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * NS + (uint64_t)ts.tv_nsec;
}

static size_t discard(char *ptr, size_t size, size_t n, void *arg) {
  (void)ptr;
  (void)arg;
  return size * n;
}

static int ctl_write(int fd, const char *buf, size_t len) {
  for (size_t off = 0; off < len;) {
    ssize_t r = send(fd, buf + off, len - off, MSG_NOSIGNAL);
    if (r < 0 && errno == EINTR)
      continue;
    if (r <= 0)
      return -1;
    off += (size_t)r;
  }
  return 0;
}

/* Waits for the parent's "G <t0>" (or "X"); 0 with *t0 set, -1 when the parent is gone. */
static int wait_go(int ctl, uint64_t give_up_ns, uint64_t *t0) {
  char buf[128];
  size_t len = 0;
  while (mono_ns() < give_up_ns) {
    struct pollfd pf = {.fd = ctl, .events = POLLIN};
    int n = poll(&pf, 1, 1000);
    if (n < 0 && errno != EINTR)
      return -1;
    if (n <= 0)
      continue;
    ssize_t r = recv(ctl, buf + len, sizeof buf - 1 - len, 0);
    if (r <= 0)
      return -1;
    len += (size_t)r;
    buf[len] = '\0';
    unsigned long long t;
    if (memchr(buf, '\n', len)) {
      if (sscanf(buf, "G %llu", &t) == 1) {
        *t0 = (uint64_t)t;
        return 0;
      }
      return -1; /* "X" or anything else: the run is off */
    }
    if (len == sizeof buf - 1)
      return -1;
  }
  return -1;
}

/* Connections of user number u among the receivers (connection i is user i mod users). */
static uint64_t conns_of_user(const load_plan *p, uint64_t u) {
  return p->conns / p->users + (u < p->conns % p->users ? 1 : 0);
}

/* User number of the k-th recipient of send g: sends take --api-users consecutive users each. */
static uint64_t recipient(const load_plan *p, uint64_t g, unsigned k) {
  return (g * p->api_users + k) % p->users;
}

/* Writes `"user":"<id>"` (or `"users":[...]` for --api-users above 1) at s->body + at; returns
 * its length (body_cap has room for every id of every send of a request). */
static size_t users_json(sender *s, size_t at, uint64_t g) {
  const load_plan *p = s->p;
  if (p->api_users == 1)
    return (size_t)snprintf(s->body + at, s->body_cap - at, "\"user\":\"%s%llu\"", p->user_prefix,
                            (unsigned long long)(p->user_offset + recipient(p, g, 0)));
  size_t n = (size_t)snprintf(s->body + at, s->body_cap - at, "\"users\":[");
  for (unsigned k = 0; k < p->api_users; k++)
    n +=
        (size_t)snprintf(s->body + at + n, s->body_cap - at - n, "%s\"%s%llu\"", k ? "," : "",
                         p->user_prefix, (unsigned long long)(p->user_offset + recipient(p, g, k)));
  return n + (size_t)snprintf(s->body + at + n, s->body_cap - at - n, "]");
}

/* Starts sends g .. g+p->api_batch-1 (one request, due at `due`) on free client c. */
static void start(sender *s, client *c, uint64_t g, uint64_t due, uint64_t now) {
  const load_plan *p = s->p;
  char marker[LOAD_MARKER_MAX];
  size_t ml = load_marker_write(marker, sizeof marker, due);
  size_t pad = p->size > ml ? p->size - ml : 0;
  bool batch = p->api_batch > 1;
  size_t n = batch ? (size_t)snprintf(s->body, s->body_cap, "{\"commands\":[") : 0;
  for (unsigned i = 0; i < p->api_batch; i++) {
    n += (size_t)snprintf(s->body + n, s->body_cap - n, "%s{%s", i ? "," : "",
                          batch ? "\"command\":\"send\"," : "");
    n += users_json(s, n, g + i);
    n += (size_t)snprintf(s->body + n, s->body_cap - n, ",\"data\":\"%.*s%.*s\"}", (int)ml, marker,
                          (int)pad, s->pad);
  }
  if (batch)
    n += (size_t)snprintf(s->body + n, s->body_cap - n, "]}");
  curl_easy_setopt(c->h, CURLOPT_POSTFIELDSIZE, (long)n);
  curl_easy_setopt(c->h, CURLOPT_COPYPOSTFIELDS, s->body);
  curl_easy_setopt(c->h, CURLOPT_PRIVATE, (void *)c);
  c->started_ns = now;
  c->due_ns = due;
  c->g = g;
  c->n = p->api_batch;
  c->busy = true;
  s->started += c->n;
  if (due >= s->t_measure)
    load_hist_record(&s->h_lag, now - due);
  curl_multi_add_handle(s->multi, c->h);
}

/* Reads the finished requests: counts their answers, frees their clients. */
static void finished(sender *s, uint64_t now) {
  CURLMsg *m;
  int left;
  while ((m = curl_multi_info_read(s->multi, &left))) {
    if (m->msg != CURLMSG_DONE)
      continue;
    client *c = NULL;
    curl_easy_getinfo(m->easy_handle, CURLINFO_PRIVATE, (char **)&c);
    long code = 0;
    curl_easy_getinfo(m->easy_handle, CURLINFO_RESPONSE_CODE, &code);
    bool measured = c->due_ns >= s->t_measure && c->due_ns < s->t_end;
    if (m->data.result != CURLE_OK) {
      s->curl_errors++;
      if (!s->first_error[0])
        snprintf(s->first_error, sizeof s->first_error, "%s", curl_easy_strerror(m->data.result));
    } else if (code >= 0 && code < MAX_STATUS) {
      s->status[code]++;
    }
    if (m->data.result == CURLE_OK && code == 202) {
      s->accepted += c->n;
      s->requests++;
      /* Answered inside the window: counted, and its request time recorded, whatever the
       * send's due time (a schedule that fell behind has due times long past). */
      if (now >= s->t_measure && now < s->t_end) {
        s->accepted_window += c->n;
        s->requests_window++;
        load_hist_record(&s->h_request, now - c->started_ns);
      }
      uint64_t deliveries = 0;
      for (unsigned i = 0; i < c->n; i++)
        for (unsigned k = 0; k < s->p->api_users; k++)
          deliveries += conns_of_user(s->p, recipient(s->p, c->g + i, k));
      s->expected += deliveries;
      if (measured) {
        s->accepted_measured += c->n;
        s->expected_measured += deliveries;
      }
    } else {
      s->failed += c->n;
      s->failed_measured += measured ? c->n : 0;
    }
    curl_multi_remove_handle(s->multi, c->h);
    c->busy = false;
  }
}

static int setup(sender *s) {
  const load_plan *p = s->p;
  char url[600], auth[600];
  snprintf(url, sizeof url, "%s/v1/%s", p->api_url, p->api_batch > 1 ? "batch" : "send");
  snprintf(auth, sizeof auth, "Authorization: Bearer %s", p->api_key ? p->api_key : "");
  struct curl_slist *h = curl_slist_append(NULL, auth);
  h = h ? curl_slist_append(h, "Content-Type: application/json") : NULL;
  h = h ? curl_slist_append(h, "Expect:") : NULL; /* no 100-continue round trip */
  s->headers = h;
  s->ncl = p->api_clients;
  s->cl = calloc(s->ncl, sizeof *s->cl);
  /* Per send: the JSON around the payload, the user ids (a prefix, 20 digits, quotes and a comma
   * each) and the padding (--user-prefix has no bound); then the batch's braces. */
  s->body_cap = (p->size + LOAD_MARKER_MAX + (strlen(p->user_prefix) + 24) * p->api_users + 128) *
                    p->api_batch +
                32;
  s->body = malloc(s->body_cap);
  s->pad = malloc(p->size + 1);
  s->multi = curl_multi_init();
  if (!h || !s->cl || !s->body || !s->pad || !s->multi)
    return -1;
  memset(s->pad, 'x', p->size);
  curl_multi_setopt(s->multi, CURLMOPT_MAX_HOST_CONNECTIONS, (long)s->ncl);
  curl_multi_setopt(s->multi, CURLMOPT_MAXCONNECTS, (long)s->ncl);
  for (unsigned i = 0; i < s->ncl; i++) {
    CURL *e = s->cl[i].h = curl_easy_init();
    if (!e)
      return -1;
    curl_easy_setopt(e, CURLOPT_URL, url);
    curl_easy_setopt(e, CURLOPT_HTTPHEADER, s->headers);
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, discard);
    curl_easy_setopt(e, CURLOPT_TCP_NODELAY, 1L);
    curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, REQ_TIMEOUT_MS);
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
  }
  return 0;
}

static void teardown(sender *s) {
  for (unsigned i = 0; s->cl && i < s->ncl; i++) {
    if (s->cl[i].busy)
      curl_multi_remove_handle(s->multi, s->cl[i].h);
    curl_easy_cleanup(s->cl[i].h);
  }
  if (s->multi)
    curl_multi_cleanup(s->multi);
  curl_slist_free_all(s->headers);
  free(s->cl);
  free(s->body);
  free(s->pad);
}

static double cpu_seconds(void) {
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  return (double)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) +
         (double)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
}

static int report(sender *s, double cpu_s) {
  json_t *st = json_object();
  char key[8];
  for (int c = 0; c < MAX_STATUS; c++)
    if (s->status[c]) {
      snprintf(key, sizeof key, "%d", c);
      json_object_set_new(st, key, json_integer((json_int_t)s->status[c]));
    }
  json_t *api =
      json_pack("{sI sI sI sI sI sI sI sI sI sI so ss sf}", "clients", (json_int_t)s->ncl, "batch",
                (json_int_t)s->p->api_batch, "requests", (json_int_t)s->requests, "requests_window",
                (json_int_t)s->requests_window, "started", (json_int_t)s->started, "accepted",
                (json_int_t)s->accepted, "accepted_measured", (json_int_t)s->accepted_measured,
                "accepted_window", (json_int_t)s->accepted_window, "failed", (json_int_t)s->failed,
                "curl_errors", (json_int_t)s->curl_errors, "statuses", st, "first_error",
                s->first_error, "cpu_s", cpu_s);
  json_t *o =
      json_pack("{sI sI sI sI sI sI so so so}", "sent", (json_int_t)s->started, "sent_measured",
                (json_int_t)s->accepted_measured, "dropped", (json_int_t)s->failed_measured,
                "expected_measured", (json_int_t)s->expected_measured, "expected",
                (json_int_t)s->expected, "ramp_ns", (json_int_t)0, "api", api, "h_request",
                load_hist_json(&s->h_request), "h_lag", load_hist_json(&s->h_lag));
  char *text = o ? json_dumps(o, JSON_COMPACT) : NULL;
  json_decref(o);
  if (!text)
    return -1;
  char head[32];
  int hl = snprintf(head, sizeof head, "J %zu\n", strlen(text));
  int rc = ctl_write(s->ctl, head, (size_t)hl) == 0 && ctl_write(s->ctl, text, strlen(text)) == 0
               ? 0
               : -1;
  free(text);
  return rc;
}

/* The traffic: due sends on free clients, answers read, until t_end, then the drain. */
static void run(sender *s) {
  const load_plan *p = s->p;
  uint64_t drain_end = s->t_end + p->drain_ns;
  unsigned next_free = 0;
  for (;;) {
    uint64_t now = mono_ns();
    for (;;) {
      /* A request is due when its last send is. */
      uint64_t due = s->t0 + (uint64_t)((double)(s->g_next + p->api_batch - 1) * s->interval_ns);
      /* Past t_end nothing new starts, even when the schedule is behind (a rate above what the
       * API accepts): the run lasts --duration, and what was accepted in it is the figure. */
      if (due > now || due >= s->t_end || now >= s->t_end)
        break;
      client *c = NULL;
      for (unsigned k = 0; k < s->ncl && !c; k++) {
        client *x = &s->cl[(next_free + k) % s->ncl];
        if (!x->busy) {
          c = x;
          next_free = (unsigned)((x - s->cl) + 1) % s->ncl;
        }
      }
      if (!c)
        break; /* every connection busy: the schedule waits (send lag) */
      start(s, c, s->g_next, due, now);
      s->g_next += p->api_batch;
    }
    int running = 0;
    curl_multi_perform(s->multi, &running);
    now = mono_ns();
    finished(s, now);
    uint64_t due = s->t0 + (uint64_t)((double)(s->g_next + p->api_batch - 1) * s->interval_ns);
    bool sending = due < s->t_end && now < s->t_end;
    if (!sending && (running == 0 || now >= drain_end))
      break;
    if (sending && due > now && due - now < 1000000u) {
      /* Under curl_multi_poll's 1 ms resolution: sleep to the due time instead of polling with
       * 0 ms (a spin: at 2,000 sends/s the sender took most of a core of this 2-core box, which
       * the path it measures then lacked). Answers wait at most that long to be read. */
      struct timespec ts = {.tv_sec = (time_t)(due / NS), .tv_nsec = (long)(due % NS)};
      clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL);
      continue;
    }
    /* Sleep until the next due send (ms resolution: curl_multi_poll), or an answer. */
    int wait_ms = 100;
    if (sending && due > now)
      wait_ms = (int)((due - now) / 1000000u);
    else if (sending)
      wait_ms = 0;
    curl_multi_poll(s->multi, NULL, 0, wait_ms, NULL);
  }
}

int load_api_run(const load_plan *plan, int ctl) {
  sender s;
  memset(&s, 0, sizeof s);
  s.p = plan;
  s.ctl = ctl;
  load_hist_init(&s.h_request);
  load_hist_init(&s.h_lag);
  int rc = 1;
  if (curl_global_init(CURL_GLOBAL_DEFAULT) != 0 || setup(&s) != 0) {
    fprintf(stderr, "wsgate-load api sender: cannot set up libcurl (out of memory?)\n");
    goto out;
  }
  if (ctl_write(ctl, "R 0 0\n", 6) != 0 ||
      wait_go(ctl, mono_ns() + plan->ramp_timeout_ns + 120 * NS, &s.t0) != 0)
    goto out;
  s.t_measure = s.t0 + plan->warmup_ns;
  s.t_end = s.t0 + plan->duration_ns;
  s.interval_ns = 1e9 / plan->rate;
  while (mono_ns() < s.t0)
    usleep(1000);
  double cpu0 = cpu_seconds();
  run(&s);
  if (report(&s, cpu_seconds() - cpu0) != 0)
    goto out;
  /* Wait for "X" (or the parent's end) before closing the connections. */
  char c;
  while (recv(ctl, &c, 1, 0) == 1 && c != 'X') {
  }
  rc = 0;
out:
  teardown(&s);
  curl_global_cleanup();
  close(ctl);
  return rc;
}
