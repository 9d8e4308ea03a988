/*
 * proc_handler: loads a handler (built-in or shared object) and implements the wsgate_api table
 * its callbacks act through. Every action is validated here, where the handler can still be told
 * what was wrong, and recorded in the batch's outbox; nothing is sent before the callback returns.
 *
 * Threads: the consumer thread.
 */
#include "proc_handler.h"

#include <dlfcn.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "proc_builtin.h"
#include "proc_clientpub.h"
#include "proc_presence.h"
#include "wsg_log.h"

/* wsgate_redis() calls one callback may make: each keeps its replies until the callback returns. */
#define MAX_REDIS_CALLS 64

struct proc_handler {
  const wsgate_handler *vt;
  void *state;
  void *dl; /* dlopen handle; NULL for a built-in */
  char *name;
};

/* The context behind a wsgate_ctx: `pub` first, so the handler's pointer converts back. */
typedef struct {
  wsgate_ctx pub;
  const proc_dispatch_env *denv;
  uint32_t rec;
  wsgate_event_kind kind;
  proc_origin origin;
  unsigned actions;
  size_t fanout; /* users addressed so far */
  size_t bytes;  /* payload bytes recorded so far */
  void *blocks[MAX_REDIS_CALLS];
  size_t nblocks;
  char *why;
  size_t whylen;
  bool why_set;
} proc_ctx;

static proc_ctx *ctx_of(wsgate_ctx *c) {
  return (proc_ctx *)(void *)c;
}

/* --- the API table ------------------------------------------------------------------------- */

/* The close codes a server may send (RFC 6455 §7.4; 1004-1006 and 1015 are never sent). */
static bool close_code_sendable(unsigned cc) {
  return (cc >= 1000 && cc <= 1003) || (cc >= 1007 && cc <= 1014) || (cc >= 3000 && cc <= 4999);
}

static int check_payload(proc_ctx *c, const void *p, size_t len, bool binary) {
  if (!p && len > 0)
    return WSGATE_E_INVAL;
  if (len > c->denv->max_payload)
    return WSGATE_E_TOOBIG;
  /* A text frame must be UTF-8 (RFC 6455 §5.6): a client would fail the connection. */
  if (!binary && !wsg_utf8_valid(p, len))
    return WSGATE_E_INVAL;
  return WSGATE_OK;
}

static int check_user(const char *u, size_t len) {
  if (!u || len == 0 || len > WSG_MAX_USER_LEN || !wsg_utf8_valid(u, len))
    return WSGATE_E_INVAL;
  return WSGATE_OK;
}

/* Counts one action addressing `users` users with `bytes` of payload against the per-callback
 * limits, which bound what one envelope can make the batch hold. */
static int take_action(proc_ctx *c, size_t users, size_t bytes) {
  if (c->actions >= WSGATE_MAX_ACTIONS || users > WSGATE_MAX_FANOUT - c->fanout ||
      bytes > c->denv->max_payload * WSGATE_MAX_PAYLOADS_PER_CALLBACK - c->bytes)
    return WSGATE_E_LIMIT;
  c->actions++;
  c->fanout += users;
  c->bytes += bytes;
  return WSGATE_OK;
}

static int api_reply(wsgate_ctx *ctx, const void *payload, size_t len, bool binary) {
  proc_ctx *c = ctx_of(ctx);
  if (c->kind == WSGATE_EVENT_DISCONNECT)
    return WSGATE_E_STATE;
  int rc = check_payload(c, payload, len, binary);
  if (rc == WSGATE_OK)
    rc = take_action(c, 0, len);
  if (rc == WSGATE_OK &&
      proc_outbox_reply(c->denv->box, c->rec, &c->origin, payload, len, binary) != 0)
    rc = WSGATE_E_NOMEM;
  return rc;
}

