/*
 * gw_chops: parsing and answering channel ops (see gw_chops.h). Ops are rare next to application
 * frames, so clarity wins over speed here: jansson for JSON, msgpack-c for MessagePack once the
 * bytes are validated, a small fixed buffer for answers.
 *
 * Threads: none of its own; every function is reentrant.
 */
#include <jansson.h>
#include <msgpack.h>
#include <stdio.h>
#include <string.h>

#include "gw_chops.h"

#define MAX_SAFE_INT ((1ull << 53) - 1)

const char *gw_chop_code(int err) {
  switch (err) {
#define GW_CHOP_CODE(name, value, code, msg)                                                       \
  case GW_CHOP_##name:                                                                             \
    return code;
    GW_CHOP_ERRNO_MAP(GW_CHOP_CODE)
#undef GW_CHOP_CODE
  }
  return "internal";
}

const char *gw_chop_strerror(int err) {
  switch (err) {
#define GW_CHOP_MSG(name, value, code, msg)                                                        \
  case GW_CHOP_##name:                                                                             \
    return msg;
    GW_CHOP_ERRNO_MAP(GW_CHOP_MSG)
#undef GW_CHOP_MSG
  }
  return "internal error";
}

static const char *const op_names[] = {
    [GW_CHOP_NONE] = "",
    [GW_CHOP_SUBSCRIBE] = "subscribe",
    [GW_CHOP_UNSUBSCRIBE] = "unsubscribe",
    [GW_CHOP_PUBLISH] = "publish",
    [GW_CHOP_PRESENCE] = "presence",
};

static gw_chop_kind op_lookup(const char *s, size_t len) {
  for (int k = GW_CHOP_SUBSCRIBE; k <= GW_CHOP_PRESENCE; k++)
    if (strlen(op_names[k]) == len && memcmp(op_names[k], s, len) == 0)
      return (gw_chop_kind)k;
  return GW_CHOP_NONE;
}

/* The fields both formats share, once each format has found them. NULL/absent: not given. */
typedef struct {
  const char *op, *channel;
  size_t op_len, channel_len;
  bool op_ok, channel_ok, id_ok, since_ok, data_ok; /* present with the right type */
  bool op_seen, channel_seen, id_seen, since_seen;
} fields;

static int finish(const fields *f, gw_chop *op) {
  if (!f->op_ok || (f->id_seen && !f->id_ok))
    return GW_CHOP_BAD_REQUEST;
  op->kind = op_lookup(f->op, f->op_len);
  if (op->kind == GW_CHOP_NONE)
    return GW_CHOP_UNKNOWN_OP;
  if (!f->channel_ok || (f->since_seen && !f->since_ok) ||
      (op->kind == GW_CHOP_PUBLISH && !f->data_ok))
    return GW_CHOP_BAD_REQUEST;
  if (!wsg_channel_name_valid(f->channel, f->channel_len))
    return GW_CHOP_BAD_CHANNEL;
  memcpy(op->channel, f->channel, f->channel_len);
  op->channel[f->channel_len] = '\0';
  op->channel_len = f->channel_len;
  op->has_since = f->since_seen;
  return GW_CHOP_OK;
}

static bool json_uint53(const json_t *v, uint64_t *out) {
  if (!json_is_integer(v) || json_integer_value(v) < 0 ||
      (uint64_t)json_integer_value(v) > MAX_SAFE_INT)
    return false;
  *out = (uint64_t)json_integer_value(v);
  return true;
}

static int parse_json(const uint8_t *d, size_t len, gw_chop *op) {
  json_error_t jerr;
  json_t *j = json_loadb((const char *)d, len, JSON_REJECT_DUPLICATES, &jerr);
  if (!json_is_object(j)) {
    json_decref(j);
    return GW_CHOP_BAD_REQUEST;
  }
  fields f = {0};
  const json_t *v = json_object_get(j, "wsgate");
  f.op_ok = json_is_string(v);
  if (f.op_ok) {
    f.op = json_string_value(v);
    f.op_len = json_string_length(v);
  }
  v = json_object_get(j, "id");
  f.id_seen = v != NULL;
  f.id_ok = f.id_seen && json_uint53(v, &op->id);
  op->has_id = f.id_ok;
  v = json_object_get(j, "channel");
  f.channel_seen = v != NULL;
  f.channel_ok = json_is_string(v);
  if (f.channel_ok) {
    f.channel = json_string_value(v);
    f.channel_len = json_string_length(v);
  }
  f.data_ok = json_is_string(json_object_get(j, "data"));
  v = json_object_get(j, "since");
  f.since_seen = v != NULL;
  f.since_ok = json_is_object(v) && json_uint53(json_object_get(v, "offset"), &op->since_offset) &&
               json_uint53(json_object_get(v, "epoch"), &op->since_epoch);
  int rc = finish(&f, op);
  json_decref(j);
  return rc;
}

