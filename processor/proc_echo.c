/*
 * proc_echo: the `echo` handler (see proc_echo.h).
 *
 * Threads: the consumer thread.
 */
#include "proc_echo.h"

static int echo_message(void *state, wsgate_ctx *ctx, const wsgate_event *ev) {
  (void)state;
  int rc = wsgate_reply(ctx, ev->payload, ev->payload_len, ev->binary);
  switch (rc) {
  case WSGATE_OK:
    return WSGATE_OK;
  case WSGATE_E_TOOBIG:
  case WSGATE_E_INVAL:
    /* Larger than --max-payload, or a "text" frame that is not UTF-8: the client's input. */
    wsgate_set_error(ctx, "cannot echo %zu bytes: %s", ev->payload_len, wsgate_strerror(rc));
    return WSGATE_REJECT;
  default:
    wsgate_set_error(ctx, "reply failed: %s", wsgate_strerror(rc));
    return WSGATE_ERROR;
  }
}

static const wsgate_handler echo_handler = {
    .abi_version = WSGATE_HANDLER_ABI_VERSION,
    .name = "echo",
    .on_message = echo_message,
};

const wsgate_handler *proc_echo_handler(void) {
  return &echo_handler;
}
