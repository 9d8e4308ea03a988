/*
 * gw_chjl: join/leave batches, their wire form and frames (see gw_chjl.h).
 *
 * Threads: none of its own; every function is reentrant.
 */
#include "gw_chjl.h"

#include <jansson.h>
#include <msgpack.h>
#include <stdlib.h>
#include <string.h>

#include "wsg_envelope.h"

void gw_chjl_init(gw_chjl_batch *b) {
  b->joined = b->left = 0;
  b->n = 0;
}

static void drop_names(gw_chjl_batch *b) {
  for (uint32_t i = 0; i < b->n; i++)
    free(b->ev[i].user);
  b->n = 0;
}

void gw_chjl_clear(gw_chjl_batch *b) {
  drop_names(b);
  gw_chjl_init(b);
}

bool gw_chjl_empty(const gw_chjl_batch *b) {
  return b->joined == 0 && b->left == 0;
}

bool gw_chjl_counts_only(const gw_chjl_batch *b) {
  return b->joined + b->left > GW_CHJL_LIST_MAX || b->n != b->joined + b->left;
}

static void count(gw_chjl_batch *b, bool joined, uint64_t k) {
  if (joined)
    b->joined += k;
  else
    b->left += k;
}

int gw_chjl_add(gw_chjl_batch *b, const char *user, size_t len, bool joined) {
  bool named = !gw_chjl_counts_only(b);
  count(b, joined, 1);
  if (!named || b->joined + b->left > GW_CHJL_LIST_MAX) {
    drop_names(b); /* counts only from now on */
    return 0;
  }
  char *u = malloc(len + 1);
  if (!u) {
    drop_names(b);
    return -1;
  }
  memcpy(u, user, len);
  u[len] = '\0';
  b->ev[b->n].user = u;
  b->ev[b->n++].joined = joined;
  return 0;
}

/* ---- the wire form ----------------------------------------------------------------------- */

static bool key_is(const msgpack_object *k, const char *name) {
  size_t n = strlen(name);
  return k->type == MSGPACK_OBJECT_STR && k->via.str.size == n &&
         memcmp(k->via.str.ptr, name, n) == 0;
}

static bool names_ok(const msgpack_object *v) {
  if (v->type != MSGPACK_OBJECT_ARRAY || v->via.array.size > GW_CHJL_LIST_MAX)
    return false;
  for (uint32_t i = 0; i < v->via.array.size; i++) {
    const msgpack_object *u = &v->via.array.ptr[i];
    if (u->type != MSGPACK_OBJECT_STR || u->via.str.size == 0 || u->via.str.size > WSG_MAX_USER_LEN)
      return false;
  }
  return true;
}

int gw_chjl_merge(gw_chjl_batch *b, const uint8_t *d, size_t len) {
  if (!d || wsg_msgpack_validate(d, len, 2) != WSG_ENV_OK)
    return -1;
  msgpack_unpacked u;
  msgpack_unpacked_init(&u);
  int rc = -1;
  if (msgpack_unpack_next(&u, (const char *)d, len, NULL) == MSGPACK_UNPACK_SUCCESS &&
      u.data.type == MSGPACK_OBJECT_MAP) {
    const msgpack_object *j = NULL, *l = NULL;
    uint64_t jn = 0, ln = 0;
    bool ok = true;
    for (uint32_t i = 0; i < u.data.via.map.size && ok; i++) {
      const msgpack_object *k = &u.data.via.map.ptr[i].key, *v = &u.data.via.map.ptr[i].val;
      if (key_is(k, "j"))
        ok = names_ok(j = v);
      else if (key_is(k, "l"))
        ok = names_ok(l = v);
      else if (key_is(k, "jn") || key_is(k, "ln")) {
        ok = v->type == MSGPACK_OBJECT_POSITIVE_INTEGER && v->via.u64 <= UINT32_MAX;
        *(k->via.str.ptr[0] == 'j' ? &jn : &ln) = ok ? v->via.u64 : 0;
      }
    }
    if (ok && (j || l) && (jn || ln))
      ok = false; /* names or counts, never both */
    if (ok) {
      const msgpack_object *lists[2] = {j, l};
      for (int side = 0; side < 2; side++)
        for (uint32_t i = 0; lists[side] && i < lists[side]->via.array.size; i++) {
          const msgpack_object *s = &lists[side]->via.array.ptr[i];
          gw_chjl_add(b, s->via.str.ptr, s->via.str.size, side == 0);
        }
      if (jn || ln) {
        drop_names(b);
        count(b, true, jn);
        count(b, false, ln);
      }
      rc = 0;
    }
  }
  msgpack_unpacked_destroy(&u);
  return rc;
}

