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

/* Member i of a presence read: <gw id>#<boot> (a reply string) and what its lease says. */
typedef struct {
  const redisReply *id;
  bool dead;
} gw_seen;

typedef struct {
  const char *prefix;
  const gw_seen *gws;
  char key[WSG_REDIS_KEY_MAX], id[256];
  const char *argv[3];
  size_t lens[3];
} gw_build;

static bool build_hget(void *ctx, size_t i, int *argc, const char ***argv, const size_t **lens) {
  gw_build *b = ctx;
  const redisReply *m = b->gws[i].id;
  size_t gl;
  const char *boot;
  /* Not a member: the whole string's record is read (one reply per member keeps the pipeline's
   * shape); check_leases finds it dead whatever it says. */
  if (!wsg_presence_member_split(m->str, m->len, &gl, &boot))
    gl = m->len;
  if (gl >= sizeof b->id)
    return false;
  snprintf(b->id, sizeof b->id, "%.*s", (int)gl, m->str);
  int n = wsg_key_gateway(b->key, sizeof b->key, b->prefix, b->id);
  if (n < 0)
    return false;
  b->argv[0] = "HGET";
  b->argv[1] = b->key;
  b->argv[2] = "boot";
  b->lens[0] = 4;
  b->lens[1] = (size_t)n;
  b->lens[2] = 4;
  *argc = 3;
  *argv = b->argv;
  *lens = b->lens;
  return true;
}

/* Marks dead the members whose gateway's record is gone (their lease expired) or names another
 * boot (it restarted); then deletes their hashes and counts, best effort (the next reader
 * retries; *cleanup says whether it failed). */
_Static_assert(5 + WSG_PRESENCE_GWS_MAX <= API_REDIS_ARGS_MAX, "a DROP of every member read fits");

static int check_leases(api_redis *r, gw_seen *gws, size_t n, const char *kp, const char *kc,
                        api_presence_cleanup *cleanup, char *why, size_t whylen) {
  if (n == 0)
    return 0;
  redisReply **reps = calloc(n, sizeof *reps);
  gw_build b = {.prefix = api_redis_prefix(r), .gws = gws};
  if (!reps) {
    snprintf(why, whylen, "out of memory");
    return -1;
  }
  int rc =
      api_redis_pipeline(r, n, build_hget, &b, "HGET of the gateway records", reps, why, whylen);
  const char *argv[5 + WSG_PRESENCE_GWS_MAX] = {"EVAL", WSG_LUA_PRESENCE_DROP, "2", kp, kc};
  int argc = 5;
  for (size_t g = 0; rc == 0 && g < n; g++) {
    const redisReply *m = gws[g].id, *boot = reps[g];
    size_t gl;
    const char *mine;
    gws[g].dead = boot->type != REDIS_REPLY_STRING || boot->len != WSG_GW_BOOT_LEN ||
                  !wsg_presence_member_split(m->str, m->len, &gl, &mine) ||
                  memcmp(mine, boot->str, WSG_GW_BOOT_LEN) != 0;
    if (gws[g].dead)
      argv[argc++] = m->str;
  }
  for (size_t g = 0; g < n; g++)
    freeReplyObject(reps[g]);
  free(reps);
  if (argc > 5) {
    redisReply *drop =
        api_redis_command(r, cleanup->drop_why, sizeof cleanup->drop_why, argc, argv);
    cleanup->dropped = true;
    cleanup->drop_failed = drop == NULL;
    freeReplyObject(drop);
  }
  return rc;
}

static const gw_seen *gw_find(const gw_seen *gws, size_t n, const char *id, size_t len) {
  for (size_t g = 0; g < n; g++)
    if (gws[g].id->len == len && memcmp(gws[g].id->str, id, len) == 0)
      return &gws[g];
  return NULL;
}

static bool is_int(const redisReply *r) {
  return r->type == REDIS_REPLY_INTEGER && r->integer >= 0;
}

