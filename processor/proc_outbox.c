/*
 * proc_outbox: a batch's recorded actions and their encoding into outbound envelopes (see
 * proc_outbox.h).
 *
 * Everything variable-length (payloads, user ids, gateway ids, reasons) lives in one byte area and
 * is referred to by offset, so growing the area never invalidates a recorded action.
 *
 * Threads: the consumer thread.
 */
#include "proc_outbox.h"

#include <stdlib.h>
#include <string.h>

#include "proc_publish.h"
#include "proc_util.h"
#include "wsg_log.h"

/* Bytes of an envelope besides its payload and connection list: keys, version, kind, `g` (at most
 * WSG_MAX_GATEWAY_LEN), slot, ts, the bin and array headers. Generous on purpose. */
#define ENVELOPE_OVERHEAD 1024
/* Largest MessagePack encoding of one target: its connection id in `cs` and its q in `qs`
 * (uint64: 0xcf + 8 bytes each). */
#define TARGET_MAX_BYTES 18

typedef enum {
  OUT_REPLY,
  OUT_CLOSE,
  OUT_SEND,
  OUT_CLOSE_USERS,
  OUT_PUBLISH,
  OUT_CHSUB,       /* (un)subscribe the origin connection */
  OUT_CHSUB_USERS, /* (un)subscribe every connection of users */
} out_kind;

typedef struct {
  out_kind kind;
  uint32_t rec;
  /* origin (REPLY, CLOSE; SEND when it has a fallback) */
  size_t gw_off;
  uint16_t gw_len;
  uint32_t slot;
  uint64_t conn;
  /* payload (REPLY, SEND) */
  size_t data_off, data_len;
  bool binary;
  /* users (SEND, CLOSE_USERS): urefs[uref_off .. uref_off + nusers) */
  size_t uref_off;
  uint32_t nusers;
  /* SEND: its deliveries are appends[append_off .. append_off + nusers) */
  size_t append_off;
  /* fallback reply (SEND to one user) */
  bool has_fallback;
  bool fb_binary;
  size_t fb_off, fb_len;
  /* close (CLOSE, CLOSE_USERS) */
  uint16_t code;
  size_t reason_off, reason_len;
  /* PUBLISH, CHSUB, CHSUB_USERS: the channel is at reason_off (reason_len bytes) */
  size_t pub;       /* PUBLISH: it is pubs[pub] */
  bool joinleave;   /* PUBLISH: a batch of join/leave events, not a publication */
  bool unsubscribe; /* CHSUB, CHSUB_USERS */
  /* CHSUB answering a subscribe_request: its token, and the refusal at fb_off (fb_len bytes) */
  bool has_rq, refused;
  uint64_t rq;
} out;

typedef struct {
  size_t off, len;
  uint64_t hash;
} user_ent;

typedef struct {
  uint32_t gw;
  uint64_t conn;
  uint64_t q;
} pair;

struct proc_outbox {
  out *outs;
  size_t nouts, outs_cap;
  uint8_t *bytes;
  size_t nbytes, bytes_cap;
  uint32_t *urefs;
  size_t nurefs, urefs_cap;
  user_ent *users;
  size_t nusers, users_cap;
  uint32_t *uindex; /* open addressing over users: index + 1, 0 = empty */
  size_t uindex_cap;
  proc_strref *views; /* proc_outbox_users()' answer */
  size_t views_cap;
  /* deliveries to users: counted as sends are recorded, listed by proc_outbox_appends() */
  size_t nappends;
  proc_append *appends;
  size_t appends_cap, appends_len; /* appends_len == nappends: the list is current */
  /* publications: counted as recorded, listed by proc_outbox_pubs() */
  size_t npubs;
  proc_pub *pubs;
  size_t pubs_cap, pubs_len; /* pubs_len == npubs: the list is current */
  /* emit scratch */
  pair *pairs;
  size_t pairs_cap;
  uint64_t *ids, *qids;
  size_t ids_cap, qids_cap;
  wsg_buf env;
  wsg_log_ratelimit rl;
};

