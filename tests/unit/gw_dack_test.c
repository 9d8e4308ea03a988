/* gw_dack: the ack frames a direct peer receives, checked as the byte stream it reads: whole
 * frames only, each a cumulative sequence above the last, and the newest sequence due always
 * acknowledged in the end, however the writes are cut (a half-written ack used to lose a newer
 * one). */
#include <criterion/criterion.h>
#include <stdint.h>
#include <string.h>

#include "gw_dack.h"

#define ACK_LEN (WSG_DFRAME_HDR + WSG_DFRAME_SEQ)

/* The peer's side: the bytes it has read, decoded frame by frame. */
typedef struct {
  uint8_t buf[ACK_LEN];
  size_t len;
  uint64_t last; /* the last ack decoded */
  size_t acks;
} reader;

static void take(reader *r, const uint8_t *b, size_t n) {
  for (size_t i = 0; i < n; i++) {
    r->buf[r->len++] = b[i];
    if (r->len < ACK_LEN)
      continue;
    cr_assert_eq(wsg_dframe_get32(r->buf), WSG_DFRAME_SEQ, "a frame that is not an ack");
    uint64_t seq = wsg_dframe_get64(r->buf + WSG_DFRAME_HDR);
    cr_assert_gt(seq, r->last, "ack %llu after %llu: not above the last", (unsigned long long)seq,
                 (unsigned long long)r->last);
    r->last = seq;
    r->acks++;
    r->len = 0;
  }
}

/* Writes at most room bytes of what a owes (a socket with that much space). Returns the bytes. */
static size_t write_some(gw_dack *a, reader *r, size_t room) {
  size_t total = 0;
  const uint8_t *b;
  size_t n;
  while (room > 0 && gw_dack_next(a, &b, &n)) {
    size_t w = n < room ? n : room;
    take(r, b, w);
    bool whole = gw_dack_wrote(a, w);
    cr_assert_eq(whole, r->len == 0, "gw_dack_wrote() disagrees with the bytes on the wire");
    room -= w;
    total += w;
  }
  return total;
}

Test(gw_dack, zeroed_owes_nothing) {
  gw_dack a = {0};
  const uint8_t *b;
  size_t n;
  cr_assert_not(gw_dack_next(&a, &b, &n));
  gw_dack_due(&a, 0);
  cr_assert_not(gw_dack_next(&a, &b, &n));
  cr_assert_eq(gw_dack_acked(&a), 0);
}

Test(gw_dack, one_ack_whole) {
  gw_dack a = {0};
  reader r = {0};
  gw_dack_due(&a, 3);
  cr_assert_eq(write_some(&a, &r, SIZE_MAX), ACK_LEN);
  cr_assert_eq(r.last, 3);
  cr_assert_eq(gw_dack_acked(&a), 3);
  const uint8_t *b;
  size_t n;
  cr_assert_not(gw_dack_next(&a, &b, &n), "owes nothing once written");
  gw_dack_due(&a, 2); /* a lower sequence is already covered */
  cr_assert_not(gw_dack_next(&a, &b, &n));
}

Test(gw_dack, unstarted_frame_takes_the_newest) {
  gw_dack a = {0};
  reader r = {0};
  const uint8_t *b;
  size_t n;
  gw_dack_due(&a, 3);
  cr_assert(gw_dack_next(&a, &b, &n)); /* built, but the socket took nothing */
  gw_dack_due(&a, 5);
  cr_assert_eq(write_some(&a, &r, SIZE_MAX), ACK_LEN, "one frame, not two");
  cr_assert_eq(r.acks, 1);
  cr_assert_eq(r.last, 5);
}

/* The bug: the socket takes part of the ack of 3; 7 is dispatched; the peer sends nothing more.
 * Once the socket has room, the ack of 3 is finished and 7 is acknowledged after it. */
Test(gw_dack, half_written_then_newest_follows) {
  gw_dack a = {0};
  reader r = {0};
  gw_dack_due(&a, 3);
  cr_assert_eq(write_some(&a, &r, 5), 5);
  gw_dack_due(&a, 7);
  const uint8_t *b;
  size_t n;
  cr_assert(gw_dack_next(&a, &b, &n));
  cr_assert_eq(n, ACK_LEN - 5, "the rest of the half-written frame comes first");
  cr_assert_eq(write_some(&a, &r, SIZE_MAX), ACK_LEN - 5 + ACK_LEN);
  cr_assert_eq(r.acks, 2);
  cr_assert_eq(r.last, 7, "the newest sequence due is acknowledged");
  cr_assert_eq(gw_dack_acked(&a), 7);
  cr_assert_not(gw_dack_next(&a, &b, &n));
}

/* Every way of cutting the writes (room 0..ACK_LEN per turn, from a fixed pseudo-random
 * sequence), interleaved with new sequences due: the stream stays whole frames, increasing, and
 * after the last drain the peer has the newest. At most two frames' bytes ever leave per drain
 * once nothing new is due, so no write loops. */
Test(gw_dack, any_cut_ends_with_the_newest) {
  uint32_t x = 2463534242u;
  for (int round = 0; round < 2000; round++) {
    gw_dack a = {0};
    reader r = {0};
    uint64_t seq = 0;
    for (int step = 0; step < 50; step++) {
      x ^= x << 13;
      x ^= x >> 17;
      x ^= x << 5;
      if (x & 1)
        gw_dack_due(&a, seq += 1 + (x >> 1) % 4);
      write_some(&a, &r, (x >> 8) % (ACK_LEN + 1));
    }
    size_t left = write_some(&a, &r, SIZE_MAX);
    cr_assert_leq(left, 2 * ACK_LEN, "round %d: %zu bytes owed with nothing new due", round, left);
    cr_assert_eq(r.len, 0, "round %d: a frame cut short", round);
    cr_assert_eq(r.last, seq, "round %d: acked %llu, %llu due", round, (unsigned long long)r.last,
                 (unsigned long long)seq);
    const uint8_t *b;
    size_t n;
    cr_assert_not(gw_dack_next(&a, &b, &n));
  }
}
