/*
 * Unit tests for gw_peers: per-address counts and upgrade budgets in a fixed-size sketch. Counts
 * follow adds and releases exactly for one address, addresses are told apart (IPv4, IPv6 by /64,
 * IPv4-mapped IPv6 as IPv4), budgets are per address, and a flood from a million addresses
 * changes no memory and leaves an innocent address' reading small.
 */
#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <netinet/in.h>
#include <string.h>

#include "gw_peers.h"

static gw_peer_key v4(gw_peers *p, const char *ip) {
  struct sockaddr_in a = {.sin_family = AF_INET};
  cr_assert_eq(inet_pton(AF_INET, ip, &a.sin_addr), 1);
  return gw_peers_key(p, (struct sockaddr *)&a, sizeof a);
}

static gw_peer_key v6(gw_peers *p, const char *ip) {
  struct sockaddr_in6 a = {.sin6_family = AF_INET6};
  cr_assert_eq(inet_pton(AF_INET6, ip, &a.sin6_addr), 1);
  return gw_peers_key(p, (struct sockaddr *)&a, sizeof a);
}

static bool same(gw_peer_key a, gw_peer_key b) {
  return memcmp(&a, &b, sizeof a) == 0;
}

Test(gw_peers, counts_follow_adds_and_releases) {
  gw_peers *p = gw_peers_new(10);
  cr_assert_not_null(p);
  gw_peer_key k = v4(p, "192.0.2.7");
  for (int i = 0; i < 5; i++)
    gw_peers_add(p, k, 1, 1);
  cr_assert_eq(gw_peers_open(p, k), 5);
  cr_assert_eq(gw_peers_pending(p, k), 5);
  gw_peers_add(p, k, 0, -1); /* one upgraded */
  gw_peers_add(p, k, -1, 0); /* one closed */
  cr_assert_eq(gw_peers_open(p, k), 4);
  cr_assert_eq(gw_peers_pending(p, k), 4);
  for (int i = 0; i < 10; i++)
    gw_peers_add(p, k, -1, -1); /* never below zero */
  cr_assert_eq(gw_peers_open(p, k), 0);
  gw_peers_free(p);
}

Test(gw_peers, addresses_are_told_apart_ipv6_by_prefix) {
  gw_peers *p = gw_peers_new(16);
  cr_assert(same(v4(p, "10.0.0.1"), v6(p, "::ffff:10.0.0.1")), "v4-mapped is the v4 client");
  cr_assert(same(v6(p, "2001:db8:1:2::1"), v6(p, "2001:db8:1:2:ffff::9")), "same /64");
  cr_assert(!same(v6(p, "2001:db8:1:2::1"), v6(p, "2001:db8:1:3::1")), "another /64");
  cr_assert(!same(v4(p, "10.0.0.1"), v4(p, "10.0.0.2")));
  gw_peer_key a = v4(p, "10.0.0.1"), b = v4(p, "10.0.0.2");
  gw_peers_add(p, a, 1, 0);
  cr_assert_eq(gw_peers_open(p, b), 0);
  gw_peers_free(p);
}

Test(gw_peers, upgrade_budget_is_per_address) {
  gw_peers *p = gw_peers_new(16);
  gw_rate r;
  gw_rate_init(&r, 2, 2); /* 2 per second, burst 2 */
  gw_peer_key a = v4(p, "10.0.0.1"), b = v4(p, "10.0.0.2");
  uint64_t t = 1000000000000ull;
  cr_assert(gw_peers_rate_allow(p, a, &r, t));
  cr_assert(gw_peers_rate_allow(p, a, &r, t));
  cr_assert(!gw_peers_rate_allow(p, a, &r, t), "a's burst is spent");
  cr_assert(gw_peers_rate_allow(p, b, &r, t), "b's budget is its own");
  cr_assert(gw_peers_rate_allow(p, a, &r, t + 500000000ull), "refilled at 2/s");
  gw_rate none;
  gw_rate_init(&none, 0, 0);
  cr_assert(gw_peers_rate_allow(p, a, &none, t));
  gw_peers_free(p);
}

Test(gw_peers, a_flood_of_addresses_costs_no_memory_and_spares_the_innocent) {
  gw_peers *p = gw_peers_new(15);
  uint64_t mem = gw_peers_memory(p);
  cr_assert_lt(mem, 2u << 20, "fixed at creation: %llu bytes", (unsigned long long)mem);
  struct sockaddr_in a = {.sin_family = AF_INET};
  for (uint32_t i = 0; i < 1000000; i++) {
    a.sin_addr.s_addr = htonl(0x0b000000u + i);
    gw_peers_add(p, gw_peers_key(p, (struct sockaddr *)&a, sizeof a), 1, 1);
  }
  cr_assert_eq(gw_peers_memory(p), mem);
  /* A million sockets over 2^15 buckets: about 30 a bucket; the innocent reads about that, far
   * below caps of hundreds, and never 0 less than what it holds. */
  gw_peer_key k = v4(p, "192.0.2.1");
  gw_peers_add(p, k, 1, 0);
  cr_assert_geq(gw_peers_open(p, k), 1);
  cr_assert_lt(gw_peers_open(p, k), 100, "reading %u", gw_peers_open(p, k));
  gw_peers_free(p);
}