static int send_common(proc_ctx *c, const proc_strref *users, size_t n, const void *payload,
                       size_t len, bool binary, const void *fb, size_t fb_len, bool fb_binary) {
  int rc = check_payload(c, payload, len, binary);
  if (rc != WSGATE_OK)
    return rc;
  if (fb) {
    if (c->kind == WSGATE_EVENT_DISCONNECT)
      return WSGATE_E_STATE;
    if ((rc = check_payload(c, fb, fb_len, fb_binary)) != WSGATE_OK)
      return rc;
  }
  for (size_t i = 0; i < n; i++)
    if ((rc = check_user(users[i].ptr, users[i].len)) != WSGATE_OK)
      return rc;
  if ((rc = take_action(c, n, len + (fb ? fb_len : 0))) != WSGATE_OK)
    return rc;
  if (proc_outbox_send(c->denv->box, c->rec, users, n, payload, len, binary, fb ? &c->origin : NULL,
                       fb, fb_len, fb_binary) != 0)
    return WSGATE_E_NOMEM;
  return WSGATE_OK;
}

static int api_send_user(wsgate_ctx *ctx, const char *user, size_t user_len, const void *payload,
                         size_t len, bool binary) {
  proc_strref u = {.ptr = user, .len = user_len};
  return send_common(ctx_of(ctx), &u, 1, payload, len, binary, NULL, 0, false);
}

static int api_send_user_or_reply(wsgate_ctx *ctx, const char *user, size_t user_len,
                                  const void *payload, size_t len, bool binary,
                                  const void *fallback, size_t fallback_len, bool fallback_binary) {
  if (!fallback)
    return WSGATE_E_INVAL;
  proc_strref u = {.ptr = user, .len = user_len};
  return send_common(ctx_of(ctx), &u, 1, payload, len, binary, fallback, fallback_len,
                     fallback_binary);
}

static int api_send_users(wsgate_ctx *ctx, const wsgate_str *users, size_t nusers,
                          const void *payload, size_t len, bool binary) {
  if (nusers == 0)
    return WSGATE_OK;
  if (!users)
    return WSGATE_E_INVAL;
  if (nusers > WSGATE_MAX_FANOUT)
    return WSGATE_E_LIMIT;
  /* wsgate_str and proc_strref have the same members; the handler's array is used as is. */
  _Static_assert(sizeof(wsgate_str) == sizeof(proc_strref) &&
                     offsetof(wsgate_str, ptr) == offsetof(proc_strref, ptr) &&
                     offsetof(wsgate_str, len) == offsetof(proc_strref, len),
                 "wsgate_str must match proc_strref");
  return send_common(ctx_of(ctx), (const proc_strref *)(const void *)users, nusers, payload, len,
                     binary, NULL, 0, false);
}

static int check_close(unsigned code, const char *reason, size_t *reason_len) {
  if (!close_code_sendable(code))
    return WSGATE_E_INVAL;
  *reason_len = reason ? strnlen(reason, WSG_MAX_REASON_LEN + 1) : 0;
  if (*reason_len > WSG_MAX_REASON_LEN || !wsg_utf8_valid(reason, *reason_len))
    return WSGATE_E_INVAL;
  return WSGATE_OK;
}

static int api_close(wsgate_ctx *ctx, uint16_t code, const char *reason) {
  proc_ctx *c = ctx_of(ctx);
  if (c->kind == WSGATE_EVENT_DISCONNECT)
    return WSGATE_E_STATE;
  size_t rlen;
  int rc = check_close(code, reason, &rlen);
  if (rc == WSGATE_OK)
    rc = take_action(c, 0, 0);
  if (rc == WSGATE_OK &&
      proc_outbox_close(c->denv->box, c->rec, &c->origin, code, reason, rlen) != 0)
    rc = WSGATE_E_NOMEM;
  return rc;
}

static int api_close_user(wsgate_ctx *ctx, const char *user, size_t user_len, uint16_t code,
                          const char *reason) {
  proc_ctx *c = ctx_of(ctx);
  size_t rlen;
  int rc = check_close(code, reason, &rlen);
  if (rc == WSGATE_OK)
    rc = check_user(user, user_len);
  if (rc == WSGATE_OK)
    rc = take_action(c, 1, 0);
  proc_strref u = {.ptr = user, .len = user_len};
  if (rc == WSGATE_OK &&
      proc_outbox_close_users(c->denv->box, c->rec, &u, 1, code, reason, rlen) != 0)
    rc = WSGATE_E_NOMEM;
  return rc;
}