json_t *api_presence_read(api_redis *r, const char *channel, size_t len, size_t limit,
                          api_presence_cleanup *cleanup, char *why, size_t whylen) {
  *cleanup = (api_presence_cleanup){0};
  const char *prefix = api_redis_prefix(r);
  char kp[WSG_REDIS_KEY_MAX], kc[WSG_REDIS_KEY_MAX], cap[16];
  if (wsg_key_channel(kp, sizeof kp, prefix, channel, len, "p") < 0 ||
      wsg_key_channel(kc, sizeof kc, prefix, channel, len, "pc") < 0) {
    snprintf(why, whylen, "the channel's key does not fit (prefix too long)");
    return NULL;
  }
  snprintf(cap, sizeof cap, "%zu", limit);
  redisReply *rep = api_redis_command(
      r, why, whylen, 8,
      (const char *[]){"EVAL", WSG_LUA_PRESENCE_READ, "2", kp, kc, cap, cap, "e"});
  if (!rep)
    return NULL;
  json_t *out = NULL;
  size_t ngws = rep->type == REDIS_REPLY_ARRAY && rep->elements >= 2 && is_int(rep->element[0]) &&
                        is_int(rep->element[1])
                    ? (size_t)rep->element[1]->integer
                    : SIZE_MAX;
  if (ngws > WSG_PRESENCE_GWS_MAX || rep->elements < 2 + 2 * ngws ||
      (rep->elements - 2 - 2 * ngws) % 2 != 0) {
    snprintf(why, whylen, "the presence script of %s answered something unexpected", kp);
    goto done;
  }
  gw_seen gws[WSG_PRESENCE_GWS_MAX];
  size_t n = 0;
  for (size_t g = 0; g < ngws; g++)
    if (rep->element[2 + 2 * g]->type == REDIS_REPLY_STRING && rep->element[2 + 2 * g]->len > 0 &&
        is_int(rep->element[3 + 2 * g]))
      gws[n++] = (gw_seen){rep->element[2 + 2 * g], false};
  if (check_leases(r, gws, n, kp, kc, cleanup, why, whylen) != 0)
    goto done;
  /* connections: exact, from the counts of live gateways; subscribers: the entries read, of
   * live gateways :pc counts (an entry naming another is not trusted, as in the gateway op). */
  long long conns = 0;
  for (size_t g = 0; g < ngws; g++) {
    const redisReply *id = rep->element[2 + 2 * g];
    const gw_seen *seen = id->type == REDIS_REPLY_STRING ? gw_find(gws, n, id->str, id->len) : NULL;
    if (seen && !seen->dead)
      conns += rep->element[3 + 2 * g]->integer;
  }
  json_t *subs = json_array();
  for (size_t i = 2 + 2 * ngws; subs && i + 1 < rep->elements; i += 2) {
    const redisReply *f = rep->element[i], *v = rep->element[i + 1];
    size_t ulen, gwlen;
    const char *gw;
    if (f->type != REDIS_REPLY_STRING || v->type != REDIS_REPLY_STRING || f->len == 0 ||
        f->len > 20 || strspn(f->str, "0123456789") != f->len ||
        !wsg_presence_split(v->str, v->len, &ulen, &gw, &gwlen))
      continue;
    const gw_seen *seen = gw_find(gws, n, gw, gwlen);
    const char *boot;
    size_t idlen;
    if (seen && !seen->dead && wsg_presence_member_split(gw, gwlen, &idlen, &boot))
      json_array_append_new(subs, json_pack("{s:s%,s:s%,s:s%}", "user", v->str, ulen, "conn",
                                            f->str, f->len, "gateway", gw, idlen));
  }
  out = json_pack("{s:s%,s:I,s:o,s:b}", "channel", channel, len, "connections", (json_int_t)conns,
                  "subscribers", subs, "more", rep->element[0]->integer != 0);
  if (!out)
    snprintf(why, whylen, "out of memory");
done:
  freeReplyObject(rep);
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
