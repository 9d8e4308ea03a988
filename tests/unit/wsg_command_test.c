/* Unit tests of wsg_command: the golden vectors (tests/golden/commands/, written by an independent
 * encoder) both ways, every command's shape rules, and hostile inputs. */
#include <criterion/criterion.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "wsg_command.h"

#define S(x) ((wsg_cmd_str){x, sizeof(x) - 1})
#define SI(x)                                                                                      \
  { x, sizeof(x) - 1 } /* in a static initializer */
#define TS 1700000000123456ull

static uint8_t *read_vector(const char *name, size_t *len) {
  char path[4096];
  snprintf(path, sizeof path, "%s/%s.msgpack", WSG_SOURCE_ROOT "/tests/golden/commands", name);
  FILE *f = fopen(path, "rb");
  cr_assert_not_null(f, "cannot open %s", path);
  static uint8_t buf[4096];
  *len = fread(buf, 1, sizeof buf, f);
  fclose(f);
  return buf;
}

/* Encodes `cmd`, compares with the vector, decodes the vector and re-encodes it. */
static void check_vector(const char *name, const wsg_command *cmd) {
  size_t len;
  const uint8_t *want = read_vector(name, &len);
  wsg_buf b;
  wsg_buf_init(&b, 0);
  const char *field = NULL;
  cr_assert_eq(wsg_command_encode(cmd, &b, &field), WSG_ENV_OK, "%s: encode (%s)", name, field);
  cr_assert_eq(b.len, len, "%s: %zu bytes, want %zu", name, b.len, len);
  cr_assert(memcmp(b.data, want, len) == 0, "%s: bytes differ", name);
  wsg_command dec;
  cr_assert_eq(wsg_command_decode(&dec, want, len, &field), WSG_ENV_OK, "%s: decode (%s)", name,
               field);
  cr_assert_eq(dec.kind, cmd->kind);
  cr_assert_eq(dec.fields, cmd->fields, "%s: fields %x, want %x", name, dec.fields, cmd->fields);
  cr_assert_eq(wsg_command_encode(&dec, &b, &field), WSG_ENV_OK);
  cr_assert(b.len == len && memcmp(b.data, want, len) == 0, "%s: re-encoding differs", name);
  wsg_buf_finish(&b);
}

Test(wsg_command, golden_vectors) {
  static const char d1[] = "your order shipped";
  check_vector("cmd_send_user",
               &(wsg_command){.kind = WSG_CMD_SEND,
                              .fields = WSG_CF_ID | WSG_CF_USER | WSG_CF_DATA | WSG_CF_TS,
                              .id = S("order-42-shipped"),
                              .user = S("42"),
                              .data = (const uint8_t *)d1,
                              .data_len = sizeof d1 - 1,
                              .ts_us = TS});
  static const wsg_cmd_str users[] = {SI("alice"), SI("bob"), SI("carol")};
  check_vector("cmd_send_users",
               &(wsg_command){.kind = WSG_CMD_SEND,
                              .fields = WSG_CF_USERS | WSG_CF_BINARY | WSG_CF_DATA | WSG_CF_TS,
                              .users.count = 3,
                              .user_list = users,
                              .binary = true,
                              .data = (const uint8_t *)"\0\1\2",
                              .data_len = 3,
                              .ts_us = TS});
  static const char d2[] = "{\"to\":\"one tab\"}";
  check_vector("cmd_send_conn", &(wsg_command){.kind = WSG_CMD_SEND,
                                               .fields = WSG_CF_USER | WSG_CF_CONN | WSG_CF_DATA,
                                               .user = S("alice"),
                                               .conn = UINT64_MAX,
                                               .data = (const uint8_t *)d2,
                                               .data_len = sizeof d2 - 1});
  check_vector("cmd_disconnect_user",
               &(wsg_command){.kind = WSG_CMD_DISCONNECT,
                              .fields = WSG_CF_USER | WSG_CF_CLOSE_CODE | WSG_CF_CLOSE_REASON,
                              .user = S("mallory"),
                              .close_code = 4100,
                              .close_reason = S("banned")});
  check_vector("cmd_disconnect_conn",
               &(wsg_command){.kind = WSG_CMD_DISCONNECT,
                              .fields = WSG_CF_ID | WSG_CF_USER | WSG_CF_CONN,
                              .id = S("k1"),
                              .user = S("alice"),
                              .conn = 7});
  static const char d3[] = "{\"score\":\"2-1\"}";
  check_vector("cmd_publish", &(wsg_command){.kind = WSG_CMD_PUBLISH,
                                             .fields = WSG_CF_CHANNEL | WSG_CF_DATA | WSG_CF_TS,
                                             .channel = S("match:7"),
                                             .data = (const uint8_t *)d3,
                                             .data_len = sizeof d3 - 1,
                                             .ts_us = TS});
  check_vector(
      "cmd_presence",
      &(wsg_command){.kind = WSG_CMD_PRESENCE, .fields = WSG_CF_CHANNEL, .channel = S("match:7")});
  check_vector(
      "cmd_history",
      &(wsg_command){.kind = WSG_CMD_HISTORY, .fields = WSG_CF_CHANNEL, .channel = S("match:7")});
  check_vector("cmd_info", &(wsg_command){.kind = WSG_CMD_INFO});
}