static int api_redis(wsgate_ctx *ctx, const wsgate_redis_cmd *cmds, size_t ncmds,
                     const wsgate_redis_reply **replies) {
  proc_ctx *c = ctx_of(ctx);
  if (!c->denv->router)
    return WSGATE_E_REDIS;
  if (c->nblocks >= MAX_REDIS_CALLS)
    return WSGATE_E_LIMIT;
  char err[256];
  void *block = NULL;
  int rc = proc_redis_command(c->denv->router, cmds, ncmds, replies, &block, err, sizeof(err));
  if (rc != WSGATE_OK) {
    if (rc != WSGATE_E_REDIS)
      WSG_DEBUG("handler", "wsgate_redis: %s", err);
    return rc;
  }
  c->blocks[c->nblocks++] = block;
  return WSGATE_OK;
}

static int api_publish(wsgate_ctx *ctx, const char *channel, size_t channel_len,
                       const void *payload, size_t len, bool binary) {
  proc_ctx *c = ctx_of(ctx);
  if (!channel || !wsg_channel_name_valid(channel, channel_len))
    return WSGATE_E_INVAL;
  int rc = check_payload(c, payload, len, binary);
  if (rc == WSGATE_OK)
    rc = take_action(c, 0, len + channel_len);
  if (rc == WSGATE_OK &&
      proc_outbox_publish(c->denv->box, c->rec, channel, channel_len, payload, len, binary) != 0)
    rc = WSGATE_E_NOMEM;
  return rc;
}

/* wsgate_subscribe / wsgate_unsubscribe: the origin connection (user NULL) or every connection
 * of `user`. No permission check: the handler decides. */
static int chsub_common(wsgate_ctx *ctx, const char *user, size_t user_len, const char *channel,
                        size_t channel_len, bool subscribe) {
  proc_ctx *c = ctx_of(ctx);
  if (!channel || !wsg_channel_name_valid(channel, channel_len))
    return WSGATE_E_INVAL;
  int rc = WSGATE_OK;
  if (!user && c->kind == WSGATE_EVENT_DISCONNECT)
    return WSGATE_E_STATE; /* the connection is gone */
  if (user)
    rc = check_user(user, user_len);
  if (rc == WSGATE_OK)
    rc = take_action(c, user ? 1 : 0, channel_len);
  proc_strref u = {.ptr = user, .len = user_len};
  if (rc == WSGATE_OK && proc_outbox_chsub(c->denv->box, c->rec, user ? NULL : &c->origin, &u,
                                           user ? 1 : 0, channel, channel_len, subscribe) != 0)
    rc = WSGATE_E_NOMEM;
  return rc;
}

static int api_subscribe(wsgate_ctx *ctx, const char *user, size_t user_len, const char *channel,
                         size_t channel_len) {
  return chsub_common(ctx, user, user_len, channel, channel_len, true);
}

static int api_unsubscribe(wsgate_ctx *ctx, const char *user, size_t user_len, const char *channel,
                           size_t channel_len) {
  return chsub_common(ctx, user, user_len, channel, channel_len, false);
}

static int api_presence(wsgate_ctx *ctx, const char *channel, size_t channel_len,
                        const wsgate_presence_entry **entries, size_t *n) {
  proc_ctx *c = ctx_of(ctx);
  if (!entries || !n)
    return WSGATE_E_INVAL;
  *entries = NULL;
  *n = 0;
  if (!channel || !wsg_channel_name_valid(channel, channel_len))
    return WSGATE_E_INVAL;
  if (!c->denv->router)
    return WSGATE_E_REDIS;
  if (c->nblocks + 2 > MAX_REDIS_CALLS)
    return WSGATE_E_LIMIT;
  char err[256];
  void *block = NULL;
  int rc = proc_presence_read(c->denv->router, channel, channel_len, entries, n, &block, err,
                              sizeof err);
  if (rc != WSGATE_OK) {
    WSG_DEBUG("handler", "wsgate_presence: %s", err);
    return rc;
  }
  /* The replies the entries point into, then the entries' own block: freed after the callback. */
  c->blocks[c->nblocks++] = ((void **)block)[0];
  c->blocks[c->nblocks++] = block;
  return WSGATE_OK;
}

