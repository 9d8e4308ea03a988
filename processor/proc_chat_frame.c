/*
 * proc_chat_frame: frames to chat clients in JSON or MessagePack (see proc_chat_frame.h).
 *
 * Threads: the consumer thread.
 */
#include "proc_chat_frame.h"

#include <jansson.h>
#include <msgpack.h>
#include <stdlib.h>

static bool omitted(const proc_chat_fv *f) {
  return f->t == FV_ID && f->cmd->id_kind == PROC_CHAT_ID_NONE;
}

static int build_json(const proc_chat_fv *f, size_t n, proc_chat_frame *out) {
  json_t *o = json_object();
  if (!o)
    return -1;
  for (size_t i = 0; i < n; i++) {
    if (omitted(&f[i]))
      continue;
    json_t *v = NULL;
    switch (f[i].t) {
    case FV_STR:
      v = json_stringn(f[i].s, f[i].n);
      break;
    case FV_INT:
      v = json_integer(f[i].i);
      break;
    case FV_BOOL:
      v = json_boolean(f[i].i);
      break;
    case FV_STRS:
      v = json_array();
      for (size_t k = 0; v && k < f[i].nstrs; k++)
        if (json_array_append_new(v, json_stringn(f[i].strs[k].ptr, f[i].strs[k].len)) != 0) {
          json_decref(v);
          v = NULL;
        }
      break;
    case FV_ID:
      v = f[i].cmd->id_kind == PROC_CHAT_ID_INT ? json_integer(f[i].cmd->id_int)
                                                : json_stringn(f[i].cmd->id_str, f[i].cmd->id_len);
      break;
    }
    /* json_object_set_new takes v even when it fails; a NULL v (invalid UTF-8) fails it. */
    if (!v || json_object_set_new(o, f[i].key, v) != 0) {
      json_decref(o);
      return -1;
    }
  }
  char *s = json_dumps(o, JSON_COMPACT);
  json_decref(o);
  if (!s)
    return -1;
  out->data = (uint8_t *)s;
  out->len = strlen(s);
  out->binary = false;
  return 0;
}

static void pack_str(msgpack_packer *pk, const char *s, size_t n) {
  msgpack_pack_str(pk, n);
  msgpack_pack_str_body(pk, s, n);
}

static int build_msgpack(const proc_chat_fv *f, size_t n, proc_chat_frame *out) {
  msgpack_sbuffer sb;
  msgpack_sbuffer_init(&sb);
  msgpack_packer pk;
  msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
  size_t count = 0;
  for (size_t i = 0; i < n; i++)
    count += !omitted(&f[i]);
  msgpack_pack_map(&pk, count);
  for (size_t i = 0; i < n; i++) {
    if (omitted(&f[i]))
      continue;
    pack_str(&pk, f[i].key, strlen(f[i].key));
    switch (f[i].t) {
    case FV_STR:
      pack_str(&pk, f[i].s, f[i].n);
      break;
    case FV_INT:
      msgpack_pack_int64(&pk, f[i].i);
      break;
    case FV_BOOL:
      if (f[i].i)
        msgpack_pack_true(&pk);
      else
        msgpack_pack_false(&pk);
      break;
    case FV_STRS:
      msgpack_pack_array(&pk, f[i].nstrs);
      for (size_t k = 0; k < f[i].nstrs; k++)
        pack_str(&pk, f[i].strs[k].ptr, f[i].strs[k].len);
      break;
    case FV_ID:
      if (f[i].cmd->id_kind == PROC_CHAT_ID_INT)
        msgpack_pack_int64(&pk, f[i].cmd->id_int);
      else
        pack_str(&pk, f[i].cmd->id_str, f[i].cmd->id_len);
      break;
    }
  }
  /* msgpack_sbuffer grows with realloc: its data is ours to free(). A failed realloc leaves the
   * packer's writes short; an empty buffer means nothing was written. */
  if (!sb.data) {
    msgpack_sbuffer_destroy(&sb);
    return -1;
  }
  out->data = (uint8_t *)sb.data;
  out->len = sb.size;
  out->binary = true;
  return 0;
}

int proc_chat_frame_build(bool msgpack, const proc_chat_fv *f, size_t n, proc_chat_frame *out) {
  memset(out, 0, sizeof(*out));
  return msgpack ? build_msgpack(f, n, out) : build_json(f, n, out);
}

int proc_chat_frame_reply(wsgate_ctx *ctx, bool msgpack, const proc_chat_fv *f, size_t n) {
  proc_chat_frame fr;
  if (proc_chat_frame_build(msgpack, f, n, &fr) != 0)
    return WSGATE_E_NOMEM;
  int rc = wsgate_reply(ctx, fr.data, fr.len, fr.binary);
  free(fr.data);
  return rc;
}

int proc_chat_frame_error(wsgate_ctx *ctx, bool msgpack, const proc_chat_cmd *cmd, const char *code,
                          const char *msg) {
  proc_chat_cmd none = {0};
  proc_chat_fv f[] = {F_CSTR("type", "error"), F_CSTR("code", code), F_CSTR("message", msg),
                      F_ID(cmd ? cmd : &none)};
  return proc_chat_frame_reply(ctx, msgpack, f, sizeof(f) / sizeof(f[0]));
}