Test(wsg_command, users_iterate_and_key) {
  size_t len;
  const uint8_t *v = read_vector("cmd_send_users", &len);
  wsg_command c;
  cr_assert_eq(wsg_command_decode(&c, v, len, NULL), WSG_ENV_OK);
  size_t pos = 0, klen;
  wsg_cmd_str u;
  const char *want[] = {"alice", "bob", "carol"};
  for (int i = 0; i < 3; i++) {
    cr_assert_eq(wsg_cmd_users_next(&c, &pos, &u), 1);
    cr_assert(u.len == strlen(want[i]) && memcmp(u.ptr, want[i], u.len) == 0);
  }
  cr_assert_eq(wsg_cmd_users_next(&c, &pos, &u), 0);
  const char *k = wsg_command_key(&c, &klen);
  cr_assert(klen == 5 && memcmp(k, "alice", 5) == 0, "the first user keys a list");
  v = read_vector("cmd_publish", &len);
  cr_assert_eq(wsg_command_decode(&c, v, len, NULL), WSG_ENV_OK);
  k = wsg_command_key(&c, &klen);
  cr_assert(klen == 7 && memcmp(k, "match:7", 7) == 0, "a channel keys its commands");
  v = read_vector("cmd_info", &len);
  cr_assert_eq(wsg_command_decode(&c, v, len, NULL), WSG_ENV_OK);
  cr_assert_null(wsg_command_key(&c, &klen));
}

/* Decodes raw bytes and expects `rc` with `field` (NULL: any). */
static void expect(const char *what, const void *bytes, size_t len, int rc, const char *field) {
  wsg_command c;
  const char *f = NULL;
  int got = wsg_command_decode(&c, bytes, len, &f);
  cr_assert_eq(got, rc, "%s: got %s (%s), want %s", what, wsg_env_err_name(got), f,
               wsg_env_err_name(rc));
  if (field)
    cr_assert_str_eq(f, field, "%s", what);
}
#define EXPECT(what, lit, rc, field) expect(what, lit, sizeof(lit) - 1, rc, field)

