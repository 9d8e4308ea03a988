/*
 * load_ctl: a wsgate-load worker's side of the control socket to its parent (the protocol is in
 * load_engine.h): the parent's commands in; progress lines and the JSON result out.
 *
 * Threads: a worker is single-threaded.
 */
#include <errno.h>
#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>

#include "load_worker.h"

static const char *const fail_key[] = {
#define FAIL_KEY(name, key, text) key,
    FAIL_MAP(FAIL_KEY)
#undef FAIL_KEY
};

/* ----------------------------------------------------------------------------------------- */
/* control channel                                                                            */

static int ctl_write_all(worker *w, const char *buf, size_t len) {
  size_t off = 0;
  while (off < len) {
    ssize_t r = send(w->ctl, buf + off, len - off, MSG_NOSIGNAL);
    if (r < 0 && errno == EINTR)
      continue;
    if (r <= 0)
      return -1; /* the parent is gone: EOF on the socket ends this worker next */
    off += (size_t)r;
  }
  return 0;
}

void load__ctl_send(worker *w, const char *fmt, ...) {
  char line[128];
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(line, sizeof line, fmt, ap);
  va_end(ap);
  if (n > 0 && (size_t)n < sizeof line)
    ctl_write_all(w, line, (size_t)n);
}

/* Reads the parent's commands; returns -1 when the parent is gone. */
int load__ctl_read(worker *w) {
  for (;;) {
    ssize_t r = recv(w->ctl, w->cbuf + w->clen, sizeof w->cbuf - 1 - w->clen, MSG_DONTWAIT);
    if (r < 0 && errno == EINTR)
      continue;
    if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
      return 0;
    if (r <= 0)
      return -1;
    w->clen += (size_t)r;
    w->cbuf[w->clen] = '\0';
    char *nl;
    while ((nl = memchr(w->cbuf, '\n', w->clen)) != NULL) {
      *nl = '\0';
      unsigned long long t0;
      if (w->cbuf[0] == 'G' && sscanf(w->cbuf, "G %llu", &t0) == 1 && w->phase == P_WAIT_GO)
        load__begin_run(w, (uint64_t)t0);
      else if (w->cbuf[0] == 'D')
        w->caught_up = true;
      else if (w->cbuf[0] == 'X')
        w->exit_req = true;
      size_t used = (size_t)(nl + 1 - w->cbuf);
      memmove(w->cbuf, nl + 1, w->clen - used);
      w->clen -= used;
    }
    if (w->clen >= sizeof w->cbuf - 1)
      return -1; /* not our parent speaking */
  }
}

/* ----------------------------------------------------------------------------------------- */
/* result                                                                                     */

int load__report(worker *w) {
  json_t *fails = json_object(), *errs = json_object(), *refused = json_object(),
         *closes = json_object();
  for (int f = 0; f < FAIL_COUNT; f++) {
    json_object_set_new(fails, fail_key[f], json_integer((json_int_t)w->fails[f]));
    if (w->first_err[f][0])
      json_object_set_new(errs, fail_key[f], json_string(w->first_err[f]));
  }
  char key[16];
  for (int s = 0; s < MAX_STATUS; s++)
    if (w->refused[s]) {
      snprintf(key, sizeof key, "%d", s);
      json_object_set_new(refused, key, json_integer(w->refused[s]));
    }
  for (int c = 0; c < MAX_CLOSE; c++)
    if (w->closes[c]) {
      snprintf(key, sizeof key, "%d", c);
      json_object_set_new(closes, key, json_integer(w->closes[c]));
    }
  json_t *o = json_pack(
      "{sI sI sI sI sI so so so sI so sI sI sI sI sI sI sI so so so}", "worker", (json_int_t)w->id,
      "conns", (json_int_t)w->n, "ready", (json_int_t)w->ready, "failed", (json_int_t)w->failed,
      "receivers_ready", (json_int_t)w->receivers_ready, "fails", fails, "first_errors", errs,
      "refused", refused, "closed_after_ready", (json_int_t)w->closed_ready, "close_codes", closes,
      "ramp_ns", (json_int_t)(w->ramp_end - w->ramp_start), "sent", (json_int_t)w->sent,
      "sent_measured", (json_int_t)w->sent_measured, "dropped", (json_int_t)w->dropped, "received",
      (json_int_t)w->received, "received_measured", (json_int_t)w->received_measured,
      "expected_measured", (json_int_t)(w->p->mode == LOAD_FANOUT ? w->expected : w->sent_measured),
      "h_connect", load_hist_json(&w->h_connect), "h_latency", load_hist_json(&w->h_lat), "h_lag",
      load_hist_json(&w->h_lag));
  struct rusage ru;
  if (o && getrusage(RUSAGE_SELF, &ru) == 0) /* the whole process: ramp, run and drain */
    json_object_set_new(o, "cpu_s",
                        json_real((double)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) +
                                  (double)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6));
  char *s = o ? json_dumps(o, JSON_COMPACT) : NULL;
  json_decref(o);
  if (!s) {
    fprintf(stderr, "wsgate-load worker %u: cannot encode the result\n", w->id);
    return -1;
  }
  char head[32];
  int hl = snprintf(head, sizeof head, "J %zu\n", strlen(s));
  int rc = ctl_write_all(w, head, (size_t)hl) == 0 && ctl_write_all(w, s, strlen(s)) == 0 ? 0 : -1;
  free(s);
  return rc;
}
