/*
 * harness_channels.h: what the channel tests (gateway_channels_test.c, channels_handler_test.c)
 * share: a publication frame expected, the channel's gateway set and presence keys in Redis (a
 * connection with a channels claim is itest_connect_channels() of harness_daemons.h).
 *
 * Threads: the test's.
 */
#ifndef HARNESS_CHANNELS_H
#define HARNESS_CHANNELS_H

#include <stdint.h>

#include "harness_daemons.h"

/* Expects a JSON publication frame of `channel` at `offset` whose data is `data_json` (the JSON
 * string, quotes included); returns its epoch. */
unsigned long long itest_expect_pub(ws_client *c, const char *channel, unsigned offset,
                                    const char *data_json);

/* Members of the channel's gateway set on g's Redis, waiting up to 10 s for the count to be
 * `want`; when it is 1, expects the member to be g. */
long itest_gws_members(const itest_gateway *g, const char *channel, long want);

/* Sends an op (JSON text) and expects exactly `want` back. */
void itest_op_expect(ws_client *c, const char *op, const char *want);

/* Subscribes c to a channel never published to, expecting "subscribed" at epoch 0, offset 0. */
void itest_subscribe_new(ws_client *c, const char *channel);

/* A `publish` record of `channel` at offset/epoch with text `data` on g's outbound topic, as a
 * processor produces it (the channel's history is the test's business). */
void itest_send_pub(const itest_gateway *g, const char *channel, uint64_t offset, uint64_t epoch,
                    const char *data);

/* g's presence member (<id>#<boot>, the boot read from its gw:<id> record, waiting up to 10 s
 * for it) into member[len], and, when key is not NULL, the key of its presence hash of `channel`
 * into key[len]. */
void itest_presence_member(const itest_gateway *g, const char *channel, char *member, char *key,
                           size_t len);

#endif
