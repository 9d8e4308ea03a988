/*
 * proc_pubsub: the `publish` handler (see proc_pubsub.h).
 *
 * Threads: the consumer thread.
 */
#include "proc_pubsub.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* s as a JSON string's contents into out (at most 6 bytes per input byte). */
static size_t json_escape(char *out, const char *s, size_t n) {
  size_t k = 0;
  for (size_t i = 0; i < n; i++) {
    unsigned char c = (unsigned char)s[i];
    if (c == '"' || c == '\\') {
      out[k++] = '\\';
      out[k++] = (char)c;
    } else if (c < 0x20) {
      k += (size_t)snprintf(out + k, 7, "\\u%04x", c);
    } else {
      out[k++] = (char)c;
    }
  }
  return k;
}

/* "?<channel>": replies {"channel":..,"connections":N,"users":[..]} (wsgate_presence). */
static int presence(wsgate_ctx *ctx, const wsgate_event *ev) {
  const char *ch = (const char *)ev->payload + 1;
  size_t chlen = ev->payload_len - 1;
  const wsgate_presence_entry *e;
  size_t n;
  int rc = wsgate_presence(ctx, ch, chlen, &e, &n);
  if (rc == WSGATE_E_REDIS)
    return WSGATE_RETRY;
  if (rc != WSGATE_OK) {
    wsgate_set_error(ctx, "presence: %s", wsgate_strerror(rc));
    return rc == WSGATE_E_INVAL ? WSGATE_REJECT : WSGATE_ERROR;
  }
  size_t cap = 64 + 6 * chlen;
  for (size_t i = 0; i < n; i++)
    cap += 3 + 6 * e[i].user_len;
  char *out = malloc(cap);
  if (!out)
    return WSGATE_RETRY;
  size_t k = (size_t)snprintf(out, cap, "{\"channel\":\"");
  k += json_escape(out + k, ch, chlen);
  k += (size_t)snprintf(out + k, cap - k, "\",\"connections\":%zu,\"users\":[", n);
  for (size_t i = 0; i < n; i++) {
    out[k++] = i ? ',' : '"';
    if (i)
      out[k++] = '"';
    k += json_escape(out + k, e[i].user, e[i].user_len);
    out[k++] = '"';
  }
  out[k++] = ']';
  out[k++] = '}';
  rc = wsgate_reply(ctx, out, k, false);
  free(out);
  return rc == WSGATE_OK ? WSGATE_OK : WSGATE_ERROR;
}

/* "+<channel>" / "-<channel>": (un)subscribes the sender's connection; "+<channel>\n<user>":
 * every connection of <user> (wsgate_subscribe). The gateway tells the clients; no reply. */
static int chsub(wsgate_ctx *ctx, const wsgate_event *ev) {
  const char *p = (const char *)ev->payload + 1;
  size_t n = ev->payload_len - 1;
  const char *nl = memchr(p, '\n', n);
  size_t chlen = nl ? (size_t)(nl - p) : n;
  const char *user = nl ? nl + 1 : NULL;
  size_t ulen = nl ? n - chlen - 1 : 0;
  int rc = ev->payload[0] == '+' ? wsgate_subscribe(ctx, user, ulen, p, chlen)
                                 : wsgate_unsubscribe(ctx, user, ulen, p, chlen);
  if (rc == WSGATE_OK)
    return WSGATE_OK;
  wsgate_set_error(ctx, "cannot %ssubscribe: %s", ev->payload[0] == '+' ? "" : "un",
                   wsgate_strerror(rc));
  return rc == WSGATE_E_INVAL ? WSGATE_REJECT : WSGATE_ERROR;
}

static int pubsub_message(void *state, wsgate_ctx *ctx, const wsgate_event *ev) {
  (void)state;
  if (ev->payload_len > 1 && ev->payload[0] == '?' && !ev->binary)
    return presence(ctx, ev);
  if (ev->payload_len > 1 && (ev->payload[0] == '+' || ev->payload[0] == '-') && !ev->binary)
    return chsub(ctx, ev);
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

/* subscribe=handler namespaces: allows every channel but those starting with "deny:", refused
 * with a reason (tests and demos see both answers). */
static int pubsub_subscribe(void *state, wsgate_ctx *ctx, const wsgate_event *ev) {
  (void)state;
  if (ev->channel_len >= 5 && memcmp(ev->channel, "deny:", 5) == 0) {
    wsgate_set_error(ctx, "the publish handler refuses deny:* channels");
    return WSGATE_REJECT;
  }
  return WSGATE_OK;
}

static const wsgate_handler pubsub_handler = {
    .abi_version = WSGATE_HANDLER_ABI_SUBSCRIBE,
    .name = "publish",
    .on_message = pubsub_message,
    .on_subscribe = pubsub_subscribe,
};

const wsgate_handler *proc_pubsub_handler(void) {
  return &pubsub_handler;
}