Test(wsg_command, shapes) {
  /* {v:1, t:"send", d:""}: no target */
  EXPECT("send without target",
         "\x83\xa1v\x01\xa1t\xa4send\xa1"
         "d\xc4\x00",
         WSG_ENV_MISSING, "u|us");
  /* {v:1, t:"send", u:"a"}: no payload */
  EXPECT("send without d",
         "\x83\xa1v\x01\xa1t\xa4send\xa1u\xa1"
         "a",
         WSG_ENV_MISSING, "d");
  /* both u and us */
  EXPECT("u and us",
         "\x85\xa1v\x01\xa1t\xa4send\xa1u\xa1"
         "a\xa2us\x91\xa1"
         "b\xa1"
         "d\xc4\x00",
         WSG_ENV_BAD_VALUE, "u|us");
  /* us empty */
  EXPECT("us empty",
         "\x84\xa1v\x01\xa1t\xa4send\xa2us\x90\xa1"
         "d\xc4\x00",
         WSG_ENV_BAD_VALUE, "us");
  /* us holding a number */
  EXPECT("us wrong type",
         "\x84\xa1v\x01\xa1t\xa4send\xa2us\x91\x01\xa1"
         "d\xc4\x00",
         WSG_ENV_BAD_TYPE, "us");
  /* c without u: {v:1,t:"disconnect",c:1} -> u missing (required) */
  EXPECT("disconnect without u",
         "\x83\xa1v\x01\xa1t\xaa"
         "disconnect\xa1"
         "c\x01",
         WSG_ENV_MISSING, "u");
  /* a close code wsgate keeps for itself */
  EXPECT("cc 4001",
         "\x84\xa1v\x01\xa1t\xaa"
         "disconnect\xa1u\xa1"
         "a\xa2"
         "cc\xcd\x0f\xa1",
         WSG_ENV_BAD_VALUE, "cc");
  /* cr without cc */
  EXPECT("cr without cc",
         "\x84\xa1v\x01\xa1t\xaa"
         "disconnect\xa1u\xa1"
         "a\xa2"
         "cr\xa1x",
         WSG_ENV_MISSING, "cc");
  /* a field the command does not use: d on a disconnect */
  EXPECT("d on disconnect",
         "\x84\xa1v\x01\xa1t\xaa"
         "disconnect\xa1u\xa1"
         "a\xa1"
         "d\xc4\x00",
         WSG_ENV_BAD_VALUE, "d");
  /* unknown key: skipped */
  EXPECT("unknown key", "\x83\xa1v\x01\xa1t\xa4info\xa1z\x92\x01\x02", WSG_ENV_OK, NULL);
  /* unknown command */
  EXPECT("unknown t", "\x82\xa1v\x01\xa1t\xa4nope", WSG_ENV_BAD_KIND, "t");
  /* version 2 */
  EXPECT("v2", "\x82\xa1v\x02\xa1t\xa4info", WSG_ENV_BAD_VERSION, "v");
  EXPECT("no v", "\x81\xa1t\xa4info", WSG_ENV_MISSING, "v");
  EXPECT("dup t", "\x83\xa1v\x01\xa1t\xa4info\xa1t\xa4info", WSG_ENV_DUPLICATE, "t");
  EXPECT("trailing", "\x82\xa1v\x01\xa1t\xa4info\x00", WSG_ENV_TRAILING, NULL);
  EXPECT("not a map", "\x92\x01\x02", WSG_ENV_NOT_MAP, NULL);
  /* a channel with a control character */
  EXPECT("ch control",
         "\x83\xa1v\x01\xa1t\xa8presence\xa2"
         "ch\xa2"
         "a\n",
         WSG_ENV_BAD_VALUE, "ch");
  /* a C1 control (U+0085): valid UTF-8, not a name a client can subscribe to */
  EXPECT("ch C1",
         "\x83\xa1v\x01\xa1t\xa8presence\xa2"
         "ch\xa3"
         "a\xc2\x85",
         WSG_ENV_BAD_VALUE, "ch");
  /* invalid UTF-8 user */
  EXPECT("bad utf8",
         "\x84\xa1v\x01\xa1t\xa4send\xa1u\xa1\xff\xa1"
         "d\xc4\x00",
         WSG_ENV_BAD_UTF8, "u");
}

Test(wsg_command, every_prefix_of_every_vector_fails_cleanly) {
  static const char *const names[] = {"cmd_send_user", "cmd_send_users", "cmd_send_conn",
                                      "cmd_disconnect_user", "cmd_publish"};
  for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
    size_t len;
    const uint8_t *v = read_vector(names[i], &len);
    uint8_t *copy = malloc(len); /* exact size: ASan sees any read past the end */
    for (size_t n = 0; n < len; n++) {
      memcpy(copy, v, n);
      wsg_command c;
      cr_assert_neq(wsg_command_decode(&c, copy, n, NULL), WSG_ENV_OK, "%s: prefix %zu", names[i],
                    n);
    }
    free(copy);
  }
}

Test(wsg_command, too_many_users) {
  /* A declared array of 1001 users is refused before reading them. */
  uint8_t buf[64] = "\x84\xa1v\x01\xa1t\xa4send\xa2us\xdc\x03\xe9";
  size_t n = 17;
  memset(buf + n, 0xa0, sizeof buf - n); /* empty strings */
  wsg_command c;
  const char *f = NULL;
  int rc = wsg_command_decode(&c, buf, sizeof buf, &f);
  cr_assert(rc == WSG_ENV_TOO_LONG || rc == WSG_ENV_TRUNCATED, "%s", wsg_env_err_name(rc));
}
