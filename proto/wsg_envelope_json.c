/*
 * wsg_envelope_json: the JSON rendering of an envelope or a command (docs/PROTOCOL.md, "JSON
 * rendering"), used by wsgate-dump and pinned by the golden vectors. Written by hand rather than
 * with a JSON library because ids and sequence numbers are uint64 (jansson's integers are int64)
 * and the output must be byte-for-byte stable.
 *
 * Threads: none of its own; reentrant.
 */
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include <msgpack/object.h>
#include <msgpack/unpack.h>

#include "wsg_envelope_json.h"
#include "wsg_mp.h"

static int put(wsg_buf *b, const char *s) {
  return wsg__buf_append(b, s, strlen(s));
}

static int put_u64(wsg_buf *b, uint64_t v) {
  char tmp[24];
  int n = snprintf(tmp, sizeof tmp, "%" PRIu64, v);
  return wsg__buf_append(b, tmp, (size_t)n);
}

static int put_i64(wsg_buf *b, int64_t v) {
  char tmp[24];
  int n = snprintf(tmp, sizeof tmp, "%" PRId64, v);
  return wsg__buf_append(b, tmp, (size_t)n);
}

/* Shortest text that reads back as the same double; always with a '.' or an exponent so it is
 * read back as a float, not an integer. JSON has no NaN or infinity: those become null. */
static int put_double(wsg_buf *b, double v) {
  char tmp[40];
  if (!isfinite(v))
    return put(b, "null");
  int n = 0;
  for (int prec = 1; prec <= 17; prec++) {
    n = snprintf(tmp, sizeof tmp - 2, "%.*g", prec, v);
    if (strtod(tmp, NULL) == v)
      break;
  }
  if (strpbrk(tmp, ".e") == NULL) { /* room kept by the snprintf size above */
    tmp[n++] = '.';
    tmp[n++] = '0';
  }
  return wsg__buf_append(b, tmp, (size_t)n);
}

/* Length of the valid UTF-8 sequence at s, or 0 if the bytes there are not one. */
static size_t utf8_seq(const uint8_t *s, size_t left) {
  size_t n = s[0] < 0x80                    ? 1
             : s[0] >= 0xc2 && s[0] <= 0xdf ? 2
             : s[0] >= 0xe0 && s[0] <= 0xef ? 3
             : s[0] >= 0xf0 && s[0] <= 0xf4 ? 4
                                            : 0;
  if (n == 0 || n > left || !wsg_utf8_valid((const char *)s, n))
    return 0;
  return n;
}

/* A JSON string. Invalid UTF-8 (possible only inside `m`) becomes U+FFFD, one per bad byte. */
static int put_string(wsg_buf *b, const uint8_t *s, size_t len) {
  static const char hex[] = "0123456789abcdef";
  if (len == 0)
    return put(b, "\"\"");
  int rc = wsg__buf_append(b, "\"", 1);
  size_t run = 0; /* start of the bytes copied as they are */

  for (size_t i = 0; rc == WSG_ENV_OK && i < len;) {
    uint8_t c = s[i];
    char esc[7];
    const char *rep = NULL;
    size_t rep_len = 2;
    size_t n = 1;

    if (c == '"' || c == '\\') {
      esc[0] = '\\';
      esc[1] = (char)c;
      rep = esc;
    } else if (c < 0x20) {
      static const char short_esc[] = {
          ['\b'] = 'b', ['\f'] = 'f', ['\n'] = 'n', ['\r'] = 'r', ['\t'] = 't'};
      esc[0] = '\\';
      if (c < sizeof short_esc && short_esc[c]) {
        esc[1] = short_esc[c];
      } else {
        memcpy(esc + 1, "u00", 3);
        esc[4] = hex[c >> 4];
        esc[5] = hex[c & 15];
        rep_len = 6;
      }
      rep = esc;
    } else if (c >= 0x80) {
      n = utf8_seq(s + i, len - i);
      if (n == 0) {
        rep = "\xef\xbf\xbd"; /* U+FFFD */
        rep_len = 3;
        n = 1;
      }
    }
    if (rep != NULL) {
      rc = wsg__buf_append(b, s + run, i - run);
      if (rc == WSG_ENV_OK)
        rc = wsg__buf_append(b, rep, rep_len);
      run = i + n;
    }
    i += n;
  }
  if (rc == WSG_ENV_OK)
    rc = wsg__buf_append(b, s + run, len - run);
  if (rc == WSG_ENV_OK)
    rc = wsg__buf_append(b, "\"", 1);
  return rc;
}

