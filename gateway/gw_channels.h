/*
 * gw_channels: the gateway's local index of channel subscriptions (docs/ARCHITECTURE.md,
 * "Channels"): channel name -> its subscribers on this gateway, and per connection its
 * subscriptions. No libwebsockets, Redis or Kafka call: unit-tested alone.
 *
 * A subscription is one node in two lists: its channel's doubly linked list (so a connection
 * leaving a channel of 50,000 is O(1)) and its connection's singly linked list (at most
 * max_per_conn long, so scanning it is cheap). Channels are found through an open-addressing
 * hash table (linear probing, backward-shift deletion: no tombstones, so a subscribe storm
 * cannot degrade it). Memory is bounded by max_channels distinct channels and max_per_conn
 * subscriptions per connection; gw_channels_bytes() says how much is held.
 *
 * The caller keeps each connection's list head (a gw_chsub *, NULL when it has none) and
 * passes its address; a connection id is only carried along, for the caller's delivery.
 *
 * Threads: not thread-safe; the gateway uses it on its loop thread only.
 */
#ifndef GW_CHANNELS_H
#define GW_CHANNELS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "gw_chops.h"

#define GW_CHANNELS_DEFAULT_PER_CONN 64
#define GW_CHANNELS_DEFAULT_MAX      1000000

typedef struct gw_channels gw_channels;
typedef struct gw_channel gw_channel;
typedef struct gw_chsub gw_chsub;

struct gw_chpos;
typedef struct {
  uint32_t max_per_conn; /* subscriptions of one connection; 0: GW_CHANNELS_DEFAULT_PER_CONN */
  uint64_t max_channels; /* distinct channels held; 0: GW_CHANNELS_DEFAULT_MAX */
  /* Called with a channel's position just before the channel is freed (may be NULL). */
  void (*pos_free)(void *arg, struct gw_chpos *pos);
  void *pos_arg;
} gw_channels_limits;

/* NULL when out of memory; caller destroys. lim: copied. */
gw_channels *gw_channels_create(const gw_channels_limits *lim);
/* Frees every channel and subscription (connections' heads then dangle: call at shutdown only,
 * after the connections are gone). NULL is a no-op. */
void gw_channels_destroy(gw_channels *c);

/*
 * Subscribes connection `conn`, whose list head is *subs, to name[0..len) (a valid name: the
 * caller checked it). `flags` are the caller's per-subscription bits (e.g. the frame format).
 * Returns GW_CHOP_OK (also when already subscribed: nothing changes, *created false),
 * GW_CHOP_TOO_MANY_SUBS, GW_CHOP_TOO_MANY_CHANNELS or GW_CHOP_UNAVAILABLE (out of memory).
 * *created: true when the channel had no local subscriber before (the caller tells Redis).
 */
int gw_channels_subscribe(gw_channels *c, gw_chsub **subs, uint64_t conn, const char *name,
                          size_t len, uint8_t flags, bool *created);

/* Unsubscribes; true when it was subscribed. *emptied: the channel lost its last local
 * subscriber and is gone (the caller tells Redis). */
bool gw_channels_unsubscribe(gw_channels *c, gw_chsub **subs, const char *name, size_t len,
                             bool *emptied);

/* Removes every subscription of a connection (it is going away); on_empty(arg, name, len) for
 * each channel that lost its last local subscriber, before it is freed. Returns how many. */
size_t gw_channels_drop_conn(gw_channels *c, gw_chsub **subs,
                             void (*on_empty)(void *arg, const char *name, size_t len), void *arg);

/* The channel, or NULL when it has no local subscriber. */
gw_channel *gw_channels_find(const gw_channels *c, const char *name, size_t len);
/* Calls fn for every channel held (the Redis re-registration after a reconnect). fn must not
 * change the index. */
void gw_channels_foreach(const gw_channels *c, void (*fn)(void *arg, const char *name, size_t len),
                         void *arg);

/* A clock hand over every channel held, for walks spread over time (gw_chrenew): calls fn for the
 * next n channels (at most all of them, each once) and leaves the hand after the last. The
 * channels form a ring and a new one goes just behind the hand, so between two visits of a
 * channel every other channel held throughout is visited exactly once, and a new channel is
 * visited after every channel held when it came. Returns how many were visited. fn must not
 * change the index. */
size_t gw_channels_sweep(gw_channels *c, size_t n, void (*fn)(void *arg, gw_channel *ch),
                         void *arg);

size_t gw_channels_count(const gw_channels *c);        /* distinct channels */
uint64_t gw_channels_subs(const gw_channels *c);       /* subscriptions, all channels */
uint64_t gw_channels_bytes(const gw_channels *c);      /* memory held, table included */
uint32_t gw_channels_conn_count(const gw_chsub *subs); /* subscriptions of one connection */

/* A channel's subscribers: iterate with gw_chsub_next() from gw_channel_first(). */
size_t gw_channel_nsubs(const gw_channel *ch);
const gw_chsub *gw_channel_first(const gw_channel *ch);
const gw_chsub *gw_chsub_next(const gw_chsub *s);
uint64_t gw_chsub_conn(const gw_chsub *s);
uint8_t gw_chsub_flags(const gw_chsub *s);
const char *gw_channel_name(const gw_channel *ch, size_t *len);

/* Where the gateway is in the channel's stream of publications (gw_chpub): the epoch (0: none
 * seen yet) and the next offset expected. Epoch 0 with next 0: unknown, a new subscriber reads
 * it (gw_chrecover); epoch 0 with next 1: a read after this gateway joined the channel's gateway
 * set found nothing numbered, so what is numbered since comes here as records and later
 * subscribers need not ask Redis again. Lives and dies with the channel. */
typedef struct gw_chwait gw_chwait; /* the caller's: publications that came early */
typedef struct gw_chpos {
  uint64_t epoch, next;
  uint32_t resync_gen; /* gw_chresync: the pass that last wrote the channel's gateway set */
  gw_chwait *wait;     /* NULL when none; freed by the limits' pos_free when the channel goes */
  /* gw_chtail: the queue of channels waiting to be quiet, by deadline (0: not queued). */
  struct gw_chpos *qprev, *qnext;
  uint64_t quiet_due_ms;
} gw_chpos;
gw_chpos *gw_channel_pos(gw_channel *ch);
gw_channel *gw_channel_of(gw_chpos *pos); /* the channel whose position pos is */

/* Per subscription (gw_chrecover): the caller's flag bits, and the offset below which
 * publications were delivered already by a recovery (0: none). A new epoch resets every
 * subscription's (gw_channel_reset_from). */
gw_chsub *gw_channels_sub_of(gw_chsub *subs, const char *name, size_t len); /* NULL: none */
void gw_chsub_set_flags(gw_chsub *s, uint8_t flags);
uint64_t gw_chsub_from(const gw_chsub *s);
void gw_chsub_set_from(gw_chsub *s, uint64_t from);
gw_channel *gw_chsub_channel(gw_chsub *s);
gw_chsub *gw_chsub_snext(gw_chsub *s); /* the connection's next subscription */
void gw_channel_reset_from(gw_channel *ch);

#endif
