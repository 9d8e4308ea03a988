/*
 * gw_channels: the local subscription index (see gw_channels.h).
 *
 * Threads: not thread-safe; the loop thread only.
 */
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "gw_channels.h"

struct gw_chsub {
  gw_channel *ch;
  gw_chsub *cprev, *cnext; /* the channel's subscribers */
  gw_chsub *snext;         /* the connection's subscriptions */
  uint64_t conn;
  uint64_t from; /* publications below this offset were delivered already (recovery) */
  uint8_t flags;
};

struct gw_channel {
  gw_chsub *head;
  gw_channel *rprev, *rnext; /* the ring of every channel held (gw_channels_sweep) */
  gw_chpos pos;
  size_t nsubs;
  uint64_t hash;
  uint32_t len;
  char name[]; /* NUL-terminated */
};

struct gw_channels {
  gw_channels_limits lim;
  gw_channel **slots; /* open addressing, linear probing; NULL = free */
  size_t cap;         /* power of two */
  size_t count;
  uint64_t subs, bytes;
  gw_channel *hand; /* the next channel gw_channels_sweep visits; NULL when none is held */
};

static uint64_t hash_name(const char *s, size_t len) {
  uint64_t h = 1469598103934665603ull; /* FNV-1a */
  for (size_t i = 0; i < len; i++) {
    h ^= (unsigned char)s[i];
    h *= 1099511628211ull;
  }
  return h;
}

/* A new channel goes just behind the hand: every channel already held is visited before it. */
static void ring_insert(gw_channels *c, gw_channel *ch) {
  if (!c->hand) {
    ch->rprev = ch->rnext = ch;
    c->hand = ch;
    return;
  }
  ch->rnext = c->hand;
  ch->rprev = c->hand->rprev;
  ch->rprev->rnext = ch;
  c->hand->rprev = ch;
}

static void ring_remove(gw_channels *c, gw_channel *ch) {
  if (c->hand == ch)
    c->hand = ch->rnext == ch ? NULL : ch->rnext;
  ch->rprev->rnext = ch->rnext;
  ch->rnext->rprev = ch->rprev;
}

gw_channels *gw_channels_create(const gw_channels_limits *lim) {
  gw_channels *c = calloc(1, sizeof *c);
  if (!c)
    return NULL;
  c->lim = *lim;
  if (c->lim.max_per_conn == 0)
    c->lim.max_per_conn = GW_CHANNELS_DEFAULT_PER_CONN;
  if (c->lim.max_channels == 0)
    c->lim.max_channels = GW_CHANNELS_DEFAULT_MAX;
  c->cap = 64;
  c->slots = calloc(c->cap, sizeof *c->slots);
  if (!c->slots) {
    free(c);
    return NULL;
  }
  c->bytes = sizeof *c + c->cap * sizeof *c->slots;
  return c;
}

void gw_channels_destroy(gw_channels *c) {
  if (!c)
    return;
  for (size_t i = 0; i < c->cap; i++) {
    gw_channel *ch = c->slots[i];
    if (!ch)
      continue;
    for (gw_chsub *s = ch->head; s;) {
      gw_chsub *n = s->cnext;
      free(s);
      s = n;
    }
    if (c->lim.pos_free)
      c->lim.pos_free(c->lim.pos_arg, &ch->pos);
    free(ch);
  }
  free(c->slots);
  free(c);
}

static size_t find_slot(const gw_channels *c, const char *name, size_t len, uint64_t h) {
  size_t mask = c->cap - 1;
  for (size_t i = (size_t)h & mask;; i = (i + 1) & mask) {
    const gw_channel *ch = c->slots[i];
    if (!ch || (ch->hash == h && ch->len == len && memcmp(ch->name, name, len) == 0))
      return i;
  }
}

static int grow(gw_channels *c) {
  size_t ncap = c->cap * 2;
  gw_channel **n = calloc(ncap, sizeof *n);
  if (!n)
    return -1;
  for (size_t i = 0; i < c->cap; i++) {
    gw_channel *ch = c->slots[i];
    if (!ch)
      continue;
    size_t j = (size_t)ch->hash & (ncap - 1);
    while (n[j])
      j = (j + 1) & (ncap - 1);
    n[j] = ch;
  }
  free(c->slots);
  c->bytes += (ncap - c->cap) * sizeof *n;
  c->slots = n;
  c->cap = ncap;
  return 0;
}