static bool mp_uint53(const msgpack_object *o, uint64_t *out) {
  if (o->type != MSGPACK_OBJECT_POSITIVE_INTEGER || o->via.u64 > MAX_SAFE_INT)
    return false;
  *out = o->via.u64;
  return true;
}

static bool mp_key_is(const msgpack_object *k, const char *name) {
  size_t n = strlen(name);
  return k->type == MSGPACK_OBJECT_STR && k->via.str.size == n &&
         memcmp(k->via.str.ptr, name, n) == 0;
}

static bool mp_since(const msgpack_object *v, gw_chop *op) {
  if (v->type != MSGPACK_OBJECT_MAP)
    return false;
  bool off = false, ep = false;
  for (uint32_t i = 0; i < v->via.map.size; i++) {
    const msgpack_object_kv *kv = &v->via.map.ptr[i];
    if (mp_key_is(&kv->key, "offset"))
      off = mp_uint53(&kv->val, &op->since_offset);
    else if (mp_key_is(&kv->key, "epoch"))
      ep = mp_uint53(&kv->val, &op->since_epoch);
  }
  return off && ep;
}

static int parse_msgpack(const uint8_t *d, size_t len, gw_chop *op) {
  /* Depth 2: the op map and `since`; anything deeper is not an op. Validated bytes make
   * msgpack-c allocate only what the input justifies. */
  if (wsg_msgpack_validate(d, len, 2) != WSG_ENV_OK)
    return GW_CHOP_BAD_REQUEST;
  msgpack_unpacked u;
  msgpack_unpacked_init(&u);
  int rc = GW_CHOP_BAD_REQUEST;
  if (msgpack_unpack_next(&u, (const char *)d, len, NULL) == MSGPACK_UNPACK_SUCCESS &&
      u.data.type == MSGPACK_OBJECT_MAP) {
    fields f = {0};
    for (uint32_t i = 0; i < u.data.via.map.size; i++) {
      const msgpack_object *k = &u.data.via.map.ptr[i].key, *v = &u.data.via.map.ptr[i].val;
      if (mp_key_is(k, "wsgate")) {
        f.op_ok = v->type == MSGPACK_OBJECT_STR;
        f.op = v->via.str.ptr;
        f.op_len = f.op_ok ? v->via.str.size : 0;
      } else if (mp_key_is(k, "id")) {
        f.id_seen = true;
        f.id_ok = op->has_id = mp_uint53(v, &op->id);
      } else if (mp_key_is(k, "channel")) {
        f.channel_seen = true;
        f.channel_ok = v->type == MSGPACK_OBJECT_STR;
        f.channel = v->via.str.ptr;
        f.channel_len = f.channel_ok ? v->via.str.size : 0;
      } else if (mp_key_is(k, "data")) {
        f.data_ok = v->type == MSGPACK_OBJECT_STR || v->type == MSGPACK_OBJECT_BIN;
      } else if (mp_key_is(k, "since")) {
        f.since_seen = true;
        f.since_ok = mp_since(v, op);
      }
    }
    rc = finish(&f, op);
  }
  msgpack_unpacked_destroy(&u);
  return rc;
}

int gw_chops_parse(const uint8_t *d, size_t len, bool binary, gw_chop *op) {
  memset(op, 0, offsetof(gw_chop, channel));
  op->channel[0] = '\0';
  op->msgpack = binary;
  return binary ? parse_msgpack(d, len, op) : parse_json(d, len, op);
}

/* ---- answers --------------------------------------------------------------------------------- */

typedef struct {
  uint8_t *out;
  size_t cap, len;
  bool overflow;
} fixed_buf;

static int fixed_write(void *data, const char *buf, size_t len) {
  fixed_buf *b = data;
  if (b->len + len > b->cap) {
    b->overflow = true;
    return -1;
  }
  memcpy(b->out + b->len, buf, len);
  b->len += len;
  return 0;
}

static void mp_str(msgpack_packer *pk, const char *s, size_t n) {
  msgpack_pack_str_with_body(pk, s, n);
}

