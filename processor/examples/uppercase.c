/*
 * uppercase: an example wsgate-processor handler, built as a shared object and loaded with
 *
 *     wsgate-processor --handler ./libwsgate_uppercase.so --handler-arg '> '
 *
 * It replies to every text frame with the same text in upper case (ASCII letters only, so the
 * reply stays valid UTF-8), after the prefix given by --handler-arg; binary frames are refused.
 * It greets each new connection and counts the frames it handled, to show per-handler state.
 *
 * Everything it needs comes from wsgate_handler.h: the processor hands it the functions through
 * the context, so this file links against nothing. docs/HANDLERS.md walks through it.
 *
 * Threads: the processor calls every callback on its consumer thread, one at a time, so the state
 * needs no lock.
 */
#include <stdlib.h>
#include <string.h>

#include "wsgate_handler.h"

/* Longest prefix accepted from --handler-arg. */
#define PREFIX_MAX 64
/* Longest frame this handler answers; longer ones are refused. */
#define FRAME_MAX 65536

typedef struct {
  char prefix[PREFIX_MAX + 1];
  size_t prefix_len;
  unsigned long long frames;
  char *buf; /* reused for every reply: no allocation per frame */
} uppercase_state;

static int uc_init(void **state, const wsgate_api *api, const char *arg, char *err, size_t errlen) {
  (void)api;
  size_t len = arg ? strlen(arg) : 0;
  if (len > PREFIX_MAX) {
    /* A message for the operator: the processor exits with status 2 and prints it. */
    strncpy(err, "the prefix (--handler-arg) is longer than 64 bytes", errlen - 1);
    err[errlen - 1] = '\0';
    return -1;
  }
  uppercase_state *st = calloc(1, sizeof(*st));
  if (!st || !(st->buf = malloc(PREFIX_MAX + FRAME_MAX))) {
    free(st);
    strncpy(err, "out of memory", errlen - 1);
    err[errlen - 1] = '\0';
    return -1;
  }
  if (arg)
    memcpy(st->prefix, arg, len);
  st->prefix_len = len;
  *state = st;
  return 0;
}

static void uc_destroy(void *state) {
  uppercase_state *st = state;
  if (!st)
    return;
  free(st->buf);
  free(st);
}

static int uc_connect(void *state, wsgate_ctx *ctx, const wsgate_event *ev) {
  (void)state;
  char hello[300];
  size_t n = ev->user_len < 256 ? ev->user_len : 256;
  memcpy(hello, "HELLO ", 6);
  memcpy(hello + 6, ev->user, n);
  int rc = wsgate_reply(ctx, hello, 6 + n, false);
  if (rc != WSGATE_OK) {
    wsgate_set_error(ctx, "greeting: %s", wsgate_strerror(rc));
    return WSGATE_ERROR;
  }
  return WSGATE_OK;
}

static int uc_message(void *state, wsgate_ctx *ctx, const wsgate_event *ev) {
  uppercase_state *st = state;
  if (ev->binary) {
    /* REJECT: the client sent something this handler does not accept. The processor counts it,
     * logs the reason at a bounded rate and sends the record to the dead-letter topic. */
    wsgate_set_error(ctx, "binary frames are not supported");
    return WSGATE_REJECT;
  }
  if (ev->payload_len > FRAME_MAX) {
    wsgate_set_error(ctx, "frame of %zu bytes is larger than %d", ev->payload_len, FRAME_MAX);
    return WSGATE_REJECT;
  }
  memcpy(st->buf, st->prefix, st->prefix_len);
  char *out = st->buf + st->prefix_len;
  for (size_t i = 0; i < ev->payload_len; i++) {
    char c = (char)ev->payload[i];
    out[i] = (c >= 'a' && c <= 'z') ? (char)(c - 'a' + 'A') : c;
  }
  st->frames++;
  /* The reply is copied by the processor: the buffer can be reused at once. */
  int rc = wsgate_reply(ctx, st->buf, st->prefix_len + ev->payload_len, false);
  if (rc != WSGATE_OK) {
    wsgate_set_error(ctx, "reply: %s", wsgate_strerror(rc));
    return rc == WSGATE_E_TOOBIG || rc == WSGATE_E_INVAL ? WSGATE_REJECT : WSGATE_ERROR;
  }
  if (st->frames % 100000 == 0)
    wsgate_log(ctx, WSGATE_LOG_INFO, "uppercase: %llu frames so far", st->frames);
  return WSGATE_OK;
}

static const wsgate_handler uppercase = {
    .abi_version = WSGATE_HANDLER_ABI_VERSION,
    .name = "uppercase",
    .init = uc_init,
    .destroy = uc_destroy,
    .on_connect = uc_connect,
    .on_message = uc_message,
    /* on_disconnect: NULL, nothing to do */
};

WSGATE_HANDLER_EXPORT const wsgate_handler *wsgate_handler_v1(void) {
  return &uppercase;
}