proc_outbox *proc_outbox_create(void) {
  proc_outbox *b = calloc(1, sizeof(*b));
  if (!b)
    return NULL;
  wsg_buf_init(&b->env, 0);
  return b;
}

void proc_outbox_destroy(proc_outbox *b) {
  if (!b)
    return;
  free(b->outs);
  free(b->bytes);
  free(b->urefs);
  free(b->users);
  free(b->uindex);
  free(b->views);
  free(b->pairs);
  free(b->ids);
  free(b->qids);
  free(b->appends);
  free(b->pubs);
  wsg_buf_finish(&b->env);
  free(b);
}

void proc_outbox_reset(proc_outbox *b) {
  b->nouts = b->nbytes = b->nurefs = 0;
  b->nappends = b->appends_len = 0;
  b->npubs = b->pubs_len = 0;
  if (b->nusers && b->uindex)
    memset(b->uindex, 0, b->uindex_cap * sizeof(uint32_t));
  b->nusers = 0;
}

size_t proc_outbox_count(const proc_outbox *b) {
  return b->nouts;
}

size_t proc_outbox_bytes(const proc_outbox *b) {
  return b->nbytes + b->nusers * sizeof(user_ent) + b->nouts * sizeof(out);
}

/* Copies `len` bytes into the byte area; *off receives where. */
static int put_bytes(proc_outbox *b, const void *p, size_t len, size_t *off) {
  if (proc__reserve((void **)&b->bytes, &b->bytes_cap, b->nbytes + len + 1, 1) != 0)
    return -1;
  *off = b->nbytes;
  if (len)
    memcpy(b->bytes + b->nbytes, p, len);
  b->nbytes += len;
  return 0;
}

static void index_insert(proc_outbox *b, uint32_t idx) {
  size_t mask = b->uindex_cap - 1;
  size_t i = (size_t)b->users[idx].hash & mask;
  while (b->uindex[i] != 0)
    i = (i + 1) & mask;
  b->uindex[i] = idx + 1;
}

/* Rebuilds the index at `cap` slots (a power of two) from users[0..nusers). */
static int index_rebuild(proc_outbox *b, size_t cap) {
  if (cap != b->uindex_cap) {
    uint32_t *n = calloc(cap, sizeof(uint32_t));
    if (!n)
      return -1;
    free(b->uindex);
    b->uindex = n;
    b->uindex_cap = cap;
  } else {
    memset(b->uindex, 0, cap * sizeof(uint32_t));
  }
  for (size_t u = 0; u < b->nusers; u++)
    index_insert(b, (uint32_t)u);
  return 0;
}

/* The batch-wide index of user `s`, adding it if new; -1 when out of memory. */
static int64_t user_ref(proc_outbox *b, const char *s, size_t len) {
  if (b->nusers >= UINT32_MAX - 1)
    return -1;
  if ((b->nusers + 1) * 2 > b->uindex_cap) {
    size_t cap = b->uindex_cap ? b->uindex_cap * 2 : 256;
    if (index_rebuild(b, cap) != 0)
      return -1;
  }
  uint64_t h = proc__hash(s, len);
  size_t mask = b->uindex_cap - 1;
  size_t i = (size_t)h & mask;
  while (b->uindex[i] != 0) {
    user_ent *e = &b->users[b->uindex[i] - 1];
    if (e->hash == h && e->len == len && memcmp(b->bytes + e->off, s, len) == 0)
      return b->uindex[i] - 1;
    i = (i + 1) & mask;
  }
  if (proc__reserve((void **)&b->users, &b->users_cap, b->nusers + 1, sizeof(user_ent)) != 0)
    return -1;
  size_t off;
  if (put_bytes(b, s, len, &off) != 0)
    return -1;
  b->users[b->nusers] = (user_ent){.off = off, .len = len, .hash = h};
  b->uindex[i] = (uint32_t)(b->nusers + 1);
  return (int64_t)b->nusers++;
}

