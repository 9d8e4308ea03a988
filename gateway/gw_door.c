/*
 * gw_door: the sockets of the WebSocket port from accept() until libwebsockets frees them, counted
 * so that nothing unauthenticated holds more than its share (issue 16): all sockets together stay
 * within --max-connections + --max-handshakes, sockets before their upgrade within
 * --max-handshakes, and each source address within --max-conns-per-addr open and
 * --max-pending-per-addr before their upgrade (gw_peers). A socket over a cap is closed in
 * LWS_CALLBACK_FILTER_NETWORK_CONNECTION, right after accept(), before lws gives it a header
 * buffer; lws can answer nothing there. How long one may stay before its upgrade is the
 * handshake timeout (gw_server_create: timeout_secs, timeout_secs_ah_idle).
 *
 * libwebsockets 4.1.6 calls FILTER_NETWORK_CONNECTION with the listening wsi and the peer address,
 * then, for the same socket and within the same call, LWS_CALLBACK_WSI_CREATE with the new wsi
 * (ops-listen.c, adopt.c): the address is stashed in between. Every wsi ends with
 * LWS_CALLBACK_WSI_DESTROY on protocols[0] (close.c). A wsi pointer seen again by WSI_CREATE
 * while still in the table (a destroy we never saw) first releases its old counts, so a missed
 * callback cannot leak an address' count for good.
 *
 * Threads: the loop thread only.
 */
#include <stdint.h>

#include "gw_session.h"
#include "wsg_time.h"

/* A socket's entry in s->sockets: its buckets, a mark (never NULL) and whether it is pending. */
#define SOCK_MARK    ((uint64_t)1 << 62)
#define SOCK_PENDING ((uint64_t)1 << 63)
static_assert(sizeof(void *) == 8, "socket entries pack 64 bits into the map's value");
static_assert(GW_PEERS_ROWS == 2, "socket entries pack two 24-bit bucket indices");

static void *sock_val(gw_peer_key k, bool pending) {
  uint64_t v = SOCK_MARK | (pending ? SOCK_PENDING : 0) | ((uint64_t)k.b[0] << 24) | k.b[1];
  return (void *)(uintptr_t)v;
}

static gw_peer_key val_key(void *val) {
  uint64_t v = (uint64_t)(uintptr_t)val;
  gw_peer_key k = {{(uint32_t)((v >> 24) & 0xffffff), (uint32_t)(v & 0xffffff)}};
  return k;
}

static bool val_pending(void *val) {
  return ((uint64_t)(uintptr_t)val & SOCK_PENDING) != 0;
}

static void release(gw_server *s, void *val) {
  bool pending = val_pending(val);
  s->nsockets--;
  if (pending)
    s->npending_sockets--;
  gw_peers_add(s->peers, val_key(val), -1, pending ? -1 : 0);
  wsg_gauge_set(s->m_handshakes, (int64_t)s->npending_sockets);
}

int gw_door_filter(gw_server *s, const struct lws_filter_network_conn_args *a) {
  s->accept_stashed = false;
  gw_peer_key k = gw_peers_key(s->peers, (const struct sockaddr *)&a->cli_addr, a->clilen);
  const gw_config *cfg = s->cfg;
  int why = -1;
  if (s->nsockets >= s->max_conns + s->max_handshakes)
    why = GW_DOOR_FULL;
  else if (s->npending_sockets >= s->max_handshakes)
    why = GW_DOOR_HANDSHAKES;
  else if (cfg->max_conns_per_addr > 0 &&
           gw_peers_open(s->peers, k) >= (uint64_t)cfg->max_conns_per_addr)
    why = GW_DOOR_ADDR_OPEN;
  else if (cfg->max_pending_per_addr > 0 &&
           gw_peers_pending(s->peers, k) >= (uint64_t)cfg->max_pending_per_addr)
    why = GW_DOOR_ADDR_PENDING;
  if (why >= 0) {
    wsg_counter_add(s->m_accept_refused[why], 1);
    wsg_log_limited(&s->rl_refuse, LOG_LIMIT_PER_S, wsg_now_mono_ms(), WSG_LOG_INFO, "server",
                    "socket closed at accept: %s (%llu sockets open, %llu before their upgrade)",
                    why == GW_DOOR_FULL         ? "--max-connections + --max-handshakes reached"
                    : why == GW_DOOR_HANDSHAKES ? "--max-handshakes reached"
                    : why == GW_DOOR_ADDR_OPEN  ? "its address is at --max-conns-per-addr"
                                                : "its address is at --max-pending-per-addr",
                    (unsigned long long)s->nsockets, (unsigned long long)s->npending_sockets);
    return 1;
  }
  s->accept_key = k;
  s->accept_stashed = true;
  return 0;
}

void gw_door_created(gw_server *s, struct lws *wsi) {
  if (!s->accept_stashed)
    return; /* not an accepted client socket (lws' own pipe, the listener) */
  s->accept_stashed = false;
  void *old = gw_conn_map_del(&s->sockets, (uint64_t)(uintptr_t)wsi);
  if (old)
    release(s, old);
  if (gw_conn_map_put(&s->sockets, (uint64_t)(uintptr_t)wsi, sock_val(s->accept_key, true)) != 0)
    return; /* out of memory: uncounted, and still bounded by the handshake timeout */
  s->nsockets++;
  s->npending_sockets++;
  gw_peers_add(s->peers, s->accept_key, 1, 1);
  wsg_gauge_set(s->m_handshakes, (int64_t)s->npending_sockets);
}

void gw_door_upgraded(gw_server *s, struct lws *wsi) {
  uint64_t key = (uint64_t)(uintptr_t)wsi;
  void *val = gw_conn_map_get(&s->sockets, key);
  if (!val || !val_pending(val))
    return;
  gw_peer_key k = val_key(val);
  gw_conn_map_put(&s->sockets, key, sock_val(k, false)); /* replaces in place: cannot fail */
  s->npending_sockets--;
  gw_peers_add(s->peers, k, 0, -1);
  wsg_gauge_set(s->m_handshakes, (int64_t)s->npending_sockets);
}

void gw_door_destroyed(gw_server *s, struct lws *wsi) {
  void *val = gw_conn_map_del(&s->sockets, (uint64_t)(uintptr_t)wsi);
  if (val)
    release(s, val);
}

bool gw_door_key(gw_server *s, struct lws *wsi, gw_peer_key *out) {
  void *val = gw_conn_map_get(&s->sockets, (uint64_t)(uintptr_t)wsi);
  if (!val)
    return false;
  *out = val_key(val);
  return true;
}

void gw_door_finish(gw_server *s) {
  gw_conn_map_finish(&s->sockets);
  gw_peers_free(s->peers);
  s->peers = NULL;
}
