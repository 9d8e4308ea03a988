/*
 * gw_keepalive: a ring of horizon + 1 one-second buckets, each a growable array of connection
 * ids. A due time is always within the horizon, so it never lands in the bucket being run.
 */
#include "gw_keepalive.h"

#include <stdlib.h>

/* A bucket keeps its array between seconds; one grown far beyond its use (a burst of connects
 * in one second) is shrunk back once it has been run. */
#define BUCKET_MIN_CAP 64

typedef struct {
  uint64_t *ids;
  uint32_t len, cap;
} bucket;

struct gw_keepalive {
  bucket *b;
  uint32_t nb;  /* horizon + 1 */
  uint32_t cur; /* every second up to this one has been run */
  size_t pending;
};

gw_keepalive *gw_keepalive_new(uint32_t horizon_s, uint32_t now_s) {
  if (horizon_s == 0 || horizon_s > 86400)
    return NULL;
  gw_keepalive *k = calloc(1, sizeof *k);
  if (!k)
    return NULL;
  k->nb = horizon_s + 1;
  k->b = calloc(k->nb, sizeof *k->b);
  if (!k->b) {
    free(k);
    return NULL;
  }
  k->cur = now_s;
  return k;
}

void gw_keepalive_free(gw_keepalive *k) {
  if (!k)
    return;
  for (uint32_t i = 0; i < k->nb; i++)
    free(k->b[i].ids);
  free(k->b);
  free(k);
}

int gw_keepalive_schedule(gw_keepalive *k, uint64_t conn_id, uint32_t due_s) {
  uint32_t first = k->cur + 1, last = k->cur + (k->nb - 1);
  if ((int32_t)(due_s - first) < 0)
    due_s = first;
  else if ((int32_t)(due_s - last) > 0)
    due_s = last;
  bucket *b = &k->b[due_s % k->nb];
  if (b->len == b->cap) {
    uint32_t cap = b->cap ? b->cap * 2 : BUCKET_MIN_CAP;
    uint64_t *ids = realloc(b->ids, (size_t)cap * sizeof *ids);
    if (!ids)
      return -1;
    b->ids = ids;
    b->cap = cap;
  }
  b->ids[b->len++] = conn_id;
  k->pending++;
  return 0;
}

static void bucket_run(gw_keepalive *k, bucket *b, void (*due)(void *, uint64_t), void *arg) {
  /* due() schedules only into other buckets (see the top of the file): b stays put. */
  uint32_t n = b->len;
  for (uint32_t i = 0; i < n; i++)
    due(arg, b->ids[i]);
  k->pending -= n;
  b->len = 0;
  if (b->cap > BUCKET_MIN_CAP && n < b->cap / 4) {
    uint32_t cap = n > BUCKET_MIN_CAP ? n : BUCKET_MIN_CAP;
    uint64_t *ids = realloc(b->ids, (size_t)cap * sizeof *ids);
    if (ids) {
      b->ids = ids;
      b->cap = cap;
    }
  }
}

void gw_keepalive_run(gw_keepalive *k, uint32_t now_s, void (*due)(void *arg, uint64_t conn_id),
                      void *arg) {
  /* After a long stall every bucket is due once: older seconds map onto the same buckets. */
  if ((int32_t)(now_s - k->cur) > (int32_t)k->nb)
    k->cur = now_s - k->nb;
  while ((int32_t)(now_s - k->cur) > 0) {
    k->cur++;
    bucket_run(k, &k->b[k->cur % k->nb], due, arg);
  }
}

size_t gw_keepalive_pending(const gw_keepalive *k) {
  return k->pending;
}