proc_outbox_mark proc_outbox_get_mark(const proc_outbox *b) {
  return (proc_outbox_mark){.outs = b->nouts,
                            .bytes = b->nbytes,
                            .urefs = b->nurefs,
                            .users = b->nusers,
                            .appends = b->nappends,
                            .pubs = b->npubs};
}

void proc_outbox_rollback(proc_outbox *b, proc_outbox_mark m) {
  b->nouts = m.outs;
  b->nappends = m.appends;
  b->appends_len = 0; /* a list built before is stale now */
  b->npubs = m.pubs;
  b->pubs_len = 0;
  b->nbytes = m.bytes;
  b->nurefs = m.urefs;
  if (b->nusers != m.users) {
    b->nusers = m.users;
    if (b->uindex_cap)
      index_rebuild(b, b->uindex_cap); /* same size: cannot fail */
  }
}

static out *new_out(proc_outbox *b, out_kind kind, uint32_t rec) {
  if (proc__reserve((void **)&b->outs, &b->outs_cap, b->nouts + 1, sizeof(out)) != 0)
    return NULL;
  out *o = &b->outs[b->nouts];
  memset(o, 0, sizeof(*o));
  o->kind = kind;
  o->rec = rec;
  return o;
}

static int set_origin(proc_outbox *b, out *o, const proc_origin *orig) {
  o->slot = orig->slot;
  o->conn = orig->conn;
  o->gw_len = (uint16_t)orig->gateway_len;
  return put_bytes(b, orig->gateway, orig->gateway_len, &o->gw_off);
}

int proc_outbox_reply(proc_outbox *b, uint32_t rec, const proc_origin *orig, const void *data,
                      size_t len, bool binary) {
  proc_outbox_mark m = proc_outbox_get_mark(b);
  out *o = new_out(b, OUT_REPLY, rec);
  if (!o || set_origin(b, o, orig) != 0 || put_bytes(b, data, len, &o->data_off) != 0) {
    proc_outbox_rollback(b, m);
    return -1;
  }
  o->data_len = len;
  o->binary = binary;
  b->nouts++;
  return 0;
}

int proc_outbox_close(proc_outbox *b, uint32_t rec, const proc_origin *orig, uint16_t code,
                      const char *reason, size_t reason_len) {
  proc_outbox_mark m = proc_outbox_get_mark(b);
  out *o = new_out(b, OUT_CLOSE, rec);
  if (!o || set_origin(b, o, orig) != 0 || put_bytes(b, reason, reason_len, &o->reason_off) != 0) {
    proc_outbox_rollback(b, m);
    return -1;
  }
  o->code = code;
  o->reason_len = reason_len;
  b->nouts++;
  return 0;
}

static int cmp_u32(const void *a, const void *b) {
  uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
  return x < y ? -1 : x > y;
}

/* Records users[] as batch-wide references, sorted and without duplicates. */
static int add_users(proc_outbox *b, out *o, const proc_strref *users, size_t n) {
  if (proc__reserve((void **)&b->urefs, &b->urefs_cap, b->nurefs + n, sizeof(uint32_t)) != 0)
    return -1;
  o->uref_off = b->nurefs;
  uint32_t *refs = b->urefs + b->nurefs;
  for (size_t i = 0; i < n; i++) {
    int64_t r = user_ref(b, users[i].ptr, users[i].len);
    if (r < 0)
      return -1;
    refs[i] = (uint32_t)r;
  }
  if (n > 1)
    qsort(refs, n, sizeof(uint32_t), cmp_u32);
  size_t k = 0;
  for (size_t i = 0; i < n; i++)
    if (k == 0 || refs[k - 1] != refs[i])
      refs[k++] = refs[i];
  o->nusers = (uint32_t)k;
  b->nurefs += k;
  return 0;
}

