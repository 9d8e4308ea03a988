/*
 * api_channels: a channel's presence and history from Redis (see api_channels.h).
 *
 * Threads: any.
 */
#include "api_channels.h"

#include <openssl/evp.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "wsg_chkeys.h"
#include "wsg_envelope.h"
#include "wsg_redis_keys.h"

/* HSCAN round trips of one presence answer (a hash over `limit` entries only). */
#define SCAN_ROUNDS 64

/* One presence entry, pointing into a reply: field <conn id>, value <user>|<gw id>. */
typedef struct {
  const char *conn, *user, *gw;
  size_t conn_len, user_len, gw_len;
  int gw_index; /* into the distinct gateways */
} entry;

static bool parse_entry(const redisReply *f, const redisReply *v, entry *e) {
  if (f->type != REDIS_REPLY_STRING || v->type != REDIS_REPLY_STRING || f->len == 0 ||
      f->len > 20 || strspn(f->str, "0123456789") != f->len)
    return false;
  const char *bar = NULL;
  for (size_t i = v->len; i > 0 && !bar; i--)
    if (v->str[i - 1] == '|')
      bar = v->str + i - 1;
  if (!bar || bar == v->str || bar + 1 == v->str + v->len)
    return false;
  *e = (entry){.conn = f->str,
               .conn_len = f->len,
               .user = v->str,
               .user_len = (size_t)(bar - v->str),
               .gw = bar + 1,
               .gw_len = (size_t)(v->str + v->len - bar - 1)};
  return true;
}

typedef struct {
  const char *prefix;
  const entry **gws; /* one entry naming each distinct gateway */
  char key[WSG_REDIS_KEY_MAX], id[256];
  const char *argv[3];
  size_t lens[3];
} gw_build;

static bool build_hget(void *ctx, size_t i, int *argc, const char ***argv, const size_t **lens) {
  gw_build *b = ctx;
  const entry *e = b->gws[i];
  snprintf(b->id, sizeof b->id, "%.*s", (int)e->gw_len, e->gw);
  int n = wsg_key_gateway(b->key, sizeof b->key, b->prefix, b->id);
  if (n < 0 || e->gw_len >= sizeof b->id)
    return false;
  b->argv[0] = "HGET";
  b->argv[1] = b->key;
  b->argv[2] = "slot";
  b->lens[0] = 4;
  b->lens[1] = (size_t)n;
  b->lens[2] = 4;
  *argc = 3;
  *argv = b->argv;
  *lens = b->lens;
  return true;
}

/* Marks the entries whose gateway has no record (its lease is gone) with gw_index -1. */
static int drop_dead(api_redis *r, entry *ents, size_t n, char *why, size_t whylen) {
  const entry **gws = malloc((n ? n : 1) * sizeof *gws);
  if (!gws) {
    snprintf(why, whylen, "out of memory");
    return -1;
  }
  size_t ngws = 0;
  for (size_t i = 0; i < n; i++) {
    size_t g = 0;
    while (g < ngws && !(gws[g]->gw_len == ents[i].gw_len &&
                         memcmp(gws[g]->gw, ents[i].gw, ents[i].gw_len) == 0))
      g++;
    if (g == ngws)
      gws[ngws++] = &ents[i];
    ents[i].gw_index = (int)g;
  }
  redisReply **reps = calloc(ngws ? ngws : 1, sizeof *reps);
  gw_build b = {.prefix = api_redis_prefix(r), .gws = gws};
  int rc = reps ? api_redis_pipeline(r, ngws, build_hget, &b, "HGET of the gateway records", reps,
                                     why, whylen)
                : -1;
  if (!reps)
    snprintf(why, whylen, "out of memory");
  for (size_t i = 0; rc == 0 && i < n; i++)
    if (reps[ents[i].gw_index]->type == REDIS_REPLY_NIL)
      ents[i].gw_index = -1;
  for (size_t g = 0; reps && g < ngws; g++)
    freeReplyObject(reps[g]);
  free(reps);
  free(gws);
  return rc;
}

