/*
 * gw_door: the sockets of the WebSocket port from accept() until libwebsockets frees them, counted
 * so that nothing unauthenticated holds more than its share (issue 16): all sockets together stay
 * within --max-connections + --max-handshakes, sockets before their upgrade within
 * --max-handshakes, and each source address within --max-conns-per-addr open and
 * --max-pending-per-addr before their upgrade (gw_peers). A socket over a cap is closed in
 * LWS_CALLBACK_FILTER_NETWORK_CONNECTION, right after accept(), before lws gives it a header
 * buffer; lws can answer nothing there. A socket may stay --handshake-timeout from its accept
 * before its upgrade (TLS handshake, request head): the deadline is ours, in a FIFO (gw_doorq.h)
 * run by one ev_timer, because lws' own handshake timeouts fire up to 30 s late on a quiet
 * gateway (docs/notes/libwebsockets-4.1.6.md#timers); lws' stay, a little later
 * (gw_door_lws_timeout_s), for a socket whose deadline could not be queued.
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

/* A socket's entry in s->sockets: its buckets, the tag of its handshake deadline, a mark (never
 * NULL) and whether it is pending. */
#define SOCK_MARK    ((uint64_t)1 << 62)
#define SOCK_PENDING ((uint64_t)1 << 63)
#define BUCKET_MASK  (((uint64_t)1 << GW_DOOR_BUCKET_BITS) - 1)
#define TAG_SHIFT    (2 * GW_DOOR_BUCKET_BITS)
#define TAG_MASK     (((uint64_t)1 << (62 - TAG_SHIFT)) - 1)
static_assert(sizeof(void *) == 8, "socket entries pack 64 bits into the map's value");
static_assert(GW_PEERS_ROWS == 2, "socket entries pack two bucket indices");
static_assert(TAG_SHIFT <= 40, "socket entries keep at least 22 bits of tag");
/* How much later lws' own handshake timeouts come than ours: only if ours could not be armed. */
#define LWS_FALLBACK_S 5

static void *sock_val(gw_peer_key k, uint32_t tag, bool pending) {
  uint64_t v = SOCK_MARK | (pending ? SOCK_PENDING : 0) |
               (((uint64_t)tag & TAG_MASK) << TAG_SHIFT) |
               ((uint64_t)k.b[0] << GW_DOOR_BUCKET_BITS) | k.b[1];
  return (void *)(uintptr_t)v;
}

static gw_peer_key val_key(void *val) {
  uint64_t v = (uint64_t)(uintptr_t)val;
  gw_peer_key k = {
      {(uint32_t)((v >> GW_DOOR_BUCKET_BITS) & BUCKET_MASK), (uint32_t)(v & BUCKET_MASK)}};
  return k;
}

static uint32_t val_tag(void *val) {
  return (uint32_t)(((uint64_t)(uintptr_t)val >> TAG_SHIFT) & TAG_MASK);
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

/* Whether the deadline (key, tag) is still that of a socket waiting for its upgrade: not one
 * upgraded or freed since, nor a later socket lws allocated at the same address. */
static bool deadline_live(void *arg, uint64_t key, uint32_t tag) {
  gw_server *s = arg;
  void *val = gw_conn_map_get(&s->sockets, key);
  return val && val_pending(val) && val_tag(val) == tag;
}

/* Starts the timer for the earliest deadline unless it runs: deadlines come in push order, so a
 * running timer is never later than a new one. */
static void door_timer_arm(gw_server *s) {
  uint64_t at;
  if (ev_is_active(&s->door_w) || !gw_doorq_next(s->doorq, &at))
    return;
  uint64_t now = wsg_now_mono_ms();
  ev_timer_set(&s->door_w, at > now ? (double)(at - now) / 1e3 : 0., 0.);
  ev_timer_start(s->o.loop, &s->door_w);
}

/* Closes, at once, every socket whose --handshake-timeout has passed without its upgrade. From
 * our timer, outside lws' service: LWS_TO_KILL_SYNC closes it here and WSI_DESTROY runs
 * (gw_door_destroyed), as kill_due() does in gw_server.c. */
static void door_timer_cb(struct ev_loop *loop, ev_timer *w, int revents) {
  (void)loop;
  (void)revents;
  gw_server *s = w->data;
  uint64_t key;
  uint32_t tag;
  while (gw_doorq_pop_due(s->doorq, wsg_now_mono_ms(), &key, &tag)) {
    if (!deadline_live(s, key, tag))
      continue;
    struct lws *wsi = (struct lws *)(uintptr_t)key; /* in s->sockets: not freed yet */
    wsg_counter_add(s->m_handshake_timeouts, 1);
    char peer[64] = "?";
    lws_get_peer_simple(wsi, peer, sizeof peer);
    wsg_log_limited(&s->rl_refuse, LOG_LIMIT_PER_S, wsg_now_mono_ms(), WSG_LOG_INFO, "server",
                    "socket from %s closed: no upgrade within --handshake-timeout (%llu ms)", peer,
                    (unsigned long long)s->cfg->handshake_timeout_ms);
    lws_set_timeout(wsi, PENDING_TIMEOUT_USER_OK, LWS_TO_KILL_SYNC);
  }
  door_timer_arm(s);
}

int gw_door_init(gw_server *s) {
  s->doorq = gw_doorq_new(deadline_live, s);
  if (!s->doorq)
    return -1;
  ev_timer_init(&s->door_w, door_timer_cb, 0., 0.);
  s->door_w.data = s;
  return 0;
}

unsigned gw_door_lws_timeout_s(const gw_server *s) {
  return (unsigned)(s->cfg->handshake_timeout_ms / 1000) + LWS_FALLBACK_S;
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
  uint32_t tag = (uint32_t)(++s->door_tag & TAG_MASK);
  if (gw_conn_map_put(&s->sockets, (uint64_t)(uintptr_t)wsi, sock_val(s->accept_key, tag, true)) !=
      0)
    return; /* out of memory: uncounted, and bounded by lws' handshake timeout only */
  s->nsockets++;
  s->npending_sockets++;
  gw_peers_add(s->peers, s->accept_key, 1, 1);
  wsg_gauge_set(s->m_handshakes, (int64_t)s->npending_sockets);
  /* Out of memory: lws' own timeout remains, LWS_FALLBACK_S later. */
  if (gw_doorq_push(s->doorq, (uint64_t)(uintptr_t)wsi, tag,
                    wsg_now_mono_ms() + s->cfg->handshake_timeout_ms) == 0)
    door_timer_arm(s);
}

void gw_door_upgraded(gw_server *s, struct lws *wsi) {
  uint64_t key = (uint64_t)(uintptr_t)wsi;
  void *val = gw_conn_map_get(&s->sockets, key);
  if (!val || !val_pending(val))
    return;
  gw_peer_key k = val_key(val);
  gw_conn_map_put(&s->sockets, key, sock_val(k, val_tag(val), false)); /* in place: no failure */
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
  if (s->doorq)
    ev_timer_stop(s->o.loop, &s->door_w);
  gw_doorq_free(s->doorq);
  s->doorq = NULL;
  gw_conn_map_finish(&s->sockets);
  gw_peers_free(s->peers);
  s->peers = NULL;
}