/* Backward-shift deletion: the entries after i that probed past it move back. */
static void table_remove(gw_channels *c, size_t i) {
  size_t mask = c->cap - 1;
  c->slots[i] = NULL;
  for (size_t j = (i + 1) & mask; c->slots[j]; j = (j + 1) & mask) {
    size_t home = (size_t)c->slots[j]->hash & mask;
    /* Move it back to i if i lies cyclically in [home, j). */
    if (((j - home) & mask) >= ((j - i) & mask)) {
      c->slots[i] = c->slots[j];
      c->slots[j] = NULL;
      i = j;
    }
  }
  c->count--;
}

gw_channel *gw_channels_find(const gw_channels *c, const char *name, size_t len) {
  return c->slots[find_slot(c, name, len, hash_name(name, len))];
}

static gw_chsub *conn_find(gw_chsub *subs, const char *name, size_t len) {
  for (gw_chsub *s = subs; s; s = s->snext)
    if (s->ch->len == len && memcmp(s->ch->name, name, len) == 0)
      return s;
  return NULL;
}

uint32_t gw_channels_conn_count(const gw_chsub *subs) {
  uint32_t n = 0;
  for (; subs; subs = subs->snext)
    n++;
  return n;
}

int gw_channels_subscribe(gw_channels *c, gw_chsub **subs, uint64_t conn, const char *name,
                          size_t len, uint8_t flags, bool *created) {
  *created = false;
  if (conn_find(*subs, name, len))
    return GW_CHOP_OK;
  if (gw_channels_conn_count(*subs) >= c->lim.max_per_conn)
    return GW_CHOP_TOO_MANY_SUBS;
  uint64_t h = hash_name(name, len);
  size_t i = find_slot(c, name, len, h);
  gw_channel *ch = c->slots[i];
  if (!ch) {
    if (c->count >= c->lim.max_channels)
      return GW_CHOP_TOO_MANY_CHANNELS;
    if ((c->count + 1) * 2 > c->cap) {
      if (grow(c) != 0)
        return GW_CHOP_UNAVAILABLE;
      i = find_slot(c, name, len, h);
    }
    ch = calloc(1, sizeof *ch + len + 1);
    if (!ch)
      return GW_CHOP_UNAVAILABLE;
    memcpy(ch->name, name, len);
    ch->len = (uint32_t)len;
    ch->hash = h;
    c->slots[i] = ch;
    c->count++;
    c->bytes += sizeof *ch + len + 1;
    ring_insert(c, ch);
    *created = true;
  }
  gw_chsub *s = calloc(1, sizeof *s);
  if (!s) {
    if (*created) {
      ring_remove(c, ch);
      table_remove(c, i);
      c->bytes -= sizeof *ch + len + 1;
      free(ch);
      *created = false;
    }
    return GW_CHOP_UNAVAILABLE;
  }
  s->ch = ch;
  s->conn = conn;
  s->flags = flags;
  s->cnext = ch->head;
  if (ch->head)
    ch->head->cprev = s;
  ch->head = s;
  ch->nsubs++;
  s->snext = *subs;
  *subs = s;
  c->subs++;
  c->bytes += sizeof *s;
  return GW_CHOP_OK;
}

/* Unlinks s from its channel and frees it; frees the channel when it was the last. Returns
 * whether the channel went away (after calling on_empty). s must already be off its
 * connection's list. */
