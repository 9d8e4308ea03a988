/*
 * gw_conns: connection id and user id indexes of the gateway (see gw_conns.h).
 *
 * Threads: the loop thread only.
 */
#include "gw_conns.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#define MIN_CAP 64

static uint64_t mix64(uint64_t x) {
  x ^= x >> 30;
  x *= 0xbf58476d1ce4e5b9ULL;
  x ^= x >> 27;
  x *= 0x94d049bb133111ebULL;
  x ^= x >> 31;
  return x;
}

/* ------------------------------------------------------------------------------------------ */
/* connection id -> value                                                                      */

void gw_conn_map_init(gw_conn_map *m) {
  memset(m, 0, sizeof *m);
}

void gw_conn_map_finish(gw_conn_map *m) {
  free(m->slots);
  memset(m, 0, sizeof *m);
}

static size_t conn_find(const gw_conn_map *m, uint64_t key) {
  size_t mask = m->cap - 1;
  size_t i = (size_t)mix64(key) & mask;
  while (m->slots[i].key != 0 && m->slots[i].key != key)
    i = (i + 1) & mask;
  return i;
}

void *gw_conn_map_get(const gw_conn_map *m, uint64_t key) {
  if (m->cap == 0 || key == 0)
    return NULL;
  size_t i = conn_find(m, key);
  return m->slots[i].key == key ? m->slots[i].val : NULL;
}

static int conn_grow(gw_conn_map *m) {
  size_t ncap = m->cap ? m->cap * 2 : MIN_CAP;
  gw_conn_slot *ns = calloc(ncap, sizeof *ns);
  if (!ns)
    return -1;
  gw_conn_map old = *m;
  m->slots = ns;
  m->cap = ncap;
  for (size_t i = 0; i < old.cap; i++) {
    if (old.slots[i].key != 0)
      m->slots[conn_find(m, old.slots[i].key)] = old.slots[i];
  }
  free(old.slots);
  return 0;
}

int gw_conn_map_put(gw_conn_map *m, uint64_t key, void *val) {
  if (key == 0)
    return -1;
  if ((m->count + 1) * 4 > m->cap * 3 && conn_grow(m) != 0)
    return -1;
  size_t i = conn_find(m, key);
  if (m->slots[i].key == 0)
    m->count++;
  m->slots[i].key = key;
  m->slots[i].val = val;
  return 0;
}

void *gw_conn_map_del(gw_conn_map *m, uint64_t key) {
  if (m->cap == 0 || key == 0)
    return NULL;
  size_t mask = m->cap - 1;
  size_t i = conn_find(m, key);
  if (m->slots[i].key != key)
    return NULL;
  void *val = m->slots[i].val;
  /* Backward-shift deletion: pull later entries of the probe run into the hole, so lookups never
   * need tombstones. An entry at j may fill hole i if its home slot is not in (i, j]. */
  size_t j = i;
  for (;;) {
    j = (j + 1) & mask;
    if (m->slots[j].key == 0)
      break;
    size_t home = (size_t)mix64(m->slots[j].key) & mask;
    bool in_range = i <= j ? (home > i && home <= j) : (home > i || home <= j);
    if (in_range)
      continue;
    m->slots[i] = m->slots[j];
    i = j;
  }
  m->slots[i].key = 0;
  m->slots[i].val = NULL;
  m->count--;
  return val;
}

bool gw_conn_map_next(const gw_conn_map *m, size_t *pos, uint64_t *key, void **val) {
  while (*pos < m->cap) {
    const gw_conn_slot *s = &m->slots[(*pos)++];
    if (s->key != 0) {
      if (key)
        *key = s->key;
      if (val)
        *val = s->val;
      return true;
    }
  }
  return false;
}

/* ------------------------------------------------------------------------------------------ */
/* SipHash-2-4 (Aumasson and Bernstein), after the reference implementation                    */

#define ROTL(x, b) (uint64_t)(((x) << (b)) | ((x) >> (64 - (b))))
#define SIPROUND                                                                                   \
  do {                                                                                             \
    v0 += v1;                                                                                      \
    v1 = ROTL(v1, 13);                                                                             \
    v1 ^= v0;                                                                                      \
    v0 = ROTL(v0, 32);                                                                             \
    v2 += v3;                                                                                      \
    v3 = ROTL(v3, 16);                                                                             \
    v3 ^= v2;                                                                                      \
    v0 += v3;                                                                                      \
    v3 = ROTL(v3, 21);                                                                             \
    v3 ^= v0;                                                                                      \
    v2 += v1;                                                                                      \
    v1 = ROTL(v1, 17);                                                                             \
    v1 ^= v2;                                                                                      \
    v2 = ROTL(v2, 32);                                                                             \
  } while (0)

static uint64_t load_le64(const uint8_t *p) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; i--)
    v = (v << 8) | p[i];
  return v;
}

uint64_t gw_siphash(uint64_t k0, uint64_t k1, const void *data, size_t len) {
  const uint8_t *in = data;
  uint64_t v0 = 0x736f6d6570736575ULL ^ k0;
  uint64_t v1 = 0x646f72616e646f6dULL ^ k1;
  uint64_t v2 = 0x6c7967656e657261ULL ^ k0;
  uint64_t v3 = 0x7465646279746573ULL ^ k1;
  const uint8_t *end = in + len - (len % 8);
  for (; in != end; in += 8) {
    uint64_t m = load_le64(in);
    v3 ^= m;
    SIPROUND;
    SIPROUND;
    v0 ^= m;
  }
  uint64_t b = (uint64_t)len << 56;
  switch (len & 7) {
  case 7:
    b |= (uint64_t)in[6] << 48;
    /* fall through */
  case 6:
    b |= (uint64_t)in[5] << 40;
    /* fall through */
  case 5:
    b |= (uint64_t)in[4] << 32;
    /* fall through */
  case 4:
    b |= (uint64_t)in[3] << 24;
    /* fall through */
  case 3:
    b |= (uint64_t)in[2] << 16;
    /* fall through */
  case 2:
    b |= (uint64_t)in[1] << 8;
    /* fall through */
  case 1:
    b |= (uint64_t)in[0];
    break;
  case 0:
    break;
  }
  v3 ^= b;
  SIPROUND;
  SIPROUND;
  v0 ^= b;
  v2 ^= 0xff;
  SIPROUND;
  SIPROUND;
  SIPROUND;
  SIPROUND;
  return v0 ^ v1 ^ v2 ^ v3;
}