int proc_outbox_send(proc_outbox *b, uint32_t rec, const proc_strref *users, size_t n,
                     const void *data, size_t len, bool binary, const proc_origin *orig,
                     const void *fallback, size_t fallback_len, bool fallback_binary) {
  proc_outbox_mark m = proc_outbox_get_mark(b);
  /* `o` is re-fetched after add_users/put_bytes: none of them moves outs[], but keep it plain. */
  out *o = new_out(b, OUT_SEND, rec);
  if (!o)
    return -1;
  size_t data_off;
  if (put_bytes(b, data, len, &data_off) != 0 || add_users(b, &b->outs[b->nouts], users, n) != 0)
    goto fail;
  o = &b->outs[b->nouts];
  o->data_off = data_off;
  o->data_len = len;
  o->binary = binary;
  o->append_off = b->nappends;
  if (fallback && orig) {
    size_t fb_off;
    if (set_origin(b, o, orig) != 0 || put_bytes(b, fallback, fallback_len, &fb_off) != 0)
      goto fail;
    o->has_fallback = true;
    o->fb_off = fb_off;
    o->fb_len = fallback_len;
    o->fb_binary = fallback_binary;
  }
  b->nappends += o->nusers;
  b->appends_len = 0;
  b->nouts++;
  return 0;
fail:
  proc_outbox_rollback(b, m);
  return -1;
}

int proc_outbox_close_users(proc_outbox *b, uint32_t rec, const proc_strref *users, size_t n,
                            uint16_t code, const char *reason, size_t reason_len) {
  proc_outbox_mark m = proc_outbox_get_mark(b);
  out *o = new_out(b, OUT_CLOSE_USERS, rec);
  if (!o)
    return -1;
  size_t reason_off;
  if (put_bytes(b, reason, reason_len, &reason_off) != 0 ||
      add_users(b, &b->outs[b->nouts], users, n) != 0) {
    proc_outbox_rollback(b, m);
    return -1;
  }
  o = &b->outs[b->nouts];
  o->code = code;
  o->reason_off = reason_off;
  o->reason_len = reason_len;
  b->nouts++;
  return 0;
}

int proc_outbox_publish(proc_outbox *b, uint32_t rec, const char *channel, size_t channel_len,
                        const void *data, size_t len, bool binary) {
  proc_outbox_mark m = proc_outbox_get_mark(b);
  out *o = new_out(b, OUT_PUBLISH, rec);
  size_t ch_off, data_off;
  if (!o || put_bytes(b, channel, channel_len, &ch_off) != 0 ||
      put_bytes(b, data, len, &data_off) != 0) {
    proc_outbox_rollback(b, m);
    return -1;
  }
  o = &b->outs[b->nouts];
  o->reason_off = ch_off;
  o->reason_len = channel_len;
  o->data_off = data_off;
  o->data_len = len;
  o->binary = binary;
  o->pub = b->npubs++;
  b->pubs_len = 0;
  b->nouts++;
  return 0;
}

int proc_outbox_joinleave(proc_outbox *b, uint32_t rec, const char *channel, size_t channel_len,
                          const void *data, size_t len) {
  if (proc_outbox_publish(b, rec, channel, channel_len, data, len, true) != 0)
    return -1;
  b->outs[b->nouts - 1].joinleave = true;
  return 0;
}

int proc_outbox_chsub(proc_outbox *b, uint32_t rec, const proc_origin *orig,
                      const proc_strref *users, size_t n, const char *channel, size_t channel_len,
                      bool subscribe) {
  proc_outbox_mark m = proc_outbox_get_mark(b);
  out *o = new_out(b, orig ? OUT_CHSUB : OUT_CHSUB_USERS, rec);
  size_t ch_off;
  if (!o || put_bytes(b, channel, channel_len, &ch_off) != 0 ||
      (orig ? set_origin(b, &b->outs[b->nouts], orig)
            : add_users(b, &b->outs[b->nouts], users, n)) != 0) {
    proc_outbox_rollback(b, m);
    return -1;
  }
  o = &b->outs[b->nouts];
  o->reason_off = ch_off;
  o->reason_len = channel_len;
  o->unsubscribe = !subscribe;
  b->nouts++;
  return 0;
}