static bool remove_sub(gw_channels *c, gw_chsub *s,
                       void (*on_empty)(void *arg, const char *name, size_t len), void *arg) {
  gw_channel *ch = s->ch;
  if (s->cprev)
    s->cprev->cnext = s->cnext;
  else
    ch->head = s->cnext;
  if (s->cnext)
    s->cnext->cprev = s->cprev;
  ch->nsubs--;
  c->subs--;
  c->bytes -= sizeof *s;
  free(s);
  if (ch->nsubs > 0)
    return false;
  if (on_empty)
    on_empty(arg, ch->name, ch->len);
  if (c->lim.pos_free)
    c->lim.pos_free(c->lim.pos_arg, &ch->pos);
  ring_remove(c, ch);
  table_remove(c, find_slot(c, ch->name, ch->len, ch->hash));
  c->bytes -= sizeof *ch + ch->len + 1;
  free(ch);
  return true;
}

bool gw_channels_unsubscribe(gw_channels *c, gw_chsub **subs, const char *name, size_t len,
                             bool *emptied) {
  *emptied = false;
  for (gw_chsub **pp = subs; *pp; pp = &(*pp)->snext) {
    gw_chsub *s = *pp;
    if (s->ch->len == len && memcmp(s->ch->name, name, len) == 0) {
      *pp = s->snext;
      *emptied = remove_sub(c, s, NULL, NULL);
      return true;
    }
  }
  return false;
}

size_t gw_channels_drop_conn(gw_channels *c, gw_chsub **subs,
                             void (*on_empty)(void *arg, const char *name, size_t len), void *arg) {
  size_t n = 0;
  while (*subs) {
    gw_chsub *s = *subs;
    *subs = s->snext;
    remove_sub(c, s, on_empty, arg);
    n++;
  }
  return n;
}

void gw_channels_foreach(const gw_channels *c, void (*fn)(void *arg, const char *name, size_t len),
                         void *arg) {
  for (size_t i = 0; i < c->cap; i++)
    if (c->slots[i])
      fn(arg, c->slots[i]->name, c->slots[i]->len);
}

size_t gw_channels_sweep(gw_channels *c, size_t n, void (*fn)(void *arg, gw_channel *ch),
                         void *arg) {
  if (n > c->count)
    n = c->count; /* one channel once per call */
  for (size_t i = 0; i < n; i++) {
    gw_channel *ch = c->hand;
    c->hand = ch->rnext;
    fn(arg, ch);
  }
  return n;
}

size_t gw_channels_count(const gw_channels *c) {
  return c->count;
}
uint64_t gw_channels_subs(const gw_channels *c) {
  return c->subs;
}
uint64_t gw_channels_bytes(const gw_channels *c) {
  return c->bytes;
}
size_t gw_channel_nsubs(const gw_channel *ch) {
  return ch->nsubs;
}
const gw_chsub *gw_channel_first(const gw_channel *ch) {
  return ch->head;
}
const gw_chsub *gw_chsub_next(const gw_chsub *s) {
  return s->cnext;
}
uint64_t gw_chsub_conn(const gw_chsub *s) {
  return s->conn;
}
uint8_t gw_chsub_flags(const gw_chsub *s) {
  return s->flags;
}
const char *gw_channel_name(const gw_channel *ch, size_t *len) {
  *len = ch->len;
  return ch->name;
}

gw_chpos *gw_channel_pos(gw_channel *ch) {
  return &ch->pos;
}

gw_channel *gw_channel_of(gw_chpos *pos) {
  return (gw_channel *)((char *)pos - offsetof(gw_channel, pos));
}

gw_chsub *gw_channels_sub_of(gw_chsub *subs, const char *name, size_t len) {
  for (gw_chsub *s = subs; s; s = s->snext)
    if (s->ch->len == len && memcmp(s->ch->name, name, len) == 0)
      return s;
  return NULL;
}

void gw_chsub_set_flags(gw_chsub *s, uint8_t flags) {
  s->flags = flags;
}

uint64_t gw_chsub_from(const gw_chsub *s) {
  return s->from;
}

void gw_chsub_set_from(gw_chsub *s, uint64_t from) {
  s->from = from;
}

gw_channel *gw_chsub_channel(gw_chsub *s) {
  return s->ch;
}

void gw_channel_reset_from(gw_channel *ch) {
  for (gw_chsub *s = ch->head; s; s = s->cnext)
    s->from = 0;
}

gw_chsub *gw_chsub_snext(gw_chsub *s) {
  return s->snext;
}
