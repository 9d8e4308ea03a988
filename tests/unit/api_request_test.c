/* Unit tests of api_request: every endpoint's JSON shape, MessagePack bodies, batches, and the
 * answer (status and field) to each kind of bad body. */
#include <criterion/criterion.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api_request.h"

#define MAX_CMDS    10
#define MAX_PAYLOAD 64

static char field[64], why[300];

static int decode(api_batch *b, api_op op, const char *ct, const char *body) {
  return api_request_decode(b, op, ct, (const uint8_t *)body, strlen(body), MAX_CMDS, MAX_PAYLOAD,
                            field, sizeof field, why, sizeof why);
}

/* Decodes `body` expecting `status` with `want_field`. */
static void bad(api_op op, const char *body, int status, const char *want_field) {
  api_batch b;
  int rc = decode(&b, op, "application/json", body);
  cr_assert_eq(rc, status, "%s: got %d (%s: %s), want %d", body, rc, field, why, status);
  if (want_field)
    cr_assert_str_eq(field, want_field, "%s: %s", body, why);
  api_batch_finish(&b);
}

static bool str_is(wsg_cmd_str s, const char *want) {
  return s.len == strlen(want) && memcmp(s.ptr, want, s.len) == 0;
}

Test(api_request, send_shapes) {
  api_batch b;
  cr_assert_eq(decode(&b, API_OP_SEND, NULL, "{\"user\":\"42\",\"data\":\"shipped\"}"), 0, "%s",
               why);
  cr_assert_eq(b.n, 1);
  cr_assert_eq(b.cmds[0].kind, WSG_CMD_SEND);
  cr_assert(str_is(b.cmds[0].user, "42"));
  cr_assert_eq(b.cmds[0].data_len, 7);
  cr_assert_not(b.cmds[0].binary);
  api_batch_finish(&b);

  cr_assert_eq(decode(&b, API_OP_SEND, "application/json; charset=utf-8",
                      "{\"users\":[\"a\",\"b\"],\"data_base64\":\"AAEC/w==\"}"),
               0, "%s", why);
  cr_assert_eq(b.cmds[0].users.count, 2);
  cr_assert(b.cmds[0].binary);
  cr_assert_eq(b.cmds[0].data_len, 4);
  cr_assert(memcmp(b.cmds[0].data, "\x00\x01\x02\xff", 4) == 0);
  api_batch_finish(&b);

  cr_assert_eq(decode(&b, API_OP_SEND, NULL,
                      "{\"user\":\"a\",\"conn\":\"18446744073709551615\",\"data\":\"\"}"),
               0, "%s", why);
  cr_assert_eq(b.cmds[0].conn, UINT64_MAX, "64-bit ids as strings");
  api_batch_finish(&b);
  cr_assert_eq(decode(&b, API_OP_SEND, NULL, "{\"user\":\"a\",\"conn\":7,\"data\":\"x\"}"), 0);
  cr_assert_eq(b.cmds[0].conn, 7);
  api_batch_finish(&b);
}

Test(api_request, disconnect_and_batch) {
  api_batch b;
  cr_assert_eq(
      decode(&b, API_OP_DISCONNECT, NULL, "{\"user\":\"m\",\"code\":4100,\"reason\":\"banned\"}"),
      0, "%s", why);
  cr_assert_eq(b.cmds[0].close_code, 4100);
  cr_assert(str_is(b.cmds[0].close_reason, "banned"));
  api_batch_finish(&b);
  cr_assert_eq(decode(&b, API_OP_BATCH, NULL,
                      "{\"commands\":[{\"command\":\"send\",\"user\":\"a\",\"data\":\"1\"},"
                      "{\"command\":\"disconnect\",\"user\":\"b\"}]}"),
               0, "%s", why);
  cr_assert_eq(b.n, 2);
  cr_assert_eq(b.cmds[1].kind, WSG_CMD_DISCONNECT);
  api_batch_finish(&b);
}

Test(api_request, msgpack_bodies) {
  api_batch b;
  /* {v:1, t:"send", u:"a", d:bin"x"} */
  static const char one[] = "\x84\xa1v\x01\xa1t\xa4send\xa1u\xa1"
                            "a\xa1"
                            "d\xc4\x01x";
  cr_assert_eq(api_request_decode(&b, API_OP_SEND, "application/msgpack", (const uint8_t *)one,
                                  sizeof one - 1, MAX_CMDS, MAX_PAYLOAD, field, sizeof field, why,
                                  sizeof why),
               0, "%s", why);
  cr_assert_eq(b.n, 1);
  api_batch_finish(&b);
  /* the same command on /v1/disconnect: t does not match */
  cr_assert_eq(api_request_decode(&b, API_OP_DISCONNECT, "application/x-msgpack",
                                  (const uint8_t *)one, sizeof one - 1, MAX_CMDS, MAX_PAYLOAD,
                                  field, sizeof field, why, sizeof why),
               400);
  cr_assert_str_eq(field, "t");
  api_batch_finish(&b);
  /* a batch: an array of two */
  char arr[64];
  arr[0] = (char)0x92;
  memcpy(arr + 1, one, sizeof one - 1);
  memcpy(arr + sizeof one, one, sizeof one - 1);
  cr_assert_eq(api_request_decode(&b, API_OP_BATCH, "application/msgpack", (const uint8_t *)arr,
                                  1 + 2 * (sizeof one - 1), MAX_CMDS, MAX_PAYLOAD, field,
                                  sizeof field, why, sizeof why),
               0, "%s", why);
  cr_assert_eq(b.n, 2);
  api_batch_finish(&b);
  /* the second element truncated */
  cr_assert_eq(api_request_decode(&b, API_OP_BATCH, "application/msgpack", (const uint8_t *)arr,
                                  2 * (sizeof one - 1), MAX_CMDS, MAX_PAYLOAD, field, sizeof field,
                                  why, sizeof why),
               400);
  api_batch_finish(&b);
}

