/*
 * gw_expiry: tokens expiring on live connections (docs/PROTOCOL.md, "Token refresh").
 *
 * When a connection's token "exp" passes, the gateway sends {"wsgate":"refresh_required",...}
 * and gives the client --token-refresh-grace to send a refresh op ({"wsgate":"refresh",
 * "token":"..."}, text or MessagePack) with a new token of the same user; otherwise it closes the
 * connection with 4003. Checks come from a wheel of one-second buckets (gw_keepalive, run by the
 * server's one-second keepalive timer): one entry per connection, O(1) per connection per second,
 * no per-connection ev_timer. A refresh only moves the session's deadline: the entry already in
 * the wheel finds the new deadline when it comes due and moves itself there, so there is never
 * more than one entry per connection.
 *
 * The session keeps the state in two fields: exp_state (NONE: not checked, e.g. a development
 * user or --token-refresh-grace 0; LIVE: exp_s is the token's "exp"; ASKED: the request was sent
 * and exp_s is the end of the grace).
 *
 * Threads: the loop thread only.
 */
#include <jansson.h>
#include <msgpack.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gw_chperm.h"
#include "gw_session.h"
#include "wsg_time.h"

/* The wheel's reach; a later expiry is looked at again after this long (one more O(1) step). */
#define EXPIRY_HORIZON_S 3600
#define ANSWER_MAX       512

#define REFRESH_RESULTS(X)                                                                         \
  X(OK, "ok", "refreshed", "")                                                                     \
  X(BAD_REQUEST, "bad_request", "error",                                                           \
    "the op is not {\"wsgate\":\"refresh\",\"token\":\"...\"}")                                    \
  X(INVALID_TOKEN, "invalid_token", "error", "")                                                   \
  X(WRONG_USER, "wrong_user", "error", "the new token is for another user")

enum {
#define REFRESH_ENUM(name, label, type, msg) RF_##name,
  REFRESH_RESULTS(REFRESH_ENUM)
#undef REFRESH_ENUM
      RF__COUNT
};

static const char *const rf_code[] = {
#define REFRESH_CODE(name, label, type, msg) label,
    REFRESH_RESULTS(REFRESH_CODE)
#undef REFRESH_CODE
};
static const char *const rf_type[] = {
#define REFRESH_TYPE(name, label, type, msg) type,
    REFRESH_RESULTS(REFRESH_TYPE)
#undef REFRESH_TYPE
};
static const char *const rf_msg[] = {
#define REFRESH_MSG(name, label, type, msg) msg,
    REFRESH_RESULTS(REFRESH_MSG)
#undef REFRESH_MSG
};

struct gw_expiry {
  gw_keepalive *wheel; /* keyed by Unix second */
  uint32_t grace_s;    /* 0: expiry is not enforced */
  wsg_log_ratelimit rl;
  wsg_counter *m_requests, *m_closes;
  wsg_counter *m_refreshes[RF__COUNT];
};

#define REFRESH_HELP                                                                               \
  "Refresh ops by result (ok: the connection's expiry moved to the new token's; the others are "   \
  "answered with an error and change nothing)."
