/*
 * gw_peers: what each source address holds and spends at the gateway's door, in bounded memory
 * whatever the sources: open sockets (from accept to close), pending sockets (accepted, not yet
 * upgraded) and a rate budget for upgrade attempts (GCRA, gw_ratelimit.h).
 *
 * A count-min sketch, not a map: GW_PEERS_ROWS rows of 2^bits buckets, each address hashed (SipHash
 * under a random per-process key, so no one can pick colliding addresses) to one bucket per row.
 * Adding charges every row; a reading is the smallest of the rows. Memory is fixed at creation
 * (no entry to evict, nothing an attacker can grow) and a reading can only overestimate: a
 * collision may refuse an address early, never let one past its cap. Collisions only add other
 * addresses' own counts: 100,000 connected addresses over 2^15 buckets put about 3 addresses in a
 * bucket, a few sockets against caps of hundreds.
 *
 * Addresses: IPv4 as its 4 bytes (IPv4-mapped IPv6 too); IPv6 by its /64 prefix, since one host
 * usually owns a whole /64 and could otherwise pick a fresh address for every connection.
 *
 * Threads: the loop thread only.
 */
#ifndef GW_PEERS_H
#define GW_PEERS_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>

#include "gw_ratelimit.h"

#define GW_PEERS_ROWS 2

typedef struct gw_peers gw_peers;

/* The buckets of one address (one per row): what a socket keeps to release its counts. */
typedef struct {
  uint32_t b[GW_PEERS_ROWS];
} gw_peer_key;

/* A table of GW_PEERS_ROWS x 2^bits buckets (bits 4..24); NULL if out of memory or getrandom
 * failed. */
gw_peers *gw_peers_new(unsigned bits);
void gw_peers_free(gw_peers *p);
/* Bytes the table holds (for the log line at start). */
uint64_t gw_peers_memory(const gw_peers *p);

/* The key of a source address (AF_INET or AF_INET6; any other family maps to one shared key). */
gw_peer_key gw_peers_key(const gw_peers *p, const struct sockaddr *sa, socklen_t len);

/* Readings: at least what the address holds. */
uint32_t gw_peers_open(const gw_peers *p, gw_peer_key k);
uint32_t gw_peers_pending(const gw_peers *p, gw_peer_key k);
/* Adds d_open and d_pending (each +1, -1 or 0) to the address' counts; counts never go below 0. */
void gw_peers_add(gw_peers *p, gw_peer_key k, int d_open, int d_pending);

/* Charges one upgrade attempt against the address' budget r: true if allowed (every row
 * charged), false if refused (nothing charged). Unlimited r: always true. */
bool gw_peers_rate_allow(gw_peers *p, gw_peer_key k, const gw_rate *r, uint64_t now_ns);

#endif