Test(api_request, hostile_bodies) {
  bad(API_OP_SEND, "", 400, "");
  bad(API_OP_SEND, "{\"user\":\"a\",\"data\":\"x\"", 400, ""); /* truncated */
  bad(API_OP_SEND, "[1,2]", 400, "");                          /* not an object */
  bad(API_OP_SEND, "{\"user\":\"a\",\"data\":\"x\",\"extra\":1}", 400, "extra");
  bad(API_OP_SEND, "{\"user\":5,\"data\":\"x\"}", 400, "user");
  bad(API_OP_SEND, "{\"user\":\"a\",\"data\":{}}", 400, "data");
  bad(API_OP_SEND, "{\"user\":\"a\"}", 400, "data");
  bad(API_OP_SEND, "{\"data\":\"x\"}", 400, "user|users");
  bad(API_OP_SEND, "{\"user\":\"a\",\"users\":[\"b\"],\"data\":\"x\"}", 400, "user|users");
  bad(API_OP_SEND, "{\"users\":[],\"data\":\"x\"}", 400, "users");
  bad(API_OP_SEND, "{\"users\":[1],\"data\":\"x\"}", 400, "users");
  bad(API_OP_SEND, "{\"user\":\"\",\"data\":\"x\"}", 400, "user");
  bad(API_OP_SEND, "{\"user\":\"a\",\"conn\":-1,\"data\":\"x\"}", 400, "conn");
  bad(API_OP_SEND, "{\"user\":\"a\",\"conn\":\"12x\",\"data\":\"x\"}", 400, "conn");
  bad(API_OP_SEND, "{\"user\":\"a\",\"data_base64\":\"!!!!\"}", 400, "data_base64");
  bad(API_OP_SEND, "{\"user\":\"a\",\"data_base64\":\"abc\"}", 400, "data_base64");
  bad(API_OP_SEND, "{\"user\":\"a\",\"data\":\"x\",\"data_base64\":\"eA==\"}", 400, NULL);
  bad(API_OP_SEND, "{\"user\":\"a\",\"data\":\"x\",\"user\":\"b\"}", 400, ""); /* duplicate */
  bad(API_OP_SEND, "{\"user\":\"a\",\"code\":1000,\"data\":\"x\"}", 400, "code");
  bad(API_OP_DISCONNECT, "{\"user\":\"a\",\"code\":4001}", 400, "code");
  bad(API_OP_DISCONNECT, "{\"user\":\"a\",\"reason\":\"r\"}", 400, "code");
  bad(API_OP_DISCONNECT, "{\"user\":\"a\",\"code\":\"4100\"}", 400, "code");
  bad(API_OP_DISCONNECT, "{\"user\":\"a\",\"data\":\"x\"}", 400, "data");
  bad(API_OP_BATCH, "{\"commands\":[]}", 400, "commands");
  bad(API_OP_BATCH, "{\"cmds\":[]}", 400, "cmds");
  bad(API_OP_BATCH, "{\"commands\":[{\"user\":\"a\",\"data\":\"x\"}]}", 400, "commands[0].command");
  bad(API_OP_BATCH,
      "{\"commands\":[{\"command\":\"send\",\"user\":\"a\",\"data\":\"x\"},"
      "{\"command\":\"send\",\"user\":\"a\",\"nope\":1}]}",
      400, "commands[1].nope");
  bad(API_OP_BATCH, "{\"commands\":[{\"command\":\"info\"}]}", 400, "commands[0].command");
  bad(API_OP_BATCH, "{\"commands\":[1,2,3,4,5,6,7,8,9,10,11]}", 413,
      "commands"); /* over MAX_CMDS */
  /* payload over the limit */
  char big[200];
  snprintf(big, sizeof big, "{\"user\":\"a\",\"data\":\"%0*d\"}", MAX_PAYLOAD + 1, 0);
  bad(API_OP_SEND, big, 413, "data");
  /* nesting deeper than jansson accepts */
  size_t depth = 100000;
  char *deep = malloc(depth + 1);
  memset(deep, '[', depth);
  deep[depth] = '\0';
  bad(API_OP_SEND, deep, 400, "");
  free(deep);
  /* a content type we do not speak */
  api_batch b;
  cr_assert_eq(decode(&b, API_OP_SEND, "text/plain", "{}"), 415);
  api_batch_finish(&b);
}