#define REFRESH_ROW(name, label, type, msg)                                                        \
  WSG_COUNTER_ROW(gw_expiry, m_refreshes[RF_##name], "wsgate_gateway_token_refreshes_total",       \
                  REFRESH_HELP, "result=\"" label "\""),
static const wsg_metric_def metric_rows[] = {
    WSG_COUNTER_ROW(gw_expiry, m_requests, "wsgate_gateway_token_refresh_requests_total",
                    "refresh_required frames sent: a connection's token expired.", NULL),
    WSG_COUNTER_ROW(gw_expiry, m_closes, "wsgate_gateway_token_expiry_closes_total",
                    "Connections closed with 4003: no valid refresh within --token-refresh-grace.",
                    NULL),
    REFRESH_RESULTS(REFRESH_ROW)};
#undef REFRESH_ROW

const wsg_metric_table gw_expiry_metric_table =
    WSG_METRIC_TABLE("gateway/gw_expiry.c", metric_rows);

static uint32_t unix_now(void) {
  return (uint32_t)time(NULL);
}

int gw_expiry_init(gw_server *s, char *err, size_t errlen) {
  gw_expiry *e = calloc(1, sizeof *e);
  if (!e || !(e->wheel = gw_keepalive_new(EXPIRY_HORIZON_S, unix_now()))) {
    free(e);
    snprintf(err, errlen, "out of memory");
    return -1;
  }
  e->grace_s = (uint32_t)(s->cfg->token_refresh_grace_ms / 1000);
  wsg_metrics_register_table(s->o.metrics, &gw_expiry_metric_table, e);
  s->expiry = e;
  return 0;
}

void gw_expiry_finish(gw_server *s) {
  if (!s->expiry)
    return;
  gw_keepalive_free(s->expiry->wheel);
  free(s->expiry);
  s->expiry = NULL;
}

int gw_expiry_start(gw_server *s, gw_session *ss, int64_t exp_s) {
  if (exp_s <= 0 || s->expiry->grace_s == 0)
    return 0;
  ss->exp_state = GW_EXP_LIVE;
  ss->exp_s = exp_s > UINT32_MAX ? UINT32_MAX : (uint32_t)exp_s;
  return gw_keepalive_schedule(s->expiry->wheel, ss->conn_id, ss->exp_s);
}

/* Sends {"wsgate":"refresh_required","exp":<exp>,"grace_s":<grace>} (text). */
static bool send_request(gw_server *s, gw_session *ss) {
  char buf[128];
  int n = snprintf(buf, sizeof buf, "{\"wsgate\":\"refresh_required\",\"exp\":%u,\"grace_s\":%u}",
                   ss->exp_s, s->expiry->grace_s);
  gw_msg *m = gw_msg_create(buf, (size_t)n, false);
  if (!m)
    return false;
  bool ok = gw_outbound_queue(s, ss, m, 0, wsg_now_mono_ms());
  gw_msg_unref(m);
  return ok;
}

static void due(void *arg, uint64_t conn_id) {
  gw_server *s = arg;
  gw_expiry *e = s->expiry;
  gw_session *ss = gw_conn_map_get(&s->conns, conn_id);
  if (!ss || !ss->wsi || ss->exp_state == GW_EXP_NONE ||
      (ss->flags & (F_CLOSING | F_RELEASED | F_LWS_CLOSING)))
    return;
  uint32_t now = unix_now();
  if ((int32_t)(now - ss->exp_s) < 0) {
    /* refreshed meanwhile, or beyond the wheel's horizon */
    if (gw_keepalive_schedule(e->wheel, conn_id, ss->exp_s) != 0)
      gw__close_async(s, ss, GW_CLOSE_TRY_AGAIN, NULL, true);
    return;
  }
  if (ss->exp_state == GW_EXP_LIVE) {
    wsg_counter_add(e->m_requests, 1);
    if (!send_request(s, ss))
      return; /* closed as a slow consumer, or out of memory (closed below) */
    ss->exp_state = GW_EXP_ASKED;
    ss->exp_s = now + e->grace_s;
    if (gw_keepalive_schedule(e->wheel, conn_id, ss->exp_s) != 0)
      gw__close_async(s, ss, GW_CLOSE_TRY_AGAIN, NULL, true);
    return;
  }
  wsg_counter_add(e->m_closes, 1);
  wsg_log_limited(&e->rl, LOG_LIMIT_PER_S, wsg_now_mono_ms(), WSG_LOG_INFO, "server",
                  "connection %llu of user %s: token expired, no refresh within %u s; closing "
                  "with 4003",
                  (unsigned long long)conn_id, ss->user ? ss->user->id : "?", e->grace_s);
  gw__close_async(s, ss, GW_CLOSE_TOKEN_EXPIRED, NULL, false);
}

void gw_expiry_tick(gw_server *s) {
  gw_keepalive_run(s->expiry->wheel, unix_now(), due, s);
}

/* ---- the refresh op -------------------------------------------------------------------------- */

typedef struct {
  bool msgpack, has_id;
  uint64_t id;
  const char *token; /* borrowed from the parsed document */
  size_t token_len;
} refresh_op;

static bool parse_json(const uint8_t *d, size_t len, refresh_op *op, json_t **doc) {
  *doc = json_loadb((const char *)d, len, JSON_REJECT_DUPLICATES, NULL);
  json_t *tok = *doc ? json_object_get(*doc, "token") : NULL;
  json_t *id = *doc ? json_object_get(*doc, "id") : NULL;
  if (id && json_is_integer(id) && json_integer_value(id) >= 0) {
    op->has_id = true;
    op->id = (uint64_t)json_integer_value(id);
  }
  if (!json_is_string(tok))
    return false;
  op->token = json_string_value(tok);
  op->token_len = json_string_length(tok);
  return true;
}

static bool parse_msgpack(const uint8_t *d, size_t len, refresh_op *op, msgpack_unpacked *u) {
  if (wsg_msgpack_validate(d, len, 1) != WSG_ENV_OK ||
      msgpack_unpack_next(u, (const char *)d, len, NULL) != MSGPACK_UNPACK_SUCCESS ||
      u->data.type != MSGPACK_OBJECT_MAP)
    return false;
  bool found = false;
  for (uint32_t i = 0; i < u->data.via.map.size; i++) {
    const msgpack_object *k = &u->data.via.map.ptr[i].key, *v = &u->data.via.map.ptr[i].val;
    if (k->type != MSGPACK_OBJECT_STR)
      continue;
    if (k->via.str.size == 5 && memcmp(k->via.str.ptr, "token", 5) == 0 &&
        v->type == MSGPACK_OBJECT_STR) {
      op->token = v->via.str.ptr;
      op->token_len = v->via.str.size;
      found = true;
    } else if (k->via.str.size == 2 && memcmp(k->via.str.ptr, "id", 2) == 0 &&
               v->type == MSGPACK_OBJECT_POSITIVE_INTEGER) {
      op->has_id = true;
      op->id = v->via.u64;
    }
  }
  return found;
}

static void mp_str(msgpack_packer *pk, const char *str) {
  msgpack_pack_str_with_body(pk, str, strlen(str));
}

/* {"wsgate":"refreshed","exp":N} or {"wsgate":"error","op":"refresh","code":..,"message":..},
 * with the op's "id" when it had one, in the op's format. 0 when it does not fit. */
static size_t answer(const refresh_op *op, int rf, const char *msg, uint32_t exp, uint8_t *out,
                     size_t cap) {
  if (op->msgpack) {
    msgpack_sbuffer sb; /* heap: refresh ops are rare */
    msgpack_sbuffer_init(&sb);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, (op->has_id ? 1 : 0) + (rf == RF_OK ? 2 : 4));
    mp_str(&pk, "wsgate");
    mp_str(&pk, rf_type[rf]);
    if (op->has_id) {
      mp_str(&pk, "id");
      msgpack_pack_uint64(&pk, op->id);
    }
    if (rf == RF_OK) {
      mp_str(&pk, "exp");
      msgpack_pack_uint32(&pk, exp);
    } else {
      mp_str(&pk, "op");
      mp_str(&pk, "refresh");
      mp_str(&pk, "code");
      mp_str(&pk, rf_code[rf]);
      mp_str(&pk, "message");
      mp_str(&pk, msg);
    }
    size_t n = sb.data && sb.size <= cap ? sb.size : 0;
    if (n)
      memcpy(out, sb.data, n);
    msgpack_sbuffer_destroy(&sb);
    return n;
  }
  json_t *j = json_object();
  if (!j)
    return 0;
  json_object_set_new(j, "wsgate", json_string(rf_type[rf]));
  if (op->has_id)
    json_object_set_new(j, "id", json_integer((json_int_t)op->id));
  if (rf == RF_OK) {
    json_object_set_new(j, "exp", json_integer(exp));
  } else {
    json_object_set_new(j, "op", json_string("refresh"));
    json_object_set_new(j, "code", json_string(rf_code[rf]));
    json_object_set_new(j, "message", json_string(msg));
  }
  size_t n = json_dumpb(j, (char *)out, cap, JSON_COMPACT);
  json_decref(j);
  return n <= cap ? n : 0;
}

