/*
 * gw_jwks_fetch: the JWKS URL's thread (gw_jwks_fetch.h). One curl easy handle per fetch: a fetch
 * is at most every few seconds, so connection reuse is not worth the state it keeps.
 */
#include "gw_jwks_fetch.h"

#include <curl/curl.h>
#include <ev.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "wsg_log.h"
#include "wsg_time.h"

/* A fetch's whole time and its connect phase: a provider slower than this is down for us. */
#define FETCH_TIMEOUT_MS   10000L
#define CONNECT_TIMEOUT_MS 5000L
#define MAX_REDIRECTS      3L

struct gw_jwks_fetch {
  gw_jwks_fetch_options o;
  char *url, *ca_file; /* owned copies */
  pthread_t th;
  bool started;
  pthread_mutex_t mu;
  pthread_cond_t cv;
  /* under mu */
  bool stop, wanted;
  atomic_bool abort_fetch; /* destroy: a fetch in progress gives up at once */
  gw_keyset *ready;        /* a good set not yet taken by the loop thread: one reference */
  /* fetch thread only */
  uint64_t last_attempt_ms;
  bool last_ok;
  ev_async async_w;
};

typedef struct {
  char *buf;
  size_t len;
  bool too_big;
} body;

static size_t write_cb(char *data, size_t size, size_t n, void *arg) {
  body *b = arg;
  size_t add = size * n;
  if (b->len + add > GW_KEYSET_MAX_FILE) {
    b->too_big = true;
    return 0; /* curl stops with CURLE_WRITE_ERROR */
  }
  char *nb = realloc(b->buf, b->len + add + 1);
  if (!nb)
    return 0;
  memcpy(nb + b->len, data, add);
  b->buf = nb;
  b->len += add;
  b->buf[b->len] = '\0';
  return add;
}

/* curl's progress callback: nonzero aborts the transfer (CURLE_ABORTED_BY_CALLBACK). */
static int progress_cb(void *arg, curl_off_t dltotal, curl_off_t dlnow, curl_off_t ultotal,
                       curl_off_t ulnow) {
  (void)dltotal, (void)dlnow, (void)ultotal, (void)ulnow;
  gw_jwks_fetch *f = arg;
  return atomic_load_explicit(&f->abort_fetch, memory_order_relaxed) ? 1 : 0;
}

/* One fetch; on success *out is a new set. Returns the result; why: for the log. */
static gw_jwks_result fetch_once(gw_jwks_fetch *f, gw_keyset **out, char *why, size_t whylen) {
  *out = NULL;
  CURL *c = curl_easy_init();
  if (!c) {
    snprintf(why, whylen, "curl_easy_init failed");
    return GW_JWKS_NETWORK;
  }
  body b = {0};
  char cerr[CURL_ERROR_SIZE] = "";
  curl_easy_setopt(c, CURLOPT_URL, f->url);
  /* HTTPS only, also after a redirect: the keys decide who is authenticated. */
  curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "https");
  curl_easy_setopt(c, CURLOPT_REDIR_PROTOCOLS_STR, "https");
  curl_easy_setopt(c, CURLOPT_FOLLOWLOCATION, 1L);
  curl_easy_setopt(c, CURLOPT_MAXREDIRS, MAX_REDIRECTS);
  curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, FETCH_TIMEOUT_MS);
  curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, CONNECT_TIMEOUT_MS);
  curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(c, CURLOPT_USERAGENT, "wsgate-gateway/" WSG_VERSION);
  curl_easy_setopt(c, CURLOPT_ERRORBUFFER, cerr);
  curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, write_cb);
  curl_easy_setopt(c, CURLOPT_WRITEDATA, &b);
  /* A drain must not wait for a slow provider's time-out. */
  curl_easy_setopt(c, CURLOPT_NOPROGRESS, 0L);
  curl_easy_setopt(c, CURLOPT_XFERINFOFUNCTION, progress_cb);
  curl_easy_setopt(c, CURLOPT_XFERINFODATA, f);
  if (f->ca_file)
    curl_easy_setopt(c, CURLOPT_CAINFO, f->ca_file);
  CURLcode rc = curl_easy_perform(c);
  long status = 0;
  curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
  curl_easy_cleanup(c);
  gw_jwks_result res = GW_JWKS_OK;
  if (b.too_big) {
    snprintf(why, whylen, "the document is larger than %d bytes", GW_KEYSET_MAX_FILE);
    res = GW_JWKS_BAD_DOCUMENT;
  } else if (rc != CURLE_OK) {
    snprintf(why, whylen, "%s", cerr[0] ? cerr : curl_easy_strerror(rc));
    res = GW_JWKS_NETWORK;
  } else if (status != 200) {
    snprintf(why, whylen, "HTTP status %ld", status);
    res = GW_JWKS_HTTP_STATUS;
  } else {
    gw_keyset *ks = gw_keyset_create();
    char kerr[512] = "out of memory";
    if (!ks || gw_keyset_add_jwks(ks, b.buf ? b.buf : "", b.len, f->url, kerr, sizeof kerr) != 0) {
      gw_keyset_unref(ks);
      snprintf(why, whylen, "%s", kerr);
      res = GW_JWKS_BAD_DOCUMENT;
    } else {
      *out = ks;
    }
  }
  free(b.buf);
  return res;
}