/* The entries of fields/values pairs f[0], f[1], ... appended to *ents (at most `limit`). */
static void add_pairs(redisReply *const *f, size_t nf, entry *ents, size_t *n, size_t limit,
                      bool *more) {
  for (size_t i = 0; i + 1 < nf; i += 2) {
    if (*n == limit) {
      *more = true;
      return;
    }
    if (parse_entry(f[i], f[i + 1], &ents[*n]))
      (*n)++;
  }
}

json_t *api_presence_read(api_redis *r, const char *channel, size_t len, size_t limit, char *why,
                          size_t whylen) {
  char key[WSG_REDIS_KEY_MAX];
  if (wsg_key_channel(key, sizeof key, api_redis_prefix(r), channel, len, "p") < 0) {
    snprintf(why, whylen, "the channel's key does not fit (prefix too long)");
    return NULL;
  }
  redisReply *hlen = api_redis_command(r, why, whylen, 2, (const char *[]){"HLEN", key});
  if (!hlen)
    return NULL;
  bool small = hlen->type == REDIS_REPLY_INTEGER && hlen->integer >= 0 &&
               (unsigned long long)hlen->integer <= limit;
  freeReplyObject(hlen);
  /* Replies the entries point into, freed at the end. */
  redisReply *held[SCAN_ROUNDS] = {0};
  size_t nheld = 0, n = 0;
  bool more = false;
  entry *ents = malloc(limit * sizeof *ents);
  json_t *out = NULL;
  if (!ents) {
    snprintf(why, whylen, "out of memory");
    return NULL;
  }
  if (small) {
    /* All of it in one reply, no duplicates. */
    redisReply *rep = api_redis_command(r, why, whylen, 2, (const char *[]){"HGETALL", key});
    if (!rep)
      goto done;
    held[nheld++] = rep;
    if (rep->type == REDIS_REPLY_ARRAY)
      add_pairs(rep->element, rep->elements, ents, &n, limit, &more);
  } else {
    /* Pages until `limit`: bounded work on a huge channel; a resize between pages may repeat an
     * entry (HSCAN's guarantee), and "more" is set anyway. */
    char cursor[32] = "0", count[16];
    snprintf(count, sizeof count, "%zu", limit < 1000 ? limit : 1000);
    do {
      redisReply *rep = api_redis_command(r, why, whylen, 5,
                                          (const char *[]){"HSCAN", key, cursor, "COUNT", count});
      if (!rep)
        goto done;
      held[nheld++] = rep;
      if (rep->type != REDIS_REPLY_ARRAY || rep->elements != 2 ||
          rep->element[0]->type != REDIS_REPLY_STRING ||
          rep->element[1]->type != REDIS_REPLY_ARRAY) {
        snprintf(why, whylen, "HSCAN of %s: unexpected reply", key);
        goto done;
      }
      snprintf(cursor, sizeof cursor, "%s", rep->element[0]->str);
      add_pairs(rep->element[1]->element, rep->element[1]->elements, ents, &n, limit, &more);
    } while (!more && strcmp(cursor, "0") != 0 && n < limit && nheld < SCAN_ROUNDS);
    more = more || strcmp(cursor, "0") != 0;
  }
  if (drop_dead(r, ents, n, why, whylen) != 0)
    goto done;
  json_t *subs = json_array();
  for (size_t i = 0; subs && i < n; i++)
    if (ents[i].gw_index >= 0)
      json_array_append_new(
          subs, json_pack("{s:s%,s:s%,s:s%}", "user", ents[i].user, ents[i].user_len, "conn",
                          ents[i].conn, ents[i].conn_len, "gateway", ents[i].gw, ents[i].gw_len));
  out = json_pack("{s:s%,s:o,s:b}", "channel", channel, len, "subscribers", subs, "more", more);
  if (!out)
    snprintf(why, whylen, "out of memory");
done:
  for (size_t i = 0; i < nheld; i++)
    freeReplyObject(held[i]);
  free(ents);
  return out;
}

