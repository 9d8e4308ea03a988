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

#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "proc_chat_cmds.h"
#include "proc_chat_frame.h"

/* Rooms one user may be in: below the gateway's --channel-max-per-conn (64), so a connection
 * keeps room for subscriptions of its own. */
#define DEFAULT_MAX_ROOMS 32
/* Membership lapses this long after the user's latest join or connection (a week). */
#define DEFAULT_ROOM_TTL  604800
#define DEFAULT_MAX_TEXT  4096
#define DEFAULT_MAX_FRAME 16384

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

/* A new connection gets the user's rooms back: clients that know nothing of channels keep
 * receiving after a reconnect. */
static int chat_connect(void *state, wsgate_ctx *ctx, const wsgate_event *ev) {
  return proc_chat_resubscribe(state, ctx, ev);
}

/* A client's own subscribe to room:<R> (the room namespace with subscribe=handler): members only,
 * so a client can resubscribe with `since` after a reconnect and recover what it missed. */
static int chat_subscribe(void *state, wsgate_ctx *ctx, const wsgate_event *ev) {
  return proc_chat_may_subscribe(state, ctx, ev);
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

/* The --handler-arg settings (docs/HANDLERS.md lists them with their defaults). A number in
 * min..max, or (choices != NULL) one of the words of `choices`, stored as its index. */
typedef struct {
  const char *key;
  uint64_t min, max;
  const char *const *choices;
  size_t off; /* of its uint64_t in proc_chat_settings */
} setting;

typedef struct {
  uint64_t max_rooms, room_ttl, max_text, max_frame, dm_offline;
} proc_chat_settings;

static const char *const dm_offline_words[] = {"silent", "tell", NULL};

#define SETTING(k, lo, hi, ch)                                                                     \
  { #k, lo, hi, ch, offsetof(proc_chat_settings, k) }
static const setting settings[] = {
    SETTING(max_rooms, 1, WSGATE_MAX_ACTIONS / 2, NULL),
    SETTING(room_ttl, 60, 366 * 86400, NULL),
    SETTING(max_text, 1, 1u << 20, NULL),
    SETTING(max_frame, 64, 16u << 20, NULL),
    SETTING(dm_offline, 0, 1, dm_offline_words),
};
#define NSETTINGS (sizeof(settings) / sizeof(settings[0]))

static int parse_value(const setting *k, const char *v, size_t vlen, uint64_t *out, char *err,
                       size_t errlen) {
  if (!k->choices) {
    if (parse_u64(v, vlen, k->min, k->max, out) == 0)
      return 0;
    snprintf(err, errlen, "chat: %s must be a number in %llu..%llu", k->key,
             (unsigned long long)k->min, (unsigned long long)k->max);
    return -1;
  }
  for (uint64_t i = 0; k->choices[i]; i++)
    if (strlen(k->choices[i]) == vlen && memcmp(k->choices[i], v, vlen) == 0) {
      *out = i;
      return 0;
    }
  snprintf(err, errlen, "chat: %s must be %s or %s", k->key, k->choices[0], k->choices[1]);
  return -1;
}

/* --handler-arg: comma-separated key=value pairs. */
static int parse_arg(proc_chat_settings *out, const char *arg, char *err, size_t errlen) {
  const char *p = arg;
  while (p && *p) {
    const char *end = strchr(p, ',');
    size_t len = end ? (size_t)(end - p) : strlen(p);
    const char *eq = memchr(p, '=', len);
    if (!eq) {
      snprintf(err, errlen, "chat: '%.*s' is not key=value", (int)len, p);
      return -1;
    }
    size_t klen = (size_t)(eq - p), k;
    for (k = 0; k < NSETTINGS; k++)
      if (strlen(settings[k].key) == klen && memcmp(settings[k].key, p, klen) == 0)
        break;
    if (k == NSETTINGS) {
      /* Rooms are channels: there is no member set left to bound (docs/HANDLERS.md). */
      if (klen == 11 && memcmp(p, "max_members", 11) == 0)
        snprintf(err, errlen,
                 "chat: max_members was removed (rooms are channels, with no member set); "
                 "bound rooms per user with max_rooms");
      else {
        char keys[128] = "";
        for (size_t i = 0, off = 0; i < NSETTINGS && off < sizeof keys; i++)
          off += (size_t)snprintf(keys + off, sizeof keys - off, "%s%s", i ? ", " : "",
                                  settings[i].key);
        snprintf(err, errlen, "chat: unknown setting '%.*s' (%s)", (int)klen, p, keys);
      }
      return -1;
    }
    uint64_t *dst = (uint64_t *)(void *)((char *)out + settings[k].off);
    if (parse_value(&settings[k], eq + 1, len - klen - 1, dst, err, errlen) != 0)
      return -1;
    p = end ? end + 1 : NULL;
  }
  if (out->max_text >= out->max_frame) {
    snprintf(err, errlen, "chat: max_text (%llu) must be below max_frame (%llu)",
             (unsigned long long)out->max_text, (unsigned long long)out->max_frame);
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
  proc_chat_settings set = {.max_rooms = DEFAULT_MAX_ROOMS,
                            .room_ttl = DEFAULT_ROOM_TTL,
                            .max_text = DEFAULT_MAX_TEXT,
                            .max_frame = DEFAULT_MAX_FRAME,
                            .dm_offline = PROC_CHAT_DM_SILENT};
  if (parse_arg(&set, arg, err, errlen) != 0) {
    free(st);
    return -1;
  }
  st->max_rooms = (uint32_t)set.max_rooms;
  st->room_ttl_s = (uint32_t)set.room_ttl;
  st->dm_offline = (proc_chat_dm_offline)set.dm_offline;
  st->lim.max_text = set.max_text;
  st->lim.max_frame = set.max_frame;
  *state = st;
  return 0;
}

static void chat_destroy(void *state) {
  free(state);
}

static const wsgate_handler chat_handler = {
    .abi_version = WSGATE_HANDLER_ABI_SUBSCRIBE,
    .name = "chat",
    .init = chat_init,
    .destroy = chat_destroy,
    .on_connect = chat_connect,
    .on_message = chat_message,
    .on_subscribe = chat_subscribe,
};

const wsgate_handler *proc_chat_handler(void) {
  return &chat_handler;
}
