/*
 * proc_offsets: the per-partition ring of in-flight input offsets (see proc_offsets.h).
 *
 * Threads: the processor's consumer thread only.
 */
#include "proc_offsets.h"

#include <stdlib.h>
#include <string.h>

/* Grows by doubling from here; the processor bounds the total across partitions
 * (--max-in-flight), so there is no limit of its own. */
#define INITIAL_CAP 64

typedef struct {
  int64_t offset;
  uint32_t pending; /* guard + outputs not yet acknowledged */
} entry;

struct proc_offsets {
  entry *ring;
  size_t cap;  /* a power of two */
  size_t head; /* index of the oldest entry */
  size_t count;
  uint64_t head_seq;   /* seq of ring[head] */
  int64_t last_begun;  /* -1 before the first entry */
  int64_t committable; /* -1 until an entry completed */
};

proc_offsets *proc_offsets_create(void) {
  proc_offsets *t = calloc(1, sizeof(*t));
  if (!t)
    return NULL;
  t->ring = malloc(INITIAL_CAP * sizeof(entry));
  if (!t->ring) {
    free(t);
    return NULL;
  }
  t->cap = INITIAL_CAP;
  t->last_begun = -1;
  t->committable = -1;
  return t;
}

void proc_offsets_destroy(proc_offsets *t) {
  if (!t)
    return;
  free(t->ring);
  free(t);
}

static entry *at(proc_offsets *t, size_t i) {
  return &t->ring[(t->head + i) & (t->cap - 1)];
}

/* Doubles the ring, unrolling it so the head is at index 0. */
static int grow(proc_offsets *t) {
  if (t->cap > SIZE_MAX / 2 / sizeof(entry))
    return -1;
  size_t ncap = t->cap * 2;
  entry *n = malloc(ncap * sizeof(entry));
  if (!n)
    return -1;
  for (size_t i = 0; i < t->count; i++)
    n[i] = *at(t, i);
  free(t->ring);
  t->ring = n;
  t->cap = ncap;
  t->head = 0;
  return 0;
}

int proc_offsets_begin(proc_offsets *t, int64_t offset, uint64_t *seq) {
  if (offset < 0 || offset <= t->last_begun)
    return -1;
  if (t->count == t->cap && grow(t) != 0)
    return -1;
  entry *e = at(t, t->count);
  e->offset = offset;
  e->pending = 1;
  *seq = t->head_seq + t->count;
  t->count++;
  t->last_begun = offset;
  return 0;
}

static entry *find(proc_offsets *t, uint64_t seq) {
  if (seq < t->head_seq || seq - t->head_seq >= t->count)
    return NULL;
  return at(t, (size_t)(seq - t->head_seq));
}

int proc_offsets_add(proc_offsets *t, uint64_t seq) {
  entry *e = find(t, seq);
  if (!e || e->pending == 0 || e->pending == UINT32_MAX)
    return -1;
  e->pending++;
  return 0;
}

int proc_offsets_done(proc_offsets *t, uint64_t seq) {
  entry *e = find(t, seq);
  if (!e || e->pending == 0)
    return -1;
  e->pending--;
  int advanced = 0;
  while (t->count > 0 && at(t, 0)->pending == 0) {
    t->committable = at(t, 0)->offset + 1;
    t->head = (t->head + 1) & (t->cap - 1);
    t->head_seq++;
    t->count--;
    advanced = 1;
  }
  return advanced;
}

int64_t proc_offsets_committable(const proc_offsets *t) {
  return t->committable;
}

size_t proc_offsets_count(const proc_offsets *t) {
  return t->count;
}

void proc_offsets_reset(proc_offsets *t) {
  /* head_seq keeps counting, so a report for an entry of the previous assignment never matches
   * an entry of the next one. */
  t->head_seq += t->count;
  t->head = 0;
  t->count = 0;
  t->last_begun = -1;
  t->committable = -1;
}