static void pack_str(msgpack_packer *pk, const char *s, size_t n) {
  msgpack_pack_str_with_body(pk, s, n);
}

/* The names of one side as an array. */
static void pack_names(msgpack_packer *pk, const gw_chjl_batch *b, bool joined) {
  msgpack_pack_array(pk, (size_t)(joined ? b->joined : b->left));
  for (uint32_t i = 0; i < b->n; i++)
    if (b->ev[i].joined == joined)
      pack_str(pk, b->ev[i].user, strlen(b->ev[i].user));
}

/* sbuffer's data is malloc'd: the caller's free() releases it. */
static size_t take(msgpack_sbuffer *sb, uint8_t **out) {
  if (!sb->data || sb->size == 0) {
    msgpack_sbuffer_destroy(sb);
    return 0;
  }
  *out = (uint8_t *)sb->data;
  return sb->size;
}

size_t gw_chjl_encode(const gw_chjl_batch *b, uint8_t **out) {
  *out = NULL;
  msgpack_sbuffer sb;
  msgpack_sbuffer_init(&sb);
  msgpack_packer pk;
  msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
  bool counts = gw_chjl_counts_only(b);
  msgpack_pack_map(&pk, (b->joined ? 1 : 0) + (b->left ? 1 : 0));
  if (b->joined) {
    pack_str(&pk, counts ? "jn" : "j", counts ? 2 : 1);
    if (counts)
      msgpack_pack_uint64(&pk, b->joined);
    else
      pack_names(&pk, b, true);
  }
  if (b->left) {
    pack_str(&pk, counts ? "ln" : "l", counts ? 2 : 1);
    if (counts)
      msgpack_pack_uint64(&pk, b->left);
    else
      pack_names(&pk, b, false);
  }
  return take(&sb, out);
}

/* ---- the client frame --------------------------------------------------------------------- */

static gw_msg *frame_msgpack(const gw_chjl_batch *b, const char *ch, size_t len) {
  msgpack_sbuffer sb;
  msgpack_sbuffer_init(&sb);
  msgpack_packer pk;
  msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
  bool counts = gw_chjl_counts_only(b);
  msgpack_pack_map(&pk, 4);
  pack_str(&pk, "wsgate", 6);
  pack_str(&pk, "presence_change", 15);
  pack_str(&pk, "channel", 7);
  pack_str(&pk, ch, len);
  if (counts) {
    pack_str(&pk, "joined_count", 12);
    msgpack_pack_uint64(&pk, b->joined);
    pack_str(&pk, "left_count", 10);
    msgpack_pack_uint64(&pk, b->left);
  } else {
    pack_str(&pk, "joined", 6);
    pack_names(&pk, b, true);
    pack_str(&pk, "left", 4);
    pack_names(&pk, b, false);
  }
  uint8_t *out = NULL;
  size_t n = take(&sb, &out);
  gw_msg *m = n ? gw_msg_create(out, n, true) : NULL;
  free(out);
  return m;
}

static gw_msg *frame_json(const gw_chjl_batch *b, const char *ch, size_t len) {
  json_t *j = json_object(), *joined = json_array(), *left = json_array();
  gw_msg *m = NULL;
  if (j && joined && left) {
    json_object_set_new(j, "wsgate", json_string("presence_change"));
    json_object_set_new(j, "channel", json_stringn(ch, len));
    if (gw_chjl_counts_only(b)) {
      json_object_set_new(j, "joined_count", json_integer((json_int_t)b->joined));
      json_object_set_new(j, "left_count", json_integer((json_int_t)b->left));
    } else {
      for (uint32_t i = 0; i < b->n; i++) {
        json_t *s = json_string(b->ev[i].user);
        if (s)
          json_array_append_new(b->ev[i].joined ? joined : left, s);
      }
      json_object_set(j, "joined", joined);
      json_object_set(j, "left", left);
    }
    char *text = json_dumps(j, JSON_COMPACT);
    if (text)
      m = gw_msg_create(text, strlen(text), false);
    free(text);
  }
  json_decref(j);
  json_decref(joined);
  json_decref(left);
  return m;
}

gw_msg *gw_chjl_frame(const gw_chjl_batch *b, const char *ch, size_t len, bool msgpack) {
  return msgpack ? frame_msgpack(b, ch, len) : frame_json(b, ch, len);
}