int proc_outbox_chsub_answer(proc_outbox *b, uint32_t rec, const proc_origin *orig,
                             const char *channel, size_t channel_len, uint64_t rq,
                             const char *refusal, size_t refusal_len) {
  proc_outbox_mark m = proc_outbox_get_mark(b);
  if (proc_outbox_chsub(b, rec, orig, NULL, 0, channel, channel_len, true) != 0)
    return -1;
  out *o = &b->outs[b->nouts - 1];
  o->has_rq = true;
  o->rq = rq;
  if (refusal) {
    size_t off;
    if (put_bytes(b, refusal, refusal_len, &off) != 0) {
      proc_outbox_rollback(b, m);
      return -1;
    }
    o = &b->outs[b->nouts - 1];
    o->refused = true;
    o->fb_off = off;
    o->fb_len = refusal_len;
  }
  return 0;
}

proc_pub *proc_outbox_pubs(proc_outbox *b, size_t *n) {
  *n = 0;
  if (b->npubs == 0)
    return NULL;
  if (proc__reserve((void **)&b->pubs, &b->pubs_cap, b->npubs, sizeof(proc_pub)) != 0)
    return NULL;
  for (size_t i = 0; i < b->nouts; i++) {
    const out *o = &b->outs[i];
    if (o->kind == OUT_PUBLISH)
      b->pubs[o->pub] = (proc_pub){.channel = (const char *)b->bytes + o->reason_off,
                                   .channel_len = o->reason_len,
                                   .data = b->bytes + o->data_off,
                                   .len = o->data_len,
                                   .binary = o->binary,
                                   .joinleave = o->joinleave};
  }
  b->pubs_len = b->npubs;
  *n = b->npubs;
  return b->pubs;
}

const proc_strref *proc_outbox_users(proc_outbox *b, size_t *n) {
  *n = b->nusers;
  if (b->nusers == 0)
    return NULL;
  if (proc__reserve((void **)&b->views, &b->views_cap, b->nusers, sizeof(proc_strref)) != 0) {
    *n = 0;
    return NULL;
  }
  for (size_t u = 0; u < b->nusers; u++)
    b->views[u] =
        (proc_strref){.ptr = (const char *)b->bytes + b->users[u].off, .len = b->users[u].len};
  return b->views;
}

proc_append *proc_outbox_appends(proc_outbox *b, size_t *n) {
  *n = 0;
  if (b->nappends == 0)
    return NULL;
  if (proc__reserve((void **)&b->appends, &b->appends_cap, b->nappends, sizeof(proc_append)) != 0)
    return NULL;
  size_t k = 0;
  for (size_t i = 0; i < b->nouts; i++) {
    const out *o = &b->outs[i];
    if (o->kind != OUT_SEND)
      continue;
    for (uint32_t u = 0; u < o->nusers; u++)
      b->appends[k++] = (proc_append){.user = b->urefs[o->uref_off + u],
                                      .data = b->bytes + o->data_off,
                                      .len = o->data_len,
                                      .binary = o->binary};
  }
  b->appends_len = k;
  *n = k;
  return b->appends;
}

/* --- emitting ------------------------------------------------------------------------------ */

typedef struct {
  proc_outbox *b;
  proc_emit_fn emit;
  void *arg;
  proc_emit_stats *stats;
  uint64_t now_us;
} emitter;

static int encode_emit(emitter *em, uint32_t rec, const wsg_envelope *env, int32_t partition) {
  int rc = wsg_envelope_encode(env, &em->b->env);
  if (rc != WSG_ENV_OK) {
    /* Everything was validated when it was recorded; reaching this is a bug, not bad input. */
    em->stats->invalid++;
    wsg_log_limited(&em->b->rl, 1, em->now_us / 1000, WSG_LOG_ERROR, "outbox",
                    "cannot encode a %s envelope for gateway %.*s: %s; dropped",
                    wsg_env_kind_name(env->kind), (int)env->gateway_len, env->gateway,
                    wsg_env_strerror(rc));
    return 0;
  }
  em->stats->envelopes++;
  return em->emit(em->arg, rec, env->gateway, env->gateway_len, partition, em->b->env.data,
                  em->b->env.len);
}