static const char *api_redis_prefix(const wsgate_ctx *ctx) {
  return ((const proc_ctx *)(const void *)ctx)->denv->prefix;
}

__attribute__((format(printf, 2, 3))) static void api_set_error(wsgate_ctx *ctx, const char *fmt,
                                                                ...) {
  proc_ctx *c = ctx_of(ctx);
  if (!c->why || c->whylen == 0)
    return;
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(c->why, c->whylen, fmt, ap);
  va_end(ap);
  c->why_set = true;
}

__attribute__((format(printf, 2, 3))) static void api_log(wsgate_log_level level, const char *fmt,
                                                          ...) {
  wsg_log_level lvl = level <= WSGATE_LOG_DEBUG  ? WSG_LOG_DEBUG
                      : level == WSGATE_LOG_INFO ? WSG_LOG_INFO
                      : level == WSGATE_LOG_WARN ? WSG_LOG_WARN
                                                 : WSG_LOG_ERROR;
  if (lvl < wsg_log_min_level)
    return;
  char line[2048];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(line, sizeof(line), fmt, ap);
  va_end(ap);
  wsg_log_write(lvl, "handler", "handler", 0, "%s", line);
}

static const wsgate_api proc_api = {
    .abi_version = WSGATE_HANDLER_ABI_VERSION,
    .size = sizeof(wsgate_api),
    .reply = api_reply,
    .send_user = api_send_user,
    .send_user_or_reply = api_send_user_or_reply,
    .send_users = api_send_users,
    .close = api_close,
    .close_user = api_close_user,
    .redis = api_redis,
    .redis_prefix = api_redis_prefix,
    .set_error = api_set_error,
    .log = api_log,
    .publish = api_publish,
    .presence = api_presence,
    .subscribe = api_subscribe,
    .unsubscribe = api_unsubscribe,
};

/* --- loading ------------------------------------------------------------------------------- */

/* 1: the callbacks up to on_disconnect; 2: also on_subscribe (wsgate_handler.h). */
static bool abi_known(const wsgate_handler *vt) {
  return vt->abi_version == WSGATE_HANDLER_ABI_VERSION ||
         vt->abi_version == WSGATE_HANDLER_ABI_SUBSCRIBE;
}

static const wsgate_handler *load_plugin(const char *path, void **dl, char *err, size_t errlen) {
  /* RTLD_LOCAL: two plugins' symbols never collide; RTLD_NOW: a missing symbol fails here, at
   * start, not at the first message that needs it. */
  void *h = dlopen(path, RTLD_NOW | RTLD_LOCAL);
  if (!h) {
    snprintf(err, errlen, "--handler %s: cannot load: %s", path, dlerror());
    return NULL;
  }
  void *sym = dlsym(h, WSGATE_HANDLER_ENTRY);
  if (!sym) {
    snprintf(err, errlen,
             "--handler %s: no symbol %s; a plugin defines "
             "`WSGATE_HANDLER_EXPORT const wsgate_handler *%s(void)` (see docs/HANDLERS.md)",
             path, WSGATE_HANDLER_ENTRY, WSGATE_HANDLER_ENTRY);
    dlclose(h);
    return NULL;
  }
  wsgate_handler_entry_fn entry;
  /* POSIX guarantees a data pointer from dlsym converts to a function pointer; ISO C does not, so
   * the bytes are copied rather than cast. */
  memcpy(&entry, &sym, sizeof(entry));
  const wsgate_handler *vt = entry();
  if (!vt) {
    snprintf(err, errlen, "--handler %s: %s() returned NULL", path, WSGATE_HANDLER_ENTRY);
    dlclose(h);
    return NULL;
  }
  if (!abi_known(vt)) {
    snprintf(err, errlen,
             "--handler %s: built for handler ABI version %u, this processor speaks versions %d "
             "and %d; rebuild it against this processor's wsgate_handler.h",
             path, vt->abi_version, WSGATE_HANDLER_ABI_VERSION, WSGATE_HANDLER_ABI_SUBSCRIBE);
    dlclose(h);
    return NULL;
  }
  *dl = h;
  return vt;
}

