/*
 * gw_doorq: a ring of (key, tag, deadline) in deadline order (gw_doorq.h says why a ring).
 */
#include "gw_doorq.h"

#include <stdlib.h>

#define MIN_CAP 64

typedef struct {
  uint64_t key;
  uint64_t at_ms;
  uint32_t tag;
} entry;

struct gw_doorq {
  entry *v;
  size_t cap, head, len; /* entries v[head], v[(head + 1) % cap], ... */
  uint64_t last_ms;      /* the latest deadline pushed */
  gw_doorq_live_fn live;
  void *arg;
};

gw_doorq *gw_doorq_new(gw_doorq_live_fn live, void *arg) {
  gw_doorq *q = calloc(1, sizeof *q);
  if (!q)
    return NULL;
  q->v = calloc(MIN_CAP, sizeof *q->v);
  if (!q->v) {
    free(q);
    return NULL;
  }
  q->cap = MIN_CAP;
  q->live = live;
  q->arg = arg;
  return q;
}

void gw_doorq_free(gw_doorq *q) {
  if (!q)
    return;
  free(q->v);
  free(q);
}

/* Keeps the live entries, in order, from the head on. The k-th kept goes to the ring's k-th
 * position, never past the one being read: no entry is overwritten before it is read. */
static void compact(gw_doorq *q) {
  size_t kept = 0;
  for (size_t i = 0; i < q->len; i++) {
    entry e = q->v[(q->head + i) % q->cap];
    if (q->live(q->arg, e.key, e.tag))
      q->v[(q->head + kept++) % q->cap] = e;
  }
  q->len = kept;
}

/* Moves the entries, in order, to a ring of `cap` slots (cap >= len). */
static int resize(gw_doorq *q, size_t cap) {
  entry *v = malloc(cap * sizeof *v);
  if (!v)
    return -1;
  for (size_t i = 0; i < q->len; i++)
    v[i] = q->v[(q->head + i) % q->cap];
  free(q->v);
  q->v = v;
  q->cap = cap;
  q->head = 0;
  return 0;
}

int gw_doorq_push(gw_doorq *q, uint64_t key, uint32_t tag, uint64_t at_ms) {
  if (q->len == q->cap) {
    compact(q);
    if (q->len > q->cap / 2 && resize(q, q->cap * 2) != 0 && q->len == q->cap)
      return -1;
  }
  if (at_ms < q->last_ms)
    at_ms = q->last_ms;
  q->last_ms = at_ms;
  q->v[(q->head + q->len) % q->cap] = (entry){.key = key, .at_ms = at_ms, .tag = tag};
  q->len++;
  return 0;
}

bool gw_doorq_next(const gw_doorq *q, uint64_t *at_ms) {
  if (!q->len)
    return false;
  *at_ms = q->v[q->head].at_ms;
  return true;
}

bool gw_doorq_pop_due(gw_doorq *q, uint64_t now_ms, uint64_t *key, uint32_t *tag) {
  if (!q->len || q->v[q->head].at_ms > now_ms)
    return false;
  *key = q->v[q->head].key;
  *tag = q->v[q->head].tag;
  q->head = (q->head + 1) % q->cap;
  q->len--;
  return true;
}

size_t gw_doorq_len(const gw_doorq *q) {
  return q->len;
}

size_t gw_doorq_cap(const gw_doorq *q) {
  return q->cap;
}