static int emit_deliver_one(emitter *em, const out *o, const char *gw, size_t gw_len, uint32_t slot,
                            uint64_t conn, uint64_t q, size_t data_off, size_t data_len,
                            bool binary) {
  wsg_envelope env = {
      .kind = WSG_ENV_DELIVER,
      .fields = WSG_F_GATEWAY | WSG_F_SLOT | WSG_F_CONN | WSG_F_TS | WSG_F_DATA | WSG_F_BINARY |
                (q ? WSG_F_USEQ : 0),
      .user_seq = q,
      .gateway = gw,
      .gateway_len = gw_len,
      .slot = slot,
      .conn = conn,
      .ts_us = em->now_us,
      .data = em->b->bytes + data_off,
      .data_len = data_len,
      .binary = binary,
  };
  em->stats->deliveries++;
  return encode_emit(em, o->rec, &env, (int32_t)slot);
}

static int cmp_pair(const void *a, const void *b) {
  const pair *x = a, *y = b;
  if (x->gw != y->gw)
    return x->gw < y->gw ? -1 : 1;
  return x->conn < y->conn ? -1 : x->conn > y->conn;
}

/* Collects (gateway, connection) for every user of `o`; counts users without any. Fallback
 * replies go out here, in order. */
static int collect(emitter *em, const out *o, const proc_routes *rt, size_t *npairs) {
  proc_outbox *b = em->b;
  *npairs = 0;
  for (uint32_t i = 0; i < o->nusers; i++) {
    uint32_t u = b->urefs[o->uref_off + i];
    uint32_t cnt = rt ? rt->count[u] : 0;
    if (cnt == 0) {
      em->stats->undeliverable++;
      if (o->kind == OUT_SEND && o->has_fallback) {
        em->stats->fallbacks++;
        int rc = emit_deliver_one(em, o, (const char *)b->bytes + o->gw_off, o->gw_len, o->slot,
                                  o->conn, 0, o->fb_off, o->fb_len, o->fb_binary);
        if (rc != 0)
          return rc;
      }
      continue;
    }
    if (proc__reserve((void **)&b->pairs, &b->pairs_cap, *npairs + cnt, sizeof(pair)) != 0)
      return -1;
    /* The user's q, when this send was numbered (proc_outbox_appends, then the router). */
    uint64_t q =
        o->kind == OUT_SEND && b->appends_len == b->nappends ? b->appends[o->append_off + i].q : 0;
    for (uint32_t k = 0; k < cnt; k++) {
      const proc_target *t = &rt->targets[rt->first[u] + k];
      b->pairs[(*npairs)++] = (pair){.gw = t->gw, .conn = t->conn, .q = q};
    }
  }
  if (*npairs > 1)
    qsort(b->pairs, *npairs, sizeof(pair), cmp_pair);
  return 0;
}

/* Writes the envelope for one gateway's share of o's targets, ids[0..n) (and qids[0..n)). */
typedef int (*group_fn)(emitter *em, const out *o, const proc_route_gw *g, size_t n,
                        bool sequenced);

/* Groups o's targets by gateway, `per_env` connections at most per envelope, and calls `fn` for
 * each group: one record per gateway unless the list would not fit one. */
