/*
 * libFuzzer target for the gateway's decoding of outbound records: gw_outbound_decode()
 * (gateway/gw_outdecode.c), the code the Kafka consumer thread runs on every record of its
 * partition before the loop thread dispatches it. Records come from processors, which run
 * handlers that may be third-party plugins: the bytes are not trusted.
 *
 * Each input is decoded twice: once for the gateway the envelope names (so fencing passes and the
 * copies are made) and once for another gateway (fenced). Invariants beyond "no crash, no leak,
 * no UB" (a broken one aborts):
 *   - OK only for a deliver or close addressed to us; anything else leaves the item empty;
 *   - every copied string holds exactly the decoder's bytes, NUL-terminated after them (issue 16
 *     item 9: a NUL inside a user id was copied short and read long);
 *   - a deliver's message holds the payload; a `cs` target lists exactly the envelope's ids.
 *
 * Threads: libFuzzer's main thread.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gw_kafka.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(cond)                                                                                \
  do {                                                                                             \
    if (!(cond)) {                                                                                 \
      fprintf(stderr, "outbound_fuzz: invariant broken: %s (line %d)\n", #cond, __LINE__);         \
      abort();                                                                                     \
    }                                                                                              \
  } while (0)

static bool empty(const gw_outbound *it) {
  return !it->msg && !it->conns && !it->qs && !it->user && !it->reason && it->nconns == 0;
}

static void check_ok(const wsg_envelope *env, const gw_outbound *it) {
  CHECK(it->kind == env->kind);
  if (it->kind == WSG_ENV_CLOSE) {
    CHECK(it->target == GW_TARGET_CONN && it->conn == env->conn && !it->msg);
    if (it->reason) {
      CHECK(it->reason_len == env->close_reason_len);
      CHECK(memcmp(it->reason, env->close_reason, it->reason_len) == 0);
      CHECK(it->reason[it->reason_len] == '\0');
    }
    return;
  }
  CHECK(it->kind == WSG_ENV_DELIVER && it->msg);
  CHECK(gw_msg_len(it->msg) == env->data_len);
  if (it->target == GW_TARGET_USER) {
    CHECK(it->user && it->user_len == env->user_len);
    CHECK(memcmp(it->user, env->user, it->user_len) == 0 && it->user[it->user_len] == '\0');
  } else if (it->target == GW_TARGET_CONNS) {
    CHECK(it->nconns == env->conns.count);
    size_t pos = 0;
    uint64_t id;
    for (uint32_t i = 0; i < it->nconns; i++) {
      CHECK(wsg_conns_next(&env->conns, &pos, &id) == 1);
      CHECK(it->conns[i] == id);
    }
  } else {
    CHECK(it->target == GW_TARGET_CONN && it->conn == env->conn);
  }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  wsg_envelope env;
  const char *field = NULL;
  char gw[256] = "fuzz-gateway";
  size_t gwlen = strlen(gw);
  if (wsg_envelope_decode(&env, data, size, &field) == WSG_ENV_OK && env.gateway_len < sizeof gw) {
    memcpy(gw, env.gateway, env.gateway_len);
    gwlen = env.gateway_len;
  }
  for (int pass = 0; pass < 2; pass++) {
    const char *id = pass == 0 ? gw : "another-gateway";
    size_t idlen = pass == 0 ? gwlen : strlen(id);
    gw_outbound it;
    int rc = 0;
    gw_outdec_result r = gw_outbound_decode(data, size, id, idlen, &it, &env, &rc, &field);
    CHECK(r >= GW_OUTDEC_OK && r <= GW_OUTDEC_NOMEM);
    CHECK((r == GW_OUTDEC_INVALID) == (rc != WSG_ENV_OK));
    if (r == GW_OUTDEC_OK) {
      CHECK(env.gateway_len == idlen && memcmp(env.gateway, id, idlen) == 0);
      check_ok(&env, &it);
      gw_outbound_finish(&it);
    }
    CHECK(empty(&it));
  }
  return 0;
}