/* Takes vt (and dl, closed on failure), names the handler and calls its init. */
static int open_vt(proc_handler **out, const wsgate_handler *vt, void *dl,
                   const char *fallback_name, const char *arg, char *err, size_t errlen) {
  proc_handler *h = calloc(1, sizeof(*h));
  if (!h) {
    snprintf(err, errlen, "out of memory");
    goto fail;
  }
  h->vt = vt;
  h->dl = dl;
  h->name = strdup(vt->name && *vt->name ? vt->name : fallback_name);
  if (!h->name) {
    snprintf(err, errlen, "out of memory");
    goto fail;
  }
  if (vt->init) {
    char herr[512] = "";
    if (vt->init(&h->state, &proc_api, arg, herr, sizeof(herr)) != 0) {
      snprintf(err, errlen, "--handler %s: init failed: %s", h->name,
               herr[0] ? herr : "(no reason given)");
      goto fail;
    }
  }
  *out = h;
  return 0;
fail:
  if (h)
    free(h->name);
  free(h);
  if (dl)
    dlclose(dl);
  return -1;
}

int proc_handler_open_table(proc_handler **out, const wsgate_handler *vt, const char *arg,
                            char *err, size_t errlen) {
  *out = NULL;
  if (!vt || !abi_known(vt)) {
    snprintf(err, errlen, "handler table missing or of another ABI version");
    return -1;
  }
  return open_vt(out, vt, NULL, "handler", arg, err, errlen);
}

int proc_handler_open(proc_handler **out, const char *name, const char *arg, char *err,
                      size_t errlen) {
  *out = NULL;
  if (!name || !*name) {
    snprintf(err, errlen, "--handler is empty");
    return -1;
  }
  const wsgate_handler *vt;
  void *dl = NULL;
  if (strchr(name, '/')) {
    vt = load_plugin(name, &dl, err, errlen);
  } else {
    vt = proc_builtin_find(name);
    if (!vt)
      snprintf(err, errlen,
               "--handler %s: no built-in handler of that name (built-ins: " PROC_BUILTIN_NAMES
               "); to load a shared object give its path, e.g. ./%s.so",
               name, name);
  }
  if (!vt)
    return -1;
  return open_vt(out, vt, dl, name, arg, err, errlen);
}

void proc_handler_close(proc_handler *h) {
  if (!h)
    return;
  if (h->vt->destroy)
    h->vt->destroy(h->state);
  if (h->dl)
    dlclose(h->dl);
  free(h->name);
  free(h);
}

const char *proc_handler_name(const proc_handler *h) {
  return h->name;
}

/* --- dispatch ------------------------------------------------------------------------------ */

/* A client's publish op (proc_clientpub): published here, the handler never sees it. 1 when it
 * was one (recorded), -1 when it was a bad one (why says so), 0 when the frame is not one. */
static int client_publish(const proc_dispatch_env *denv, uint32_t rec, const wsg_envelope *env,
                          char *why, size_t whylen) {
  proc_clientpub cp;
  int r = proc_clientpub_parse(env->data, env->data_len, env->binary, &cp);
  if (r == 0)
    return 0;
  if (r < 0) {
    snprintf(why, whylen, "a malformed publish op");
    return -1;
  }
  if (cp.len > denv->max_payload) {
    snprintf(why, whylen, "a publish op of %zu bytes (--max-payload %llu)", cp.len,
             (unsigned long long)denv->max_payload);
    r = -1;
  } else if (proc_outbox_publish(denv->box, rec, cp.channel, cp.channel_len, cp.data, cp.len,
                                 cp.binary) != 0) {
    snprintf(why, whylen, "out of memory recording a publish op");
    r = -1;
  }
  proc_clientpub_finish(&cp);
  return r;
}