static int emit_groups(emitter *em, const out *o, const proc_routes *rt, size_t per_env,
                       group_fn fn) {
  proc_outbox *b = em->b;
  size_t npairs;
  int rc = collect(em, o, rt, &npairs);
  if (rc != 0)
    return rc;
  size_t want = per_env < npairs ? per_env : npairs + 1;
  if (proc__reserve((void **)&b->ids, &b->ids_cap, want, sizeof(uint64_t)) != 0 ||
      proc__reserve((void **)&b->qids, &b->qids_cap, want, sizeof(uint64_t)) != 0)
    return -1;
  size_t i = 0;
  while (i < npairs) {
    uint32_t gw = b->pairs[i].gw;
    size_t n = 0;
    bool sequenced = false;
    while (i < npairs && b->pairs[i].gw == gw && n < per_env) {
      if (n == 0 || b->ids[n - 1] != b->pairs[i].conn) {
        b->ids[n] = b->pairs[i].conn;
        b->qids[n++] = b->pairs[i].q;
        sequenced |= b->pairs[i].q != 0;
      }
      i++;
    }
    if ((rc = fn(em, o, &rt->gws[gw], n, sequenced)) != 0)
      return rc;
  }
  return 0;
}

/* Connections one envelope may list besides `fixed` bytes of payload and channel. */
static size_t per_envelope(size_t max_record, size_t fixed) {
  size_t room = max_record > fixed + ENVELOPE_OVERHEAD
                    ? (max_record - fixed - ENVELOPE_OVERHEAD) / TARGET_MAX_BYTES
                    : 1;
  return room < 1 ? 1 : room > WSG_MAX_CONNS ? WSG_MAX_CONNS : room;
}

static int send_group(emitter *em, const out *o, const proc_route_gw *g, size_t n, bool sequenced) {
  proc_outbox *b = em->b;
  if (n == 1)
    return emit_deliver_one(em, o, g->id, g->len, (uint32_t)g->slot, b->ids[0], b->qids[0],
                            o->data_off, o->data_len, o->binary);
  wsg_envelope env = {
      .kind = WSG_ENV_DELIVER,
      .fields = WSG_F_GATEWAY | WSG_F_SLOT | WSG_F_CONNS | WSG_F_TS | WSG_F_DATA | WSG_F_BINARY |
                (sequenced ? WSG_F_USEQS : 0),
      .gateway = g->id,
      .gateway_len = g->len,
      .slot = (uint32_t)g->slot,
      .conn_ids = b->ids,
      .conns = {.count = (uint32_t)n},
      .useq_ids = b->qids,
      .useqs = {.count = (uint32_t)n},
      .ts_us = em->now_us,
      .data = b->bytes + o->data_off,
      .data_len = o->data_len,
      .binary = o->binary,
  };
  em->stats->deliveries += n;
  return encode_emit(em, o->rec, &env, g->slot);
}

static int emit_send(emitter *em, const out *o, const proc_routes *rt, size_t max_record) {
  return emit_groups(em, o, rt, per_envelope(max_record, o->data_len), send_group);
}

/* A `subscribe` / `unsubscribe` to `conn` (n == 0) or to ids[0..n) of one gateway. */
static int emit_chsub(emitter *em, const out *o, const char *gw, size_t gw_len, uint32_t slot,
                      uint64_t conn, size_t n) {
  proc_outbox *b = em->b;
  wsg_envelope env = {
      .kind = o->unsubscribe ? WSG_ENV_UNSUBSCRIBE : WSG_ENV_SUBSCRIBE,
      .fields = WSG_F_GATEWAY | WSG_F_SLOT | WSG_F_CHANNEL | WSG_F_TS |
                (n > 1 ? WSG_F_CONNS : WSG_F_CONN),
      .gateway = gw,
      .gateway_len = gw_len,
      .slot = slot,
      .conn = n == 1 ? b->ids[0] : conn,
      .conn_ids = b->ids,
      .conns = {.count = (uint32_t)n},
      .channel = (const char *)b->bytes + o->reason_off,
      .channel_len = o->reason_len,
      .ts_us = em->now_us,
      .request = o->rq,
      .refusal = (const char *)b->bytes + o->fb_off,
      .refusal_len = o->fb_len,
  };
  if (o->has_rq)
    env.fields |= WSG_F_REQUEST | (o->refused ? WSG_F_REFUSAL : 0);
  return encode_emit(em, o->rec, &env, (int32_t)slot);
}

