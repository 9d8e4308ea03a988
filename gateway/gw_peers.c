/*
 * gw_peers: per-source-address counts and upgrade budgets in a fixed-size count-min sketch (see
 * gw_peers.h for why a sketch and what a reading means).
 *
 * Threads: the loop thread only.
 */
#include "gw_peers.h"

#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include "gw_conns.h"

typedef struct {
  uint32_t open, pending;
  uint64_t tat_ns; /* upgrade budget (gw_ratelimit) */
} bucket;

struct gw_peers {
  uint32_t mask;
  uint64_t k[GW_PEERS_ROWS][2]; /* SipHash key per row */
  bucket *rows[GW_PEERS_ROWS];
};

gw_peers *gw_peers_new(unsigned bits) {
  if (bits < 4 || bits > 24)
    return NULL;
  gw_peers *p = calloc(1, sizeof *p);
  if (!p)
    return NULL;
  p->mask = (1u << bits) - 1;
  if (getrandom(p->k, sizeof p->k, 0) != (ssize_t)sizeof p->k) {
    free(p);
    return NULL;
  }
  for (int r = 0; r < GW_PEERS_ROWS; r++) {
    p->rows[r] = calloc((size_t)p->mask + 1, sizeof(bucket));
    if (!p->rows[r]) {
      gw_peers_free(p);
      return NULL;
    }
  }
  return p;
}

void gw_peers_free(gw_peers *p) {
  if (!p)
    return;
  for (int r = 0; r < GW_PEERS_ROWS; r++)
    free(p->rows[r]);
  free(p);
}

uint64_t gw_peers_memory(const gw_peers *p) {
  return sizeof *p + (uint64_t)GW_PEERS_ROWS * ((uint64_t)p->mask + 1) * sizeof(bucket);
}

gw_peer_key gw_peers_key(const gw_peers *p, const struct sockaddr *sa, socklen_t len) {
  static const uint8_t v4mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
  uint8_t id[9] = {0}; /* family tag, then the address bytes that count */
  size_t n = 1;
  if (sa && sa->sa_family == AF_INET && len >= (socklen_t)sizeof(struct sockaddr_in)) {
    const struct sockaddr_in *in = (const struct sockaddr_in *)sa;
    id[0] = 4;
    memcpy(id + 1, &in->sin_addr, 4);
    n = 5;
  } else if (sa && sa->sa_family == AF_INET6 && len >= (socklen_t)sizeof(struct sockaddr_in6)) {
    const uint8_t *a = ((const struct sockaddr_in6 *)sa)->sin6_addr.s6_addr;
    if (memcmp(a, v4mapped, sizeof v4mapped) == 0) {
      id[0] = 4; /* the same client whether it came over the v4 or the v6 socket */
      memcpy(id + 1, a + 12, 4);
      n = 5;
    } else {
      id[0] = 6;
      memcpy(id + 1, a, 8); /* the /64 */
      n = 9;
    }
  }
  gw_peer_key k;
  for (int r = 0; r < GW_PEERS_ROWS; r++)
    k.b[r] = (uint32_t)gw_siphash(p->k[r][0], p->k[r][1], id, n) & p->mask;
  return k;
}

/* The smallest of the rows' counts: the reading of a count-min sketch. */
static uint32_t reading(const gw_peers *p, gw_peer_key k, bool pending) {
  uint32_t v = UINT32_MAX;
  for (int r = 0; r < GW_PEERS_ROWS; r++) {
    const bucket *b = &p->rows[r][k.b[r]];
    uint32_t c = pending ? b->pending : b->open;
    if (c < v)
      v = c;
  }
  return v;
}

uint32_t gw_peers_open(const gw_peers *p, gw_peer_key k) {
  return reading(p, k, false);
}

uint32_t gw_peers_pending(const gw_peers *p, gw_peer_key k) {
  return reading(p, k, true);
}

static void bump(uint32_t *c, int d) {
  if (d > 0)
    (*c)++;
  else if (d < 0 && *c > 0)
    (*c)--;
}

void gw_peers_add(gw_peers *p, gw_peer_key k, int d_open, int d_pending) {
  for (int r = 0; r < GW_PEERS_ROWS; r++) {
    bucket *b = &p->rows[r][k.b[r]];
    bump(&b->open, d_open);
    bump(&b->pending, d_pending);
  }
}

bool gw_peers_rate_allow(gw_peers *p, gw_peer_key k, const gw_rate *r, uint64_t now_ns) {
  if (gw_rate_unlimited(r))
    return true;
  /* Allowed when the least charged row allows it (count-min: the others may share a bucket). */
  uint64_t tat = UINT64_MAX;
  for (int i = 0; i < GW_PEERS_ROWS; i++)
    if (p->rows[i][k.b[i]].tat_ns < tat)
      tat = p->rows[i][k.b[i]].tat_ns;
  uint64_t probe = tat;
  if (!gw_rate_allow(r, &probe, now_ns, 1))
    return false;
  for (int i = 0; i < GW_PEERS_ROWS; i++) {
    uint64_t *t = &p->rows[i][k.b[i]].tat_ns;
    uint64_t mine = *t;
    if (!gw_rate_allow(r, &mine, now_ns, 1))
      mine = probe; /* a shared bucket over budget: it takes this address' charge, no more */
    if (mine > *t)
      *t = mine;
  }
  return true;
}