/* Fetch thread (and create, before it starts): fetch, count, hand over. */
static void fetch_and_hand_over(gw_jwks_fetch *f) {
  gw_keyset *ks = NULL;
  char why[CURL_ERROR_SIZE + 512] = "";
  f->last_attempt_ms = wsg_now_mono_ms();
  gw_jwks_result res = fetch_once(f, &ks, why, sizeof why);
  wsg_counter_add(f->o.m_results[res], 1);
  if (res != GW_JWKS_OK) {
    WSG_WARN("auth", "--jwt-jwks-url %s: %s; keeping the last good keys", f->url, why);
    f->last_ok = false;
    return;
  }
  if (!f->last_ok)
    WSG_INFO("auth", "--jwt-jwks-url %s: %zu key(s)", f->url, gw_keyset_count(ks));
  f->last_ok = true;
  wsg_gauge_set(f->o.m_last_success, (int64_t)time(NULL));
  pthread_mutex_lock(&f->mu);
  gw_keyset *old = f->ready;
  f->ready = ks;
  pthread_mutex_unlock(&f->mu);
  gw_keyset_unref(old);
  ev_async_send(f->o.loop, &f->async_w);
}

static void cond_deadline(struct timespec *ts, uint64_t in_ms) {
  clock_gettime(CLOCK_MONOTONIC, ts);
  ts->tv_sec += (time_t)(in_ms / 1000);
  ts->tv_nsec += (long)(in_ms % 1000) * 1000000L;
  if (ts->tv_nsec >= 1000000000L) {
    ts->tv_sec++;
    ts->tv_nsec -= 1000000000L;
  }
}

static void *thread_main(void *arg) {
  gw_jwks_fetch *f = arg;
  pthread_mutex_lock(&f->mu);
  while (!f->stop) {
    uint64_t now = wsg_now_mono_ms();
    uint64_t since = now - f->last_attempt_ms;
    uint64_t period = f->last_ok ? f->o.refresh_ms : f->o.min_interval_ms;
    uint64_t wait = since >= period ? 0 : period - since;
    if (f->wanted) {
      uint64_t w = since >= f->o.min_interval_ms ? 0 : f->o.min_interval_ms - since;
      if (w < wait)
        wait = w;
    }
    if (wait > 0) {
      struct timespec ts;
      cond_deadline(&ts, wait);
      pthread_cond_timedwait(&f->cv, &f->mu, &ts);
      continue;
    }
    f->wanted = false;
    pthread_mutex_unlock(&f->mu);
    fetch_and_hand_over(f);
    pthread_mutex_lock(&f->mu);
  }
  pthread_mutex_unlock(&f->mu);
  return NULL;
}

/* Loop thread: a set is waiting. */
static void async_cb(struct ev_loop *loop, ev_async *w, int revents) {
  (void)loop;
  (void)revents;
  gw_jwks_fetch *f = w->data;
  pthread_mutex_lock(&f->mu);
  gw_keyset *ks = f->ready;
  f->ready = NULL;
  pthread_mutex_unlock(&f->mu);
  if (ks)
    f->o.on_keys(f->o.arg, ks);
}

int gw_jwks_fetch_create(gw_jwks_fetch **out, const gw_jwks_fetch_options *o, char *err,
                         size_t errlen) {
  *out = NULL;
  gw_jwks_fetch *f = calloc(1, sizeof *f);
  if (!f) {
    snprintf(err, errlen, "out of memory");
    return -1;
  }
  f->o = *o;
  f->url = strdup(o->url);
  f->ca_file = o->ca_file ? strdup(o->ca_file) : NULL;
  pthread_condattr_t ca;
  pthread_condattr_init(&ca);
  pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
  pthread_cond_init(&f->cv, &ca);
  pthread_condattr_destroy(&ca);
  pthread_mutex_init(&f->mu, NULL);
  ev_async_init(&f->async_w, async_cb);
  f->async_w.data = f;
  ev_async_start(o->loop, &f->async_w);
  if (!f->url || (o->ca_file && !f->ca_file)) {
    snprintf(err, errlen, "out of memory");
    gw_jwks_fetch_destroy(f);
    return -1;
  }
  fetch_and_hand_over(f);
  async_cb(o->loop, &f->async_w, 0); /* the first set, now: before any client */
  if (pthread_create(&f->th, NULL, thread_main, f) != 0) {
    snprintf(err, errlen, "cannot start the JWKS fetch thread");
    gw_jwks_fetch_destroy(f);
    return -1;
  }
  f->started = true;
  *out = f;
  return 0;
}

void gw_jwks_fetch_request(gw_jwks_fetch *f) {
  if (!f)
    return;
  pthread_mutex_lock(&f->mu);
  if (!f->wanted) {
    f->wanted = true;
    pthread_cond_signal(&f->cv);
  }
  pthread_mutex_unlock(&f->mu);
}

void gw_jwks_fetch_destroy(gw_jwks_fetch *f) {
  if (!f)
    return;
  if (f->started) {
    atomic_store(&f->abort_fetch, true);
    pthread_mutex_lock(&f->mu);
    f->stop = true;
    pthread_cond_signal(&f->cv);
    pthread_mutex_unlock(&f->mu);
    pthread_join(f->th, NULL);
  }
  ev_async_stop(f->o.loop, &f->async_w);
  gw_keyset_unref(f->ready);
  pthread_cond_destroy(&f->cv);
  pthread_mutex_destroy(&f->mu);
  free(f->url);
  free(f->ca_file);
  free(f);
}