/* One history entry's payload as "data" (text that is valid UTF-8) or "data_base64". */
static int add_payload(json_t *o, const redisReply *d, bool binary) {
  if (!binary && wsg_utf8_valid(d->str, d->len))
    return json_object_set_new(o, "data", json_stringn(d->str, d->len));
  size_t cap = 4 * ((d->len + 2) / 3) + 1;
  char *b64 = malloc(cap);
  if (!b64)
    return -1;
  EVP_EncodeBlock((unsigned char *)b64, (const unsigned char *)d->str, (int)d->len);
  int rc = json_object_set_new(o, "data_base64", json_string(b64));
  free(b64);
  return rc;
}

static bool is_int(const redisReply *r) {
  return r->type == REDIS_REPLY_INTEGER && r->integer >= 0;
}

json_t *api_history_read(api_redis *r, const char *channel, size_t len, uint64_t since,
                         size_t limit, char *why, size_t whylen) {
  const char *prefix = api_redis_prefix(r);
  char m[WSG_REDIS_KEY_MAX], h[WSG_REDIS_KEY_MAX], after[24], maxn[16], maxb[16];
  if (wsg_key_channel(m, sizeof m, prefix, channel, len, "m") < 0 ||
      wsg_key_channel(h, sizeof h, prefix, channel, len, "h") < 0) {
    snprintf(why, whylen, "the channel's key does not fit (prefix too long)");
    return NULL;
  }
  snprintf(after, sizeof after, "%llu", (unsigned long long)since);
  snprintf(maxn, sizeof maxn, "%zu", limit);
  snprintf(maxb, sizeof maxb, "%u", API_HISTORY_MAX_BYTES);
  redisReply *rep = api_redis_command(
      r, why, whylen, 8,
      (const char *[]){"EVAL", WSG_LUA_CHANNEL_HISTORY, "2", m, h, after, maxn, maxb});
  if (!rep)
    return NULL;
  json_t *out = NULL;
  if (rep->type != REDIS_REPLY_ARRAY || rep->elements < 3 || (rep->elements - 3) % 3 != 0 ||
      !is_int(rep->element[0]) || !is_int(rep->element[1]) || !is_int(rep->element[2])) {
    snprintf(why, whylen, "the history script of %s answered something unexpected", h);
    goto done;
  }
  json_t *pubs = json_array();
  long long first = 0;
  for (size_t i = 3; pubs && i + 2 < rep->elements; i += 3) {
    const redisReply *off = rep->element[i], *bin = rep->element[i + 1], *d = rep->element[i + 2];
    if (!is_int(off) || !is_int(bin) || d->type != REDIS_REPLY_STRING) {
      snprintf(why, whylen, "the history script of %s answered something unexpected", h);
      json_decref(pubs);
      goto done;
    }
    if (!first)
      first = off->integer;
    json_t *p = json_pack("{s:I}", "offset", (json_int_t)off->integer);
    if (!p || add_payload(p, d, bin->integer == 1) != 0 || json_array_append_new(pubs, p) != 0) {
      json_decref(pubs);
      pubs = NULL;
    }
  }
  bool gap = first > 0 && (unsigned long long)first > since + 1;
  out =
      json_pack("{s:s%,s:I,s:I,s:b,s:b,s:o}", "channel", channel, len, "epoch",
                (json_int_t)rep->element[0]->integer, "last", (json_int_t)rep->element[1]->integer,
                "more", rep->element[2]->integer == 1, "gap", gap, "publications", pubs);
  if (!out)
    snprintf(why, whylen, "out of memory");
done:
  freeReplyObject(rep);
  return out;
}