/* ------------------------------------------------------------------------------------------ */
/* user id -> gw_user                                                                          */

int gw_user_map_init(gw_user_map *m) {
  memset(m, 0, sizeof *m);
  uint64_t k[2];
  if (getrandom(k, sizeof k, 0) != (ssize_t)sizeof k) {
    if (errno == 0)
      errno = EIO;
    return -1;
  }
  m->k0 = k[0];
  m->k1 = k[1];
  return 0;
}

void gw_user_map_finish(gw_user_map *m) {
  for (size_t i = 0; i < m->cap; i++)
    free(m->slots[i]);
  free(m->slots);
  m->slots = NULL;
  m->cap = m->count = 0;
}

static size_t user_find(const gw_user_map *m, uint64_t hash, const char *id, size_t len) {
  size_t mask = m->cap - 1;
  size_t i = (size_t)hash & mask;
  for (;;) {
    const gw_user *u = m->slots[i];
    if (!u || (u->hash == hash && u->len == len && memcmp(u->id, id, len) == 0))
      return i;
    i = (i + 1) & mask;
  }
}

gw_user *gw_user_map_get(const gw_user_map *m, const char *id, size_t len) {
  if (m->cap == 0)
    return NULL;
  return m->slots[user_find(m, gw_siphash(m->k0, m->k1, id, len), id, len)];
}

static int user_grow(gw_user_map *m) {
  size_t ncap = m->cap ? m->cap * 2 : MIN_CAP;
  gw_user **ns = calloc(ncap, sizeof *ns);
  if (!ns)
    return -1;
  gw_user **old = m->slots;
  size_t ocap = m->cap;
  m->slots = ns;
  m->cap = ncap;
  for (size_t i = 0; i < ocap; i++) {
    gw_user *u = old[i];
    if (u)
      m->slots[user_find(m, u->hash, u->id, u->len)] = u;
  }
  free(old);
  return 0;
}

gw_user *gw_user_map_intern(gw_user_map *m, const char *id, size_t len) {
  if (len > UINT32_MAX)
    return NULL;
  if ((m->count + 1) * 4 > m->cap * 3 && user_grow(m) != 0)
    return NULL;
  uint64_t h = gw_siphash(m->k0, m->k1, id, len);
  size_t i = user_find(m, h, id, len);
  if (m->slots[i])
    return m->slots[i];
  gw_user *u = malloc(sizeof *u + len + 1);
  if (!u)
    return NULL;
  u->head = NULL;
  u->nconns = 0;
  u->rx_bytes = 0;
  u->touched_s = 0;
  u->len = (uint32_t)len;
  u->hash = h;
  memcpy(u->id, id, len);
  u->id[len] = '\0';
  m->slots[i] = u;
  m->count++;
  return u;
}

void gw_user_map_remove(gw_user_map *m, gw_user *u) {
  if (!u || m->cap == 0)
    return;
  size_t mask = m->cap - 1;
  size_t i = user_find(m, u->hash, u->id, u->len);
  if (m->slots[i] != u)
    return;
  size_t j = i;
  for (;;) {
    j = (j + 1) & mask;
    gw_user *e = m->slots[j];
    if (!e)
      break;
    size_t home = (size_t)e->hash & mask;
    bool in_range = i <= j ? (home > i && home <= j) : (home > i || home <= j);
    if (in_range)
      continue;
    m->slots[i] = e;
    i = j;
  }
  m->slots[i] = NULL;
  m->count--;
  free(u);
}

/* ------------------------------------------------------------------------------------------ */
/* deadlines                                                                                   */

int gw_deadline_push(gw_deadline_heap *h, uint64_t at, uint64_t conn) {
  if (h->n == h->cap) {
    size_t ncap = h->cap ? h->cap * 2 : 16;
    gw_deadline *nv = realloc(h->v, ncap * sizeof *nv);
    if (!nv)
      return -1;
    h->v = nv;
    h->cap = ncap;
  }
  size_t i = h->n++;
  while (i > 0) {
    size_t parent = (i - 1) / 2;
    if (h->v[parent].at <= at)
      break;
    h->v[i] = h->v[parent];
    i = parent;
  }
  h->v[i].at = at;
  h->v[i].conn = conn;
  return 0;
}

bool gw_deadline_peek(const gw_deadline_heap *h, gw_deadline *out) {
  if (h->n == 0)
    return false;
  *out = h->v[0];
  return true;
}

void gw_deadline_pop(gw_deadline_heap *h) {
  if (h->n == 0)
    return;
  gw_deadline last = h->v[--h->n];
  size_t i = 0;
  for (;;) {
    size_t c = 2 * i + 1;
    if (c >= h->n)
      break;
    if (c + 1 < h->n && h->v[c + 1].at < h->v[c].at)
      c++;
    if (last.at <= h->v[c].at)
      break;
    h->v[i] = h->v[c];
    i = c;
  }
  if (h->n > 0)
    h->v[i] = last;
}

void gw_deadline_heap_finish(gw_deadline_heap *h) {
  free(h->v);
  memset(h, 0, sizeof *h);
}