/* The longest prefix of s[0..len) that is at most `max` bytes and ends on a UTF-8 boundary. */
static size_t utf8_prefix(const char *s, size_t len, size_t max) {
  if (len <= max)
    return len;
  size_t n = max;
  while (n > 0 && ((unsigned char)s[n] & 0xc0) == 0x80)
    n--;
  return n;
}

/* Records the answer to a subscribe_request once on_subscribe returned `rc`, not WSGATE_RETRY
 * (has_fn false: the handler has none). A refusal is an answer, not bad input: nothing is
 * dead-lettered for it. WSGATE_RETRY when the answer could not be recorded. */
static int answer_subscribe(proc_handler *h, proc_ctx *c, const wsg_envelope *env, bool has_fn,
                            int rc, char *why, size_t whylen) {
  const char *reason = NULL;
  switch (rc) {
  case WSGATE_OK:
    break;
  case WSGATE_REJECT:
    reason = !has_fn      ? "the handler does not decide subscriptions"
             : c->why_set ? why
                          : "refused by the handler";
    break;
  default:
    reason = "the handler failed";
    break;
  }
  size_t rlen = reason ? utf8_prefix(reason, strlen(reason), WSG_MAX_REASON_LEN) : 0;
  if (reason && !wsg_utf8_valid(reason, rlen)) {
    reason = "refused by the handler";
    rlen = strlen(reason);
  }
  if (proc_outbox_chsub_answer(c->denv->box, c->rec, &c->origin, env->channel, env->channel_len,
                               env->request, reason, rlen) != 0) {
    if (why && whylen)
      snprintf(why, whylen, "out of memory recording the answer to a subscribe_request");
    return WSGATE_RETRY;
  }
  if (rc == WSGATE_OK || rc == WSGATE_REJECT)
    return WSGATE_OK;
  if (why && whylen && !c->why_set)
    snprintf(why, whylen, "handler %s failed deciding a subscribe to %.*s", h->name,
             (int)env->channel_len, env->channel);
  return WSGATE_ERROR;
}