/* The connection's channel permissions become the new token's (gw_chperm, as at the upgrade):
 * later subscribe ops are checked against them. Subscriptions already held are kept. A
 * development user's "any channel" is left alone. */
static void replace_chperm(gw_server *s, gw_session *ss, const refresh_op *op) {
  if (ss->chperm == GW_CHPERM_ANY)
    return;
  char perm[GW_CHPERM_MAX_BYTES] = "";
  uint8_t claims[GW_JWT_MAX_TOKEN];
  int n = gw_jwt_claims_json(op->token, op->token_len, claims, sizeof claims);
  if (n > 0)
    gw_chperm_from_claims(claims, (size_t)n, s->cfg->channel_claim, perm, sizeof perm);
  char *copy = NULL;
  if (perm[0]) {
    size_t len = gw_chperm_size(perm);
    copy = malloc(len); /* out of memory: no channel, never the old token's */
    if (copy)
      memcpy(copy, perm, len);
  }
  gw__chperm_free(ss->chperm);
  ss->chperm = copy;
}

/* Verifies the op's token for ss; on success moves the session's expiry and replaces its
 * channel permissions. */
static int apply(gw_server *s, gw_session *ss, const refresh_op *op, const char **msg,
                 uint32_t *exp) {
  gw_jwt_claims cl;
  int rc = gw_jwt_verify_token(s->o.jwt, op->token, op->token_len, (int64_t)time(NULL), &cl);
  if (rc != GW_JWT_OK) {
    *msg = gw_jwt_strerror(rc);
    if (rc == GW_JWT_UNKNOWN_KID && s->o.unknown_kid)
      s->o.unknown_kid(s->o.auth);
    return RF_INVALID_TOKEN;
  }
  if (!ss->user || cl.user_len != ss->user->len || memcmp(cl.user, ss->user->id, cl.user_len) != 0)
    return RF_WRONG_USER;
  if (ss->exp_state != GW_EXP_NONE) { /* else not tracked (no wheel entry): nothing to move */
    ss->exp_state = cl.has_exp ? GW_EXP_LIVE : GW_EXP_NONE;
    ss->exp_s = cl.has_exp && cl.exp_s < UINT32_MAX ? (uint32_t)cl.exp_s : UINT32_MAX;
  }
  *exp = cl.has_exp ? (uint32_t)cl.exp_s : 0;
  replace_chperm(s, ss, op);
  return RF_OK;
}

