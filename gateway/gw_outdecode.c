/*
 * gw_outdecode: one outbound record (a `deliver`, `close`, `publish`, `subscribe` or `unsubscribe`
 * envelope from the outbound topic) to the hand-off item the loop thread dispatches (gw_outbound,
 * gw_kafka.h). Pure: no librdkafka, no logging, no metrics, so the libFuzzer target
 * tests/fuzz/outbound_fuzz.c calls exactly the code the consumer thread runs; gw_kafka.c counts and
 * logs what it returns.
 *
 * Every string is copied with the length the decoder gave and NUL-terminated after it: a user id
 * or a reason may contain a NUL byte (MessagePack strings are counted), and a copy that stopped
 * at the NUL while the length said more made the loop thread read past the copy (issue 16).
 *
 * Threads: any (the Kafka consumer thread in the gateway).
 */
#include <stdlib.h>
#include <string.h>

#include "gw_kafka.h"

void gw_outbound_finish(gw_outbound *o) {
  if (!o)
    return;
  gw_msg_unref(o->msg);
  free(o->conns);
  free(o->qs);
  free(o->user);
  free(o->reason);
  memset(o, 0, sizeof *o);
}

/* A heap copy of s[0..len) plus a NUL; NULL when out of memory. */
static char *copy_counted(const char *s, size_t len) {
  char *c = malloc(len + 1);
  if (!c)
    return NULL;
  if (len)
    memcpy(c, s, len);
  c[len] = '\0';
  return c;
}

static gw_outdec_result decode_targets(const wsg_envelope *env, gw_outbound *it) {
  if (env->fields & WSG_F_CONNS) {
    it->target = GW_TARGET_CONNS;
    if (env->conns.count == 0)
      return GW_OUTDEC_OK;
    it->conns = malloc(sizeof(uint64_t) * env->conns.count);
    if (!it->conns)
      return GW_OUTDEC_NOMEM;
    size_t pos = 0;
    uint64_t id;
    while (it->nconns < env->conns.count && wsg_conns_next(&env->conns, &pos, &id))
      it->conns[it->nconns++] = id;
    if (env->fields & WSG_F_USEQS) {
      /* The decoder checked that qs has exactly one element per connection. */
      it->qs = calloc(env->conns.count, sizeof(uint64_t));
      if (!it->qs)
        return GW_OUTDEC_NOMEM;
      pos = 0;
      for (uint32_t i = 0; i < it->nconns && wsg_conns_next(&env->useqs, &pos, &id); i++)
        it->qs[i] = id;
    }
  } else if (env->fields & WSG_F_CONN) {
    it->target = GW_TARGET_CONN;
    it->conn = env->conn;
  } else {
    it->target = GW_TARGET_USER;
    it->user = copy_counted(env->user, env->user_len);
    if (!it->user)
      return GW_OUTDEC_NOMEM;
    it->user_len = env->user_len;
  }
  return GW_OUTDEC_OK;
}

gw_outdec_result gw_outbound_decode(const void *rec, size_t len, const char *gw_id,
                                    size_t gw_id_len, gw_outbound *it, wsg_envelope *env,
                                    int *env_rc, const char **field) {
  memset(it, 0, sizeof *it);
  *field = NULL;
  *env_rc = wsg_envelope_decode(env, rec, len, field);
  if (*env_rc != WSG_ENV_OK)
    return GW_OUTDEC_INVALID;
  if (env->kind != WSG_ENV_DELIVER && env->kind != WSG_ENV_CLOSE && env->kind != WSG_ENV_PUBLISH &&
      env->kind != WSG_ENV_SUBSCRIBE && env->kind != WSG_ENV_UNSUBSCRIBE &&
      env->kind != WSG_ENV_JOINLEAVE)
    return GW_OUTDEC_KIND;
  /* Fencing: the slot may have belonged to another gateway when the processor looked it up. */
  if (env->gateway_len != gw_id_len || memcmp(env->gateway, gw_id, gw_id_len) != 0)
    return GW_OUTDEC_FENCED;
  it->kind = env->kind;
  it->ts_us = (env->fields & WSG_F_TS) ? env->ts_us : 0;
  it->q = (env->fields & WSG_F_USEQ) ? env->user_seq : 0;
  gw_outdec_result r = GW_OUTDEC_OK;
  if (env->kind == WSG_ENV_CLOSE) {
    it->target = GW_TARGET_CONN;
    it->conn = env->conn;
    it->close_code = (env->fields & WSG_F_CLOSE_CODE) ? env->close_code : 0;
    if ((env->fields & WSG_F_CLOSE_REASON) && env->close_reason_len > 0) {
      it->reason = copy_counted(env->close_reason, env->close_reason_len);
      if (!it->reason)
        r = GW_OUTDEC_NOMEM;
      else
        it->reason_len = (uint8_t)env->close_reason_len; /* <= WSG_MAX_REASON_LEN (decode) */
    }
  } else if (env->kind == WSG_ENV_SUBSCRIBE || env->kind == WSG_ENV_UNSUBSCRIBE) {
    /* The decoder checked the name and that c or cs (not u) is given; no payload. */
    r = decode_targets(env, it);
    it->user = r == GW_OUTDEC_OK ? copy_counted(env->channel, env->channel_len) : NULL;
    it->user_len = env->channel_len;
    if (r == GW_OUTDEC_OK && !it->user)
      r = GW_OUTDEC_NOMEM;
    it->has_request = (env->fields & WSG_F_REQUEST) != 0;
    it->request = env->request;
    it->refused = (env->fields & WSG_F_REFUSAL) != 0;
    if (r == GW_OUTDEC_OK && it->refused) {
      it->reason = copy_counted(env->refusal, env->refusal_len);
      it->reason_len = (uint8_t)env->refusal_len; /* <= WSG_MAX_REASON_LEN (decode) */
      if (!it->reason)
        r = GW_OUTDEC_NOMEM;
    }
  } else if (!env->binary && env->data_len > 0 &&
             !wsg_utf8_valid((const char *)env->data, env->data_len)) {
    /* A text frame that is not UTF-8 makes every RFC 6455 client fail the connection (1007):
     * refuse the processor's mistake here rather than disconnect its recipients. */
    r = GW_OUTDEC_NOT_UTF8;
  } else if (env->kind == WSG_ENV_PUBLISH || env->kind == WSG_ENV_JOINLEAVE) {
    /* The decoder checked the channel's name; the loop thread frames the payload per format. */
    it->target = GW_TARGET_CHANNEL;
    it->ch_offset = env->ch_offset;
    it->ch_epoch = env->ch_epoch;
    it->user = copy_counted(env->channel, env->channel_len);
    it->user_len = env->channel_len;
    it->msg = it->user ? gw_msg_create(env->data_len ? env->data : NULL, env->data_len, env->binary)
                       : NULL;
    if (!it->msg)
      r = GW_OUTDEC_NOMEM;
  } else {
    r = decode_targets(env, it);
    if (r == GW_OUTDEC_OK) {
      it->msg = gw_msg_create(env->data_len ? env->data : NULL, env->data_len, env->binary);
      if (!it->msg)
        r = GW_OUTDEC_NOMEM;
      else
        gw_msg_set_ts(it->msg, it->ts_us);
    }
  }
  if (r != GW_OUTDEC_OK)
    gw_outbound_finish(it);
  return r;
}