int proc_handler_dispatch(proc_handler *h, const proc_dispatch_env *denv, uint32_t rec,
                          const wsg_envelope *env, int32_t partition, int64_t offset, char *why,
                          size_t whylen) {
  wsgate_event_fn fn;
  wsgate_event_kind kind;
  if (env->kind == WSG_ENV_JOINLEAVE) {
    /* A gateway's join/leave batch (the decoder checked g, ch and d): addressed to the
     * channel's gateways, never seen by the handler. */
    if (env->data_len > denv->max_payload ||
        proc_outbox_joinleave(denv->box, rec, env->channel, env->channel_len, env->data,
                              env->data_len) != 0) {
      snprintf(why, whylen, "a joinleave batch of %zu bytes not recorded", env->data_len);
      return WSGATE_REJECT;
    }
    return WSGATE_OK;
  }
  if (env->kind == WSG_ENV_MSG)
    switch (client_publish(denv, rec, env, why, whylen)) {
    case 1:
      return WSGATE_OK;
    case -1:
      return WSGATE_REJECT;
    default:
      break; /* not a publish op: the handler's */
    }
  switch (env->kind) {
  case WSG_ENV_MSG:
    fn = h->vt->on_message;
    kind = WSGATE_EVENT_MESSAGE;
    break;
  case WSG_ENV_CONNECT:
    fn = h->vt->on_connect;
    kind = WSGATE_EVENT_CONNECT;
    break;
  case WSG_ENV_DISCONNECT:
    fn = h->vt->on_disconnect;
    kind = WSGATE_EVENT_DISCONNECT;
    break;
  case WSG_ENV_SUB_REQUEST:
    /* Never read past on_disconnect of an older table. */
    fn = h->vt->abi_version == WSGATE_HANDLER_ABI_SUBSCRIBE ? h->vt->on_subscribe : NULL;
    kind = WSGATE_EVENT_SUBSCRIBE;
    break;
  default:
    snprintf(why, whylen,
             "a %s envelope on the inbound topic (only gateways' msg, connect, "
             "disconnect and subscribe_request belong there)",
             wsg_env_kind_name(env->kind));
    return WSGATE_REJECT;
  }
  if (!fn && kind != WSGATE_EVENT_SUBSCRIBE)
    return WSGATE_OK;

  /* The decoder guarantees u, c, g, s for these kinds, with bounded lengths (and ch for a
   * subscribe_request). */
  char user[WSG_MAX_USER_LEN + 1], gw[WSG_MAX_GATEWAY_LEN + 1], ch[WSG_MAX_CHANNEL_LEN + 1];
  memcpy(user, env->user, env->user_len);
  user[env->user_len] = '\0';
  memcpy(gw, env->gateway, env->gateway_len);
  gw[env->gateway_len] = '\0';

  wsgate_event ev = {
      .kind = kind,
      .user = user,
      .user_len = env->user_len,
      .conn = env->conn,
      .gateway = gw,
      .gateway_len = env->gateway_len,
      .slot = env->slot,
      .ts_us = (env->fields & WSG_F_TS) ? env->ts_us : 0,
      .seq = (env->fields & WSG_F_SEQ) ? env->seq : 0,
      .payload =
          kind == WSGATE_EVENT_MESSAGE ? (env->data ? env->data : (const uint8_t *)"") : NULL,
      .payload_len = kind == WSGATE_EVENT_MESSAGE ? env->data_len : 0,
      .binary = env->binary,
      .metadata = (env->fields & WSG_F_META) ? env->meta : NULL,
      .metadata_len = (env->fields & WSG_F_META) ? env->meta_len : 0,
      .close_code = (env->fields & WSG_F_CLOSE_CODE) ? env->close_code : 0,
      .partition = partition,
      .offset = offset,
  };
  if (kind == WSGATE_EVENT_SUBSCRIBE) {
    memcpy(ch, env->channel, env->channel_len);
    ch[env->channel_len] = '\0';
    ev.channel = ch;
    ev.channel_len = env->channel_len;
  }
  proc_ctx c = {
      .pub = {.api = &proc_api},
      .denv = denv,
      .rec = rec,
      .kind = kind,
      .origin = {.gateway = gw,
                 .gateway_len = env->gateway_len,
                 .slot = env->slot,
                 .conn = env->conn},
      .why = why,
      .whylen = whylen,
  };
  if (why && whylen)
    why[0] = '\0';
  proc_outbox_mark mark = proc_outbox_get_mark(denv->box);
  int rc = fn ? fn(h->state, &c.pub, &ev) : WSGATE_REJECT;
  for (size_t i = 0; i < c.nblocks; i++)
    free(c.blocks[i]);
  if (kind == WSGATE_EVENT_SUBSCRIBE) {
    if (rc != WSGATE_RETRY)
      rc = answer_subscribe(h, &c, env, fn != NULL, rc, why, whylen);
    if (rc == WSGATE_RETRY)
      proc_outbox_rollback(denv->box, mark);
    return rc;
  }

  switch (rc) {
  case WSGATE_OK:
    break;
  case WSGATE_RETRY:
    proc_outbox_rollback(denv->box, mark);
    break;
  case WSGATE_ERROR:
  case WSGATE_REJECT:
    if (!c.why_set && why && whylen)
      snprintf(why, whylen, "handler %s returned %s without a reason", h->name,
               rc == WSGATE_ERROR ? "WSGATE_ERROR" : "WSGATE_REJECT");
    break;
  default:
    if (why && whylen)
      snprintf(why, whylen, "handler %s returned %d, which is not a callback status", h->name, rc);
    rc = WSGATE_ERROR;
  }
  return rc;
}
