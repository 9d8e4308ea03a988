/*
 * proc_pubsub: the `publish` handler (see proc_pubsub.h).
 *
 * Threads: the consumer thread.
 */
#include "proc_pubsub.h"

#include <string.h>

static int pubsub_message(void *state, wsgate_ctx *ctx, const wsgate_event *ev) {
  (void)state;
  const uint8_t *nl = ev->payload ? memchr(ev->payload, '\n', ev->payload_len) : NULL;
  if (!nl) {
    wsgate_set_error(ctx, "expected <channel>\\n<payload>");
    return WSGATE_REJECT;
  }
  size_t chlen = (size_t)(nl - ev->payload);
  int rc = wsgate_publish(ctx, (const char *)ev->payload, chlen, nl + 1,
                          ev->payload_len - chlen - 1, ev->binary);
  if (rc == WSGATE_OK)
    return WSGATE_OK;
  wsgate_set_error(ctx, "cannot publish to %.*s: %s", (int)(chlen > 200 ? 200 : chlen),
                   (const char *)ev->payload, wsgate_strerror(rc));
  return rc == WSGATE_E_INVAL || rc == WSGATE_E_TOOBIG ? WSGATE_REJECT : WSGATE_ERROR;
}

static const wsgate_handler pubsub_handler = {
    .abi_version = WSGATE_HANDLER_ABI_VERSION,
    .name = "publish",
    .on_message = pubsub_message,
};

const wsgate_handler *proc_pubsub_handler(void) {
  return &pubsub_handler;
}
