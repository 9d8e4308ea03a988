/*
 * Unit tests of common/wsg_redis_keys: key names byte for byte, buffer bounds, connection id
 * formatting, and the one-key rule of the Lua scripts. The scripts' behaviour against a real
 * redis-server is in tests/integration/wsg_redis_keys_test.c.
 */
#include <criterion/criterion.h>
#include <stdint.h>
#include <string.h>

#include "wsg_redis_keys.h"

Test(wsg_redis_keys, names_follow_the_documented_layout) {
  char buf[WSG_REDIS_KEY_MAX];
  cr_expect_eq(wsg_key_gateway(buf, sizeof(buf), "wsgate:", "gw-a1b2"), 17);
  cr_expect_str_eq(buf, "wsgate:gw:gw-a1b2");
  cr_expect_eq(wsg_key_slot(buf, sizeof(buf), "wsgate:", 15), 14);
  cr_expect_str_eq(buf, "wsgate:slot:15");
  cr_expect_eq(wsg_key_slot(buf, sizeof(buf), "", UINT32_MAX), 15);
  cr_expect_str_eq(buf, "slot:4294967295");
  cr_expect_eq(wsg_key_user(buf, sizeof(buf), "wsgate:", "alice", 5), 17);
  cr_expect_str_eq(buf, "wsgate:user:alice");
  cr_expect_eq(wsg_key_room(buf, sizeof(buf), "app1:", "lobby", 5), 15);
  cr_expect_str_eq(buf, "app1:room:lobby");
}

/* User ids are opaque bytes: copied by length, NUL bytes included. */
Test(wsg_redis_keys, user_names_are_binary_safe) {
  char buf[64];
  const char user[] = {'a', '\0', 'b', ':', '\xff'};
  int n = wsg_key_user(buf, sizeof(buf), "p:", user, sizeof(user));
  cr_assert_eq(n, 2 + 5 + 5);
  cr_expect_eq(memcmp(buf, "p:user:", 7), 0);
  cr_expect_eq(memcmp(buf + 7, user, sizeof(user)), 0);
  cr_expect_eq(buf[n], '\0');
}

Test(wsg_redis_keys, exact_fit_and_one_byte_short) {
  /* "wsgate:user:alice" is 17 bytes: it needs 18 with the terminator. */
  char buf[18];
  cr_expect_eq(wsg_key_user(buf, 18, "wsgate:", "alice", 5), 17);
  cr_expect_str_eq(buf, "wsgate:user:alice");
  cr_expect_eq(wsg_key_user(buf, 17, "wsgate:", "alice", 5), -1);
  cr_expect_eq(wsg_key_slot(buf, 0, "wsgate:", 1), -1);
}

Test(wsg_redis_keys, empty_or_missing_names_are_refused) {
  char buf[64];
  cr_expect_eq(wsg_key_gateway(buf, sizeof(buf), "wsgate:", ""), -1);
  cr_expect_eq(wsg_key_gateway(buf, sizeof(buf), "wsgate:", NULL), -1);
  cr_expect_eq(wsg_key_user(buf, sizeof(buf), "wsgate:", "", 0), -1);
  cr_expect_eq(wsg_key_room(buf, sizeof(buf), NULL, "r", 1), -1);
}

Test(wsg_redis_keys, conn_ids_are_decimal) {
  char buf[21];
  cr_expect_eq(wsg_conn_id_format(buf, sizeof(buf), 0), 1);
  cr_expect_str_eq(buf, "0");
  cr_expect_eq(wsg_conn_id_format(buf, sizeof(buf), UINT64_MAX), 20);
  cr_expect_str_eq(buf, "18446744073709551615");
  cr_expect_eq(wsg_conn_id_format(buf, 20, UINT64_MAX), -1);
  cr_expect_eq(wsg_conn_id_format(buf, 0, 1), -1);
}

/* Redis Cluster runs a script only if all its keys share a hash slot: ours use KEYS[1] alone. */
Test(wsg_redis_keys, scripts_touch_one_key) {
  const char *scripts[] = {WSG_LUA_LEASE_ACQUIRE, WSG_LUA_LEASE_RENEW, WSG_LUA_LEASE_RELEASE,
                           WSG_LUA_CONN_DELETE};
  for (size_t i = 0; i < sizeof(scripts) / sizeof(scripts[0]); i++) {
    cr_expect(strstr(scripts[i], "KEYS[1]"), "script %zu does not use KEYS[1]", i);
    cr_expect_null(strstr(scripts[i], "KEYS[2]"), "script %zu uses a second key", i);
    cr_expect_null(strstr(scripts[i], "redis.call('KEYS'"), "script %zu scans", i);
  }
}
