/*
 * gw_chjl: join/leave batches: names until GW_CHJL_LIST_MAX events, counts only past it; the wire
 * form round-trips through gw_chjl_merge (the coalescing a receiving gateway does), bad wire
 * batches are refused; the presence_change frames as docs/PROTOCOL.md shows them.
 */
#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>

#include "gw_chjl.h"

static void expect_frame(const gw_chjl_batch *b, const char *want) {
  gw_msg *m = gw_chjl_frame(b, "room:x", 6, false);
  cr_assert_not_null(m);
  cr_expect(!gw_msg_binary(m));
  cr_expect(gw_msg_len(m) == strlen(want) && memcmp(gw_msg_payload(m), want, strlen(want)) == 0,
            "got %.*s", (int)gw_msg_len(m), (const char *)gw_msg_payload(m));
  gw_msg_unref(m);
}

/* b's wire form merged into a fresh batch (what another gateway receives). */
static void round_trip(const gw_chjl_batch *b, gw_chjl_batch *into) {
  uint8_t *d = NULL;
  size_t n = gw_chjl_encode(b, &d);
  cr_assert_gt(n, 0);
  cr_assert_eq(gw_chjl_merge(into, d, n), 0);
  free(d);
}

Test(gw_chjl, names_one_per_connection) {
  gw_chjl_batch b;
  gw_chjl_init(&b);
  cr_expect(gw_chjl_empty(&b));
  gw_chjl_add(&b, "alice", 5, true);
  gw_chjl_add(&b, "alice", 5, true); /* a second connection of alice: twice */
  gw_chjl_add(&b, "bob", 3, false);
  expect_frame(&b, "{\"wsgate\":\"presence_change\",\"channel\":\"room:x\",\"joined\":[\"alice\","
                   "\"alice\"],\"left\":[\"bob\"]}");
  gw_chjl_batch r;
  gw_chjl_init(&r);
  round_trip(&b, &r);
  round_trip(&b, &r); /* two gateways' batches coalesced */
  cr_expect_eq(r.joined, 4);
  cr_expect_eq(r.left, 2);
  expect_frame(&r, "{\"wsgate\":\"presence_change\",\"channel\":\"room:x\",\"joined\":[\"alice\","
                   "\"alice\",\"alice\",\"alice\"],\"left\":[\"bob\",\"bob\"]}");
  gw_chjl_clear(&b);
  gw_chjl_clear(&r);
  cr_expect(gw_chjl_empty(&r));
}

Test(gw_chjl, counts_only_past_the_cap) {
  gw_chjl_batch b;
  gw_chjl_init(&b);
  for (int i = 0; i < 250; i++)
    gw_chjl_add(&b, "u", 1, true);
  for (int i = 0; i < 3; i++)
    gw_chjl_add(&b, "v", 1, false);
  cr_expect(gw_chjl_counts_only(&b));
  cr_expect_eq(b.n, 0, "no names held past the cap");
  expect_frame(&b, "{\"wsgate\":\"presence_change\",\"channel\":\"room:x\",\"joined_count\":250,"
                   "\"left_count\":3}");
  /* Merging names into a counts-only batch keeps counting; every event is counted once. */
  gw_chjl_batch small, r;
  gw_chjl_init(&small);
  gw_chjl_init(&r);
  gw_chjl_add(&small, "w", 1, false);
  round_trip(&b, &r);
  round_trip(&small, &r);
  cr_expect_eq(r.joined, 250);
  cr_expect_eq(r.left, 4);
  cr_expect(gw_chjl_counts_only(&r));
  gw_chjl_clear(&b);
  gw_chjl_clear(&small);
  gw_chjl_clear(&r);
}

Test(gw_chjl, exactly_the_cap_keeps_names) {
  gw_chjl_batch b, r;
  gw_chjl_init(&b);
  gw_chjl_init(&r);
  for (int i = 0; i < GW_CHJL_LIST_MAX; i++)
    gw_chjl_add(&b, "u", 1, i % 2 == 0);
  cr_expect(!gw_chjl_counts_only(&b));
  round_trip(&b, &r);
  cr_expect(!gw_chjl_counts_only(&r));
  gw_chjl_add(&r, "x", 1, true);
  cr_expect(gw_chjl_counts_only(&r), "one more turns it to counts");
  cr_expect_eq(r.joined + r.left, GW_CHJL_LIST_MAX + 1);
  gw_chjl_clear(&b);
  gw_chjl_clear(&r);
}

Test(gw_chjl, msgpack_frame) {
  gw_chjl_batch b;
  gw_chjl_init(&b);
  gw_chjl_add(&b, "al", 2, true);
  gw_msg *m = gw_chjl_frame(&b, "r", 1, true);
  cr_assert_not_null(m);
  cr_expect(gw_msg_binary(m));
  static const uint8_t want[] = "\x84\xa6wsgate\xafpresence_change\xa7"
                                "channel\xa1r\xa6joined\x91\xa2"
                                "al\xa4left\x90";
  cr_expect(gw_msg_len(m) == sizeof want - 1 &&
            memcmp(gw_msg_payload(m), want, sizeof want - 1) == 0);
  gw_msg_unref(m);
  gw_chjl_clear(&b);
}

Test(gw_chjl, bad_wire_batches_refused) {
  static const struct {
    const char *bytes;
    size_t len;
    const char *why;
  } bad[] = {
      {"\x91\x01", 2, "not a map"},
      {"\x81\xa1j\xa1x", 4, "j not an array"},
      {"\x81\xa1j\x91\x01", 5, "a name that is not a str"},
      {"\x81\xa1j\x91\xa0", 5, "an empty name"},
      {"\x82\xa1j\x91\xa1x\xa2jn\x01", 9, "names and counts"},
      {"\x81\xa2jn\xa1x", 5, "a count that is not a uint"},
      {"\x81\xa1j", 3, "truncated"},
  };
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    gw_chjl_batch b;
    gw_chjl_init(&b);
    cr_expect_eq(gw_chjl_merge(&b, (const uint8_t *)bad[i].bytes, bad[i].len), -1, "%s",
                 bad[i].why);
    cr_expect(gw_chjl_empty(&b), "%s: nothing added", bad[i].why);
    gw_chjl_clear(&b);
  }
  gw_chjl_batch b;
  gw_chjl_init(&b);
  cr_expect_eq(gw_chjl_merge(&b, NULL, 0), -1);
}