static int put_base64(wsg_buf *b, const uint8_t *p, size_t len) {
  static const char tab[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  int rc = wsg__buf_append(b, "\"", 1);

  for (size_t i = 0; rc == WSG_ENV_OK && i < len; i += 3) {
    uint32_t v = (uint32_t)p[i] << 16;
    size_t n = len - i < 3 ? len - i : 3;
    if (n > 1)
      v |= (uint32_t)p[i + 1] << 8;
    if (n > 2)
      v |= p[i + 2];
    char out[4] = {tab[v >> 18], tab[(v >> 12) & 63], (char)(n > 1 ? tab[(v >> 6) & 63] : '='),
                   (char)(n > 2 ? tab[v & 63] : '=')};
    rc = wsg__buf_append(b, out, 4);
  }
  if (rc == WSG_ENV_OK)
    rc = wsg__buf_append(b, "\"", 1);
  return rc;
}

static int put_object(wsg_buf *b, const msgpack_object *o);

/* A map key: JSON keys are strings, so any other key is rendered as JSON and that text becomes the
 * key ({1: "a"} renders as {"1":"a"}). */
static int put_key(wsg_buf *b, const msgpack_object *k) {
  if (k->type == MSGPACK_OBJECT_STR)
    return put_string(b, (const uint8_t *)k->via.str.ptr, k->via.str.size);
  wsg_buf tmp;
  wsg_buf_init(&tmp, b->cap);
  int rc = put_object(&tmp, k);
  if (rc == WSG_ENV_OK)
    rc = put_string(b, tmp.data, tmp.len);
  wsg_buf_finish(&tmp);
  return rc;
}

/* Recursion is bounded: the metadata was validated with WSG_MAX_META_DEPTH. */
static int put_object(wsg_buf *b, const msgpack_object *o) {
  int rc = WSG_ENV_OK;

  switch (o->type) {
  case MSGPACK_OBJECT_NIL:
    return put(b, "null");
  case MSGPACK_OBJECT_BOOLEAN:
    return put(b, o->via.boolean ? "true" : "false");
  case MSGPACK_OBJECT_POSITIVE_INTEGER:
    return put_u64(b, o->via.u64);
  case MSGPACK_OBJECT_NEGATIVE_INTEGER:
    return put_i64(b, o->via.i64);
  case MSGPACK_OBJECT_FLOAT32:
  case MSGPACK_OBJECT_FLOAT64:
    return put_double(b, o->via.f64);
  case MSGPACK_OBJECT_STR:
    return put_string(b, (const uint8_t *)o->via.str.ptr, o->via.str.size);
  case MSGPACK_OBJECT_BIN:
    return put_base64(b, (const uint8_t *)o->via.bin.ptr, o->via.bin.size);
  case MSGPACK_OBJECT_EXT:
    rc = put(b, "{\"ext\":");
    if (rc == WSG_ENV_OK)
      rc = put_i64(b, o->via.ext.type);
    if (rc == WSG_ENV_OK)
      rc = put(b, ",\"base64\":");
    if (rc == WSG_ENV_OK)
      rc = put_base64(b, (const uint8_t *)o->via.ext.ptr, o->via.ext.size);
    if (rc == WSG_ENV_OK)
      rc = put(b, "}");
    return rc;
  case MSGPACK_OBJECT_ARRAY:
    rc = put(b, "[");
    for (uint32_t i = 0; rc == WSG_ENV_OK && i < o->via.array.size; i++) {
      if (i > 0)
        rc = put(b, ",");
      if (rc == WSG_ENV_OK)
        rc = put_object(b, &o->via.array.ptr[i]);
    }
    if (rc == WSG_ENV_OK)
      rc = put(b, "]");
    return rc;
  case MSGPACK_OBJECT_MAP:
    rc = put(b, "{");
    for (uint32_t i = 0; rc == WSG_ENV_OK && i < o->via.map.size; i++) {
      if (i > 0)
        rc = put(b, ",");
      if (rc == WSG_ENV_OK)
        rc = put_key(b, &o->via.map.ptr[i].key);
      if (rc == WSG_ENV_OK)
        rc = put(b, ":");
      if (rc == WSG_ENV_OK)
        rc = put_object(b, &o->via.map.ptr[i].val);
    }
    if (rc == WSG_ENV_OK)
      rc = put(b, "}");
    return rc;
  }
  return WSG_ENV_INVALID;
}

/* `m` through msgpack-c, which is safe here only because wsg_msgpack_validate() has bounded every
 * count by the bytes present. */
static int put_meta(wsg_buf *b, const uint8_t *meta, size_t len) {
  int rc = wsg_msgpack_validate(meta, len, WSG_MAX_META_DEPTH);
  if (rc != WSG_ENV_OK)
    return rc;
  msgpack_unpacked result;
  size_t off = 0;
  msgpack_unpacked_init(&result);
  switch (msgpack_unpack_next(&result, (const char *)meta, len, &off)) {
  case MSGPACK_UNPACK_SUCCESS:
    rc = put_object(b, &result.data);
    break;
  case MSGPACK_UNPACK_NOMEM_ERROR:
    rc = WSG_ENV_NOMEM;
    break;
  default:
    rc = WSG_ENV_INVALID;
    break;
  }
  msgpack_unpacked_destroy(&result);
  return rc;
}

typedef struct {
  wsg_buf *b;
  int rc;
  bool first;
} json_out;

static void key(json_out *j, const char *name) {
  if (j->rc != WSG_ENV_OK)
    return;
  j->rc = put(j->b, j->first ? "{\"" : ",\"");
  j->first = false;
  if (j->rc == WSG_ENV_OK)
    j->rc = put(j->b, name);
  if (j->rc == WSG_ENV_OK)
    j->rc = put(j->b, "\":");
}

static void val_u64(json_out *j, uint64_t v) {
  if (j->rc == WSG_ENV_OK)
    j->rc = put_u64(j->b, v);
}

static void val_str(json_out *j, const void *s, size_t len) {
  if (j->rc == WSG_ENV_OK)
    j->rc = put_string(j->b, s, len);
}

/* A JSON array of uints (`cs`, `qs`): from ids[0..list->count), else from the decoded list. */
static void val_uints(json_out *j, const wsg_conn_list *list, const uint64_t *ids) {
  if (j->rc == WSG_ENV_OK)
    j->rc = put(j->b, "[");
  if (ids != NULL) {
    for (uint32_t i = 0; j->rc == WSG_ENV_OK && i < list->count; i++) {
      if (i > 0)
        j->rc = put(j->b, ",");
      val_u64(j, ids[i]);
    }
  } else {
    size_t pos = 0;
    uint64_t id;
    for (bool first = true; j->rc == WSG_ENV_OK && wsg_conns_next(list, &pos, &id); first = false) {
      if (!first)
        j->rc = put(j->b, ",");
      val_u64(j, id);
    }
  }
  if (j->rc == WSG_ENV_OK)
    j->rc = put(j->b, "]");
}

/* The payload as the envelope's: `d` in base64, `d_text` when it is UTF-8. */
static void val_data(json_out *j, const uint8_t *data, size_t len) {
  key(j, "d");
  if (j->rc == WSG_ENV_OK)
    j->rc = put_base64(j->b, data, len);
  if (wsg_utf8_valid((const char *)data, len)) {
    key(j, "d_text");
    val_str(j, data, len);
  }
}

/* The end of a rendering: "}" and the NUL not counted in len. */
static int finish(json_out *j) {
  if (j->rc == WSG_ENV_OK)
    j->rc = put(j->b, "}");
  if (j->rc == WSG_ENV_OK && (j->rc = wsg__buf_append(j->b, "", 1)) == WSG_ENV_OK)
    j->b->len--;
  if (j->rc != WSG_ENV_OK)
    j->b->len = 0;
  return j->rc;
}

int wsg_envelope_to_json(const wsg_envelope *env, wsg_buf *b) {
  json_out j = {b, WSG_ENV_OK, true};
  uint32_t f = env->fields;

  b->len = 0;
  /* Same order as the encoder writes the keys. */
  key(&j, "v");
  val_u64(&j, env->version ? env->version : WSG_ENVELOPE_VERSION);
  key(&j, "t");
  const char *kind = wsg_env_kind_name(env->kind);
  val_str(&j, kind, strlen(kind));
  if (f & WSG_F_GATEWAY) {
    key(&j, "g");
    val_str(&j, env->gateway, env->gateway_len);
  }
  if (f & WSG_F_SLOT) {
    key(&j, "s");
    val_u64(&j, env->slot);
  }
  if (f & WSG_F_USER) {
    key(&j, "u");
    val_str(&j, env->user, env->user_len);
  }
  if (f & WSG_F_CONN) {
    key(&j, "c");
    val_u64(&j, env->conn);
  }
  if (f & WSG_F_CONNS) {
    key(&j, "cs");
    val_uints(&j, &env->conns, env->conn_ids);
  }
  if (f & WSG_F_SEQ) {
    key(&j, "n");
    val_u64(&j, env->seq);
  }
  if (f & WSG_F_USEQ) {
    key(&j, "q");
    val_u64(&j, env->user_seq);
  }
  if (f & WSG_F_USEQS) {
    key(&j, "qs");
    val_uints(&j, &env->useqs, env->useq_ids);
  }
  if (f & WSG_F_CHANNEL) {
    key(&j, "ch");
    val_str(&j, env->channel, env->channel_len);
  }
  if (f & WSG_F_CH_OFFSET) {
    key(&j, "co");
    val_u64(&j, env->ch_offset);
  }
  if (f & WSG_F_CH_EPOCH) {
    key(&j, "ce");
    val_u64(&j, env->ch_epoch);
  }
  if (f & WSG_F_REQUEST) {
    key(&j, "rq");
    val_u64(&j, env->request);
  }
  if (f & WSG_F_REFUSAL) {
    key(&j, "rf");
    val_str(&j, env->refusal, env->refusal_len);
  }
  if (f & WSG_F_TS) {
    key(&j, "ts");
    val_u64(&j, env->ts_us);
  }
  if (f & WSG_F_CLOSE_CODE) {
    key(&j, "cc");
    val_u64(&j, env->close_code);
  }
  if (f & WSG_F_CLOSE_REASON) {
    key(&j, "cr");
    val_str(&j, env->close_reason, env->close_reason_len);
  }
  if (f & WSG_F_BINARY) {
    key(&j, "b");
    if (j.rc == WSG_ENV_OK)
      j.rc = put(b, env->binary ? "true" : "false");
  }
  if (f & WSG_F_META) {
    key(&j, "m");
    if (j.rc == WSG_ENV_OK)
      j.rc = put_meta(b, env->meta, env->meta_len);
  }
  if (f & WSG_F_DATA) /* always base64 (lossless); also as text when UTF-8, for people */
    val_data(&j, env->data, env->data_len);
  return finish(&j);
}

int wsg_command_to_json(const wsg_command *cmd, wsg_buf *b) {
  json_out j = {b, WSG_ENV_OK, true};
  uint32_t f = cmd->fields;

  b->len = 0;
  /* Same order as wsg_command_encode writes the keys. */
  key(&j, "v");
  val_u64(&j, WSG_COMMAND_VERSION);
  key(&j, "t");
  const char *kind = wsg_cmd_name(cmd->kind);
  val_str(&j, kind, strlen(kind));
  if (f & WSG_CF_ID) {
    key(&j, "id");
    val_str(&j, cmd->id.ptr, cmd->id.len);
  }
  if (f & WSG_CF_USER) {
    key(&j, "u");
    val_str(&j, cmd->user.ptr, cmd->user.len);
  }
  if (f & WSG_CF_USERS) {
    key(&j, "us");
    if (j.rc == WSG_ENV_OK)
      j.rc = put(b, "[");
    size_t pos = 0;
    wsg_cmd_str u;
    for (bool first = true; j.rc == WSG_ENV_OK && wsg_cmd_users_next(cmd, &pos, &u) == 1;
         first = false) {
      if (!first)
        j.rc = put(b, ",");
      val_str(&j, u.ptr, u.len);
    }
    if (j.rc == WSG_ENV_OK)
      j.rc = put(b, "]");
  }
  if (f & WSG_CF_CONN) {
    key(&j, "c");
    val_u64(&j, cmd->conn);
  }
  if (f & WSG_CF_CHANNEL) {
    key(&j, "ch");
    val_str(&j, cmd->channel.ptr, cmd->channel.len);
  }
  if (f & WSG_CF_CLOSE_CODE) {
    key(&j, "cc");
    val_u64(&j, cmd->close_code);
  }
  if (f & WSG_CF_CLOSE_REASON) {
    key(&j, "cr");
    val_str(&j, cmd->close_reason.ptr, cmd->close_reason.len);
  }
  if (f & WSG_CF_BINARY) {
    key(&j, "b");
    if (j.rc == WSG_ENV_OK)
      j.rc = put(b, cmd->binary ? "true" : "false");
  }
  if (f & WSG_CF_DATA)
    val_data(&j, cmd->data, cmd->data_len);
  if (f & WSG_CF_TS) {
    key(&j, "ts");
    val_u64(&j, cmd->ts_us);
  }
  return finish(&j);
}
