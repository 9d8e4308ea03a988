/*
 * gw_replay_page: the reply of a replay read as a gw_replay_page (gw_registry.h declares the page
 * and gw_replay_page_entry(), implemented beside this).
 *
 * Threads: any (pure).
 */
#ifndef GW_REPLAY_PAGE_H
#define GW_REPLAY_PAGE_H

#include <stdbool.h>

#include "gw_registry.h"

struct redisReply;

/* Whether rep (borrowed) has the script's shape; if so fills page, which then borrows rep. */
bool gw__replay_page_parse(const struct redisReply *rep, bool position_only, gw_replay_page *page);

#endif