static int chsub_group(emitter *em, const out *o, const proc_route_gw *g, size_t n,
                       bool sequenced) {
  (void)sequenced;
  return emit_chsub(em, o, g->id, g->len, (uint32_t)g->slot, 0, n);
}

static int emit_close(emitter *em, const out *o, const char *gw, size_t gw_len, uint32_t slot,
                      uint64_t conn) {
  wsg_envelope env = {
      .kind = WSG_ENV_CLOSE,
      .fields = WSG_F_GATEWAY | WSG_F_SLOT | WSG_F_CONN | WSG_F_TS | WSG_F_CLOSE_CODE,
      .gateway = gw,
      .gateway_len = gw_len,
      .slot = slot,
      .conn = conn,
      .ts_us = em->now_us,
      .close_code = o->code,
  };
  if (o->reason_len) {
    env.fields |= WSG_F_CLOSE_REASON;
    env.close_reason = (const char *)em->b->bytes + o->reason_off;
    env.close_reason_len = o->reason_len;
  }
  return encode_emit(em, o->rec, &env, (int32_t)slot);
}

static int emit_close_users(emitter *em, const out *o, const proc_routes *rt) {
  size_t npairs;
  int rc = collect(em, o, rt, &npairs);
  for (size_t i = 0; i < npairs && rc == 0; i++) {
    const proc_route_gw *g = &rt->gws[em->b->pairs[i].gw];
    rc = emit_close(em, o, g->id, g->len, (uint32_t)g->slot, em->b->pairs[i].conn);
  }
  return rc;
}

/* One `publish` per gateway with subscribers, once proc_publish_store() numbered it. */
static int emit_publish(emitter *em, const out *o) {
  proc_outbox *b = em->b;
  if (b->pubs_len != b->npubs)
    return 0; /* never stored: nothing to send */
  const proc_pub *p = &b->pubs[o->pub];
  for (uint32_t g = 0; g < p->ngws && p->offset; g++) {
    int rc = proc_publish_encode(p, &p->gws[g], em->now_us, &b->env);
    if (rc != WSG_ENV_OK) {
      em->stats->invalid++;
      continue;
    }
    em->stats->envelopes++;
    if ((rc = em->emit(em->arg, o->rec, p->gws[g].id, p->gws[g].len, p->gws[g].slot, b->env.data,
                       b->env.len)) != 0)
      return rc;
  }
  return 0;
}

int proc_outbox_emit(proc_outbox *b, const proc_routes *routes, size_t max_record, uint64_t now_us,
                     proc_emit_fn emit, void *arg, proc_emit_stats *stats) {
  emitter em = {.b = b, .emit = emit, .arg = arg, .stats = stats, .now_us = now_us};
  for (size_t i = 0; i < b->nouts; i++) {
    const out *o = &b->outs[i];
    const char *gw = (const char *)b->bytes + o->gw_off;
    int rc = 0;
    switch (o->kind) {
    case OUT_REPLY:
      /* A reply belongs to the connection that asked, not to its user's sequence. */
      rc = emit_deliver_one(&em, o, gw, o->gw_len, o->slot, o->conn, 0, o->data_off, o->data_len,
                            o->binary);
      break;
    case OUT_CLOSE:
      rc = emit_close(&em, o, gw, o->gw_len, o->slot, o->conn);
      break;
    case OUT_SEND:
      rc = emit_send(&em, o, routes, max_record);
      break;
    case OUT_CLOSE_USERS:
      rc = emit_close_users(&em, o, routes);
      break;
    case OUT_PUBLISH:
      rc = emit_publish(&em, o);
      break;
    case OUT_CHSUB:
      rc = emit_chsub(&em, o, gw, o->gw_len, o->slot, o->conn, 0);
      break;
    case OUT_CHSUB_USERS:
      rc = emit_groups(&em, o, routes, per_envelope(max_record, o->reason_len), chsub_group);
      break;
    }
    if (rc != 0)
      return rc;
  }
  return 0;
}
