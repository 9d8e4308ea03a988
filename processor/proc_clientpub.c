/*
 * proc_clientpub: parsing a client's publish op (see proc_clientpub.h). The gateway validated
 * its shape already; this parses it again because a processor trusts no producer of the inbound
 * topic more than it must.
 *
 * Threads: any.
 */
#include "proc_clientpub.h"

#include <jansson.h>
#include <msgpack.h>
#include <stdlib.h>
#include <string.h>

#include "wsg_envelope.h"

static bool marked(const uint8_t *d, size_t len, bool binary) {
  if (binary)
    return len >= 8 && (d[0] & 0xf0) == 0x80 && d[0] != 0x80 && memcmp(d + 1, "\xa6wsgate", 7) == 0;
  return len >= 11 && d[0] == '{' && memcmp(d + 1, "\"wsgate\":\"", 10) == 0;
}

static int set_channel(proc_clientpub *p, const char *s, size_t n) {
  if (!wsg_channel_name_valid(s, n))
    return -1;
  memcpy(p->channel, s, n);
  p->channel[n] = '\0';
  p->channel_len = n;
  return 1;
}

static int parse_json(const uint8_t *d, size_t len, proc_clientpub *p) {
  json_t *j = json_loadb((const char *)d, len, JSON_REJECT_DUPLICATES, NULL);
  const json_t *op = json_object_get(j, "wsgate");
  if (!json_is_string(op) || strcmp(json_string_value(op), "publish") != 0) {
    json_decref(j);
    return 0;
  }
  const json_t *ch = json_object_get(j, "channel"), *data = json_object_get(j, "data");
  int rc = -1;
  if (json_is_string(ch) && json_is_string(data) &&
      set_channel(p, json_string_value(ch), json_string_length(ch)) == 1 &&
      (p->text = malloc(json_string_length(data) + 1))) {
    memcpy(p->text, json_string_value(data), json_string_length(data) + 1);
    p->data = (const uint8_t *)p->text;
    p->len = json_string_length(data);
    rc = 1;
  }
  json_decref(j);
  return rc;
}

static bool key_is(const msgpack_object *k, const char *name) {
  size_t n = strlen(name);
  return k->type == MSGPACK_OBJECT_STR && k->via.str.size == n &&
         memcmp(k->via.str.ptr, name, n) == 0;
}

static int parse_msgpack(const uint8_t *d, size_t len, proc_clientpub *p) {
  if (wsg_msgpack_validate(d, len, 2) != WSG_ENV_OK)
    return -1;
  msgpack_unpacked u;
  msgpack_unpacked_init(&u);
  int rc = -1;
  bool is_pub = false, ch = false, data = false;
  if (msgpack_unpack_next(&u, (const char *)d, len, NULL) == MSGPACK_UNPACK_SUCCESS &&
      u.data.type == MSGPACK_OBJECT_MAP) {
    for (uint32_t i = 0; i < u.data.via.map.size; i++) {
      const msgpack_object *k = &u.data.via.map.ptr[i].key, *v = &u.data.via.map.ptr[i].val;
      if (key_is(k, "wsgate"))
        is_pub = v->type == MSGPACK_OBJECT_STR && v->via.str.size == 7 &&
                 memcmp(v->via.str.ptr, "publish", 7) == 0;
      else if (key_is(k, "channel"))
        ch = v->type == MSGPACK_OBJECT_STR && set_channel(p, v->via.str.ptr, v->via.str.size) == 1;
      else if (key_is(k, "data") &&
               (v->type == MSGPACK_OBJECT_STR || v->type == MSGPACK_OBJECT_BIN)) {
        /* msgpack-c's str and bin views point into d, which outlives the call. */
        p->binary = v->type == MSGPACK_OBJECT_BIN;
        p->data = (const uint8_t *)(p->binary ? v->via.bin.ptr : v->via.str.ptr);
        p->len = p->binary ? v->via.bin.size : v->via.str.size;
        data = true;
      }
    }
    rc = !is_pub ? 0 : ch && data ? 1 : -1;
  }
  msgpack_unpacked_destroy(&u);
  return rc;
}

int proc_clientpub_parse(const uint8_t *d, size_t len, bool binary, proc_clientpub *out) {
  memset(out, 0, sizeof *out);
  if (!d || !marked(d, len, binary))
    return 0;
  int rc = binary ? parse_msgpack(d, len, out) : parse_json(d, len, out);
  if (rc != 1)
    proc_clientpub_finish(out);
  return rc;
}

void proc_clientpub_finish(proc_clientpub *p) {
  free(p->text);
  p->text = NULL;
}
