/*
 * proc_chat: the `chat` handler's glue (see proc_chat.h; docs/HANDLERS.md documents the
 * protocol): its --handler-arg settings, and for each client frame the parse (proc_chat_parse.c)
 * and the command table's function (proc_chat_cmds.c), or a bad_request answer.
 *
 * Built only on the public handler API (wsgate_handler.h), like a plugin would be, plus jansson
 * and msgpack-c for the two client encodings.
 *
 * Threads: the consumer thread.
 */
#include "proc_chat.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "proc_chat_cmds.h"
#include "proc_chat_frame.h"

#define DEFAULT_MAX_MEMBERS 10000
#define DEFAULT_MAX_TEXT    4096
#define DEFAULT_MAX_FRAME   16384

/* --- messages ------------------------------------------------------------------------------ */

static int chat_message(void *state, wsgate_ctx *ctx, const wsgate_event *ev) {
  const proc_chat_state *st = state;
  proc_chat_cmd cmd;
  char err[256];
  if (proc_chat_parse(ev->payload, ev->payload_len, ev->binary, &st->lim, &cmd, err, sizeof(err)) !=
      0) {
    /* The client hears why; the processor counts and logs it (and dead-letters the record). */
    proc_chat_frame_error(ctx, ev->binary, &cmd, "bad_request", err);
    proc_chat_cmd_finish(&cmd);
    wsgate_set_error(ctx, "bad chat command: %s", err);
    return WSGATE_REJECT;
  }
  /* The parser only returns ops of the table. */
  int rc = proc_chat_cmds_get(cmd.op)->run(st, ctx, ev, &cmd);
  proc_chat_cmd_finish(&cmd);
  return rc;
}

/* --- lifecycle ----------------------------------------------------------------------------- */

static int parse_u64(const char *s, size_t len, uint64_t min, uint64_t max, uint64_t *out) {
  if (len == 0 || len > 12)
    return -1;
  uint64_t v = 0;
  for (size_t i = 0; i < len; i++) {
    if (s[i] < '0' || s[i] > '9')
      return -1;
    v = v * 10 + (uint64_t)(s[i] - '0');
  }
  if (v < min || v > max)
    return -1;
  *out = v;
  return 0;
}

/* --handler-arg: comma-separated key=value pairs. */
static int parse_arg(proc_chat_state *st, const char *arg, char *err, size_t errlen) {
  static const struct {
    const char *key;
    uint64_t min, max;
  } keys[] = {
      {"max_members", 1, 10000000}, {"max_text", 1, 1u << 20}, {"max_frame", 64, 16u << 20}};
  const char *p = arg;
  while (p && *p) {
    const char *end = strchr(p, ',');
    size_t len = end ? (size_t)(end - p) : strlen(p);
    const char *eq = memchr(p, '=', len);
    if (!eq) {
      snprintf(err, errlen, "chat: '%.*s' is not key=value", (int)len, p);
      return -1;
    }
    size_t klen = (size_t)(eq - p), vlen = len - klen - 1;
    size_t k;
    for (k = 0; k < sizeof(keys) / sizeof(keys[0]); k++)
      if (strlen(keys[k].key) == klen && memcmp(keys[k].key, p, klen) == 0)
        break;
    if (k == sizeof(keys) / sizeof(keys[0])) {
      snprintf(err, errlen, "chat: unknown setting '%.*s' (max_members, max_text, max_frame)",
               (int)klen, p);
      return -1;
    }
    uint64_t v;
    if (parse_u64(eq + 1, vlen, keys[k].min, keys[k].max, &v) != 0) {
      snprintf(err, errlen, "chat: %s must be a number in %llu..%llu", keys[k].key,
               (unsigned long long)keys[k].min, (unsigned long long)keys[k].max);
      return -1;
    }
    if (k == 0)
      st->max_members = (uint32_t)v;
    else if (k == 1)
      st->lim.max_text = v;
    else
      st->lim.max_frame = v;
    p = end ? end + 1 : NULL;
  }
  if (st->lim.max_text >= st->lim.max_frame) {
    snprintf(err, errlen, "chat: max_text (%zu) must be below max_frame (%zu)", st->lim.max_text,
             st->lim.max_frame);
    return -1;
  }
  return 0;
}

static int chat_init(void **state, const wsgate_api *api, const char *arg, char *err,
                     size_t errlen) {
  (void)api;
  proc_chat_state *st = calloc(1, sizeof(*st));
  if (!st) {
    snprintf(err, errlen, "chat: out of memory");
    return -1;
  }
  st->max_members = DEFAULT_MAX_MEMBERS;
  st->lim.max_text = DEFAULT_MAX_TEXT;
  st->lim.max_frame = DEFAULT_MAX_FRAME;
  if (parse_arg(st, arg, err, errlen) != 0) {
    free(st);
    return -1;
  }
  *state = st;
  return 0;
}

static void chat_destroy(void *state) {
  free(state);
}

static const wsgate_handler chat_handler = {
    .abi_version = WSGATE_HANDLER_ABI_VERSION,
    .name = "chat",
    .init = chat_init,
    .destroy = chat_destroy,
    .on_message = chat_message,
};

const wsgate_handler *proc_chat_handler(void) {
  return &chat_handler;
}