static size_t answer_msgpack(const gw_chop *op, int err, const char *type,
                             const gw_chop_recovery *rec, const char *msg, uint8_t *out,
                             size_t cap) {
  fixed_buf b = {out, cap, 0, false};
  msgpack_packer pk;
  msgpack_packer_init(&pk, &b, fixed_write);
  bool has_op = op->kind != GW_CHOP_NONE;
  bool ok = err == GW_CHOP_OK;
  size_t pairs = 1 + (op->has_id ? 1 : 0) + (ok ? 1 : 2 + (has_op ? 1 : 0) + (op->server ? 1 : 0)) +
                 (rec ? (rec->fresh ? 2 : 3) : 0) + (op->server ? 1 : 0);
  msgpack_pack_map(&pk, pairs);
  mp_str(&pk, "wsgate", 6);
  mp_str(&pk, type, strlen(type));
  if (op->has_id) {
    mp_str(&pk, "id", 2);
    msgpack_pack_uint64(&pk, op->id);
  }
  if (err == GW_CHOP_OK) {
    mp_str(&pk, "channel", 7);
    mp_str(&pk, op->channel, op->channel_len);
    if (rec) {
      if (!rec->fresh) {
        mp_str(&pk, "recovered", 9);
        if (rec->recovered)
          msgpack_pack_true(&pk);
        else
          msgpack_pack_false(&pk);
      }
      mp_str(&pk, "epoch", 5);
      msgpack_pack_uint64(&pk, rec->epoch);
      mp_str(&pk, "offset", 6);
      msgpack_pack_uint64(&pk, rec->offset);
    }
  } else {
    if (has_op) {
      mp_str(&pk, "op", 2);
      mp_str(&pk, op_names[op->kind], strlen(op_names[op->kind]));
    }
    if (op->server) {
      mp_str(&pk, "channel", 7);
      mp_str(&pk, op->channel, op->channel_len);
    }
    mp_str(&pk, "code", 4);
    mp_str(&pk, gw_chop_code(err), strlen(gw_chop_code(err)));
    mp_str(&pk, "message", 7);
    mp_str(&pk, msg, strlen(msg));
  }
  if (op->server) {
    mp_str(&pk, "server", 6);
    msgpack_pack_true(&pk);
  }
  return b.overflow ? 0 : b.len;
}

static size_t answer_json(const gw_chop *op, int err, const char *type, const gw_chop_recovery *rec,
                          const char *msg, uint8_t *out, size_t cap) {
  json_t *j = json_object();
  if (!j)
    return 0;
  json_object_set_new(j, "wsgate", json_string(type));
  if (op->has_id)
    json_object_set_new(j, "id", json_integer((json_int_t)op->id));
  if (err == GW_CHOP_OK) {
    json_object_set_new(j, "channel", json_stringn(op->channel, op->channel_len));
    if (rec) {
      if (!rec->fresh)
        json_object_set_new(j, "recovered", json_boolean(rec->recovered));
      json_object_set_new(j, "epoch", json_integer((json_int_t)rec->epoch));
      json_object_set_new(j, "offset", json_integer((json_int_t)rec->offset));
    }
  } else {
    if (op->kind != GW_CHOP_NONE)
      json_object_set_new(j, "op", json_string(op_names[op->kind]));
    if (op->server)
      json_object_set_new(j, "channel", json_stringn(op->channel, op->channel_len));
    json_object_set_new(j, "code", json_string(gw_chop_code(err)));
    json_object_set_new(j, "message", json_string(msg));
  }
  if (op->server)
    json_object_set_new(j, "server", json_true());
  size_t n = json_dumpb(j, (char *)out, cap, JSON_COMPACT);
  json_decref(j);
  return n <= cap ? n : 0;
}

size_t gw_chops_answer_msg(const gw_chop *op, int err, const char *message, uint8_t *out,
                           size_t cap) {
  const char *type = "error";
  if (err == GW_CHOP_OK)
    type = op->kind == GW_CHOP_UNSUBSCRIBE ? "unsubscribed" : "subscribed";
  const char *msg = message ? message : gw_chop_strerror(err);
  return op->msgpack ? answer_msgpack(op, err, type, NULL, msg, out, cap)
                     : answer_json(op, err, type, NULL, msg, out, cap);
}

size_t gw_chops_answer(const gw_chop *op, int err, uint8_t *out, size_t cap) {
  return gw_chops_answer_msg(op, err, NULL, out, cap);
}

size_t gw_chops_answer_recovery(const gw_chop *op, const gw_chop_recovery *rec, uint8_t *out,
                                size_t cap) {
  return op->msgpack ? answer_msgpack(op, GW_CHOP_OK, "subscribed", rec, NULL, out, cap)
                     : answer_json(op, GW_CHOP_OK, "subscribed", rec, NULL, out, cap);
}