void gw_expiry_refresh_op(gw_server *s, gw_session *ss, const uint8_t *d, size_t len, bool binary) {
  refresh_op op = {.msgpack = binary};
  json_t *doc = NULL;
  msgpack_unpacked u;
  msgpack_unpacked_init(&u);
  bool parsed = binary ? parse_msgpack(d, len, &op, &u) : parse_json(d, len, &op, &doc);
  const char *msg = NULL;
  uint32_t exp = 0;
  int rf = parsed ? apply(s, ss, &op, &msg, &exp) : RF_BAD_REQUEST;
  if (!msg)
    msg = rf_msg[rf];
  wsg_counter_add(s->expiry->m_refreshes[rf], 1);
  if (rf != RF_OK)
    wsg_log_limited(&s->expiry->rl, LOG_LIMIT_PER_S, wsg_now_mono_ms(), WSG_LOG_INFO, "server",
                    "connection %llu of user %s: refresh refused (%s: %s)",
                    (unsigned long long)ss->conn_id, ss->user ? ss->user->id : "?", rf_code[rf],
                    msg);
  uint8_t out[ANSWER_MAX];
  size_t n = answer(&op, rf, msg, exp, out, sizeof out);
  json_decref(doc);
  msgpack_unpacked_destroy(&u);
  gw_msg *m = n ? gw_msg_create(out, n, binary) : NULL;
  if (!m) {
    gw__close_async(s, ss, GW_CLOSE_INTERNAL, NULL, false);
    return;
  }
  gw_outbound_queue(s, ss, m, 0, wsg_now_mono_ms());
  gw_msg_unref(m);
}
