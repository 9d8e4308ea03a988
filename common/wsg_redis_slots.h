/*
 * wsg_redis_slots: the pure parts of speaking to a Redis Cluster, shared by the synchronous
 * (wsg_redis_sync) and asynchronous (wsg_redis_cluster) clients: a key's hash slot (CRC16 with
 * hash tags), which argument of a command is its key, the slot map read from CLUSTER SLOTS, and
 * MOVED/ASK redirections. No I/O; unit-tested in tests/unit/redis_slots_test.c.
 *
 * Threads: none of its own; a map belongs to one thread.
 */
#ifndef WSG_REDIS_SLOTS_H
#define WSG_REDIS_SLOTS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "wsg_metrics.h"

struct redisReply;

/* Handles of the owner's metrics of a cluster client (wsg_redis_cluster, wsg_redis_sync),
 * borrowed: they must outlive the client; any may be NULL. What an operator watches during a
 * reshard (redirections, map reads) or a failover (primaries ready below primaries). */
typedef struct {
  wsg_counter *moved, *ask;   /* redirections followed */
  wsg_counter *map_reads;     /* slot maps read (CLUSTER SLOTS answered and applied) */
  wsg_gauge *primaries;       /* primaries serving slots in the current map */
  wsg_gauge *primaries_ready; /* of those, the ones with a connection that answered its
                                 handshake (wsg_redis_cluster only: wsg_redis_sync connects
                                 when a command needs the node) */
} wsg_redis_cluster_metrics;

/* The metric table rows of those handles (member f of the owner struct T), named
 * <prefix>_redis_*: one wording for every daemon. primaries_ready has its own row (the
 * asynchronous client only). */
#define WSG_REDIS_REDIRECTS_HELP                                                                   \
  "Redis Cluster redirections followed, by kind (moved: the slot has a new owner, the map is "     \
  "re-read; ask: the slot is being migrated)"
#define WSG_REDIS_CLUSTER_METRIC_ROWS(T, f, prefix)                                                \
  WSG_COUNTER_ROW(T, f.moved, prefix "_redis_redirects_total", WSG_REDIS_REDIRECTS_HELP,           \
                  "kind=\"moved\""),                                                               \
      WSG_COUNTER_ROW(T, f.ask, prefix "_redis_redirects_total", WSG_REDIS_REDIRECTS_HELP,         \
                      "kind=\"ask\""),                                                             \
      WSG_COUNTER_ROW(T, f.map_reads, prefix "_redis_slot_map_reads_total",                        \
                      "Redis Cluster slot maps read (start, MOVED, a lost primary)", NULL),        \
      WSG_GAUGE_ROW(T, f.primaries, prefix "_redis_primaries",                                     \
                    "Redis Cluster primaries serving slots in the current map (0: one node)",      \
                    NULL)

#define WSG_REDIS_SLOTS     16384
#define WSG_REDIS_NO_NODE   UINT16_MAX
#define WSG_REDIS_NODES_MAX 1024
#define WSG_REDIS_HOST_MAX  256

/* CRC16-CCITT (XMODEM), the cluster's key hash: "123456789" -> 0x31C3. */
uint16_t wsg_redis_crc16(const char *buf, size_t len);

/* The hash slot of a key: only the part between the first '{' and the next '}' is hashed when it
 * is not empty. */
uint16_t wsg_redis_key_slot(const char *key, size_t len);

/* The key that routes a command: key and klen set and true, or false when the command has no key
 * (PING, SCRIPT LOAD, EVAL with 0 keys...) and may run on any node. Commands that name their key
 * after a keyword (XREAD ... STREAMS key) are looked up in a small table; others take argv[1]. */
bool wsg_redis_cmd_key(int argc, const char **argv, const size_t *lens, const char **key,
                       size_t *klen);

typedef struct {
  char host[WSG_REDIS_HOST_MAX];
  int port;
} wsg_redis_node;

/* Which primary serves each slot. Nodes are only added (an index stays valid until reset). */
typedef struct {
  wsg_redis_node nodes[WSG_REDIS_NODES_MAX];
  uint32_t nnodes;
  uint16_t owner[WSG_REDIS_SLOTS]; /* node index, WSG_REDIS_NO_NODE: unknown */
} wsg_redis_slot_map;

void wsg_redis_slot_map_reset(wsg_redis_slot_map *m);

/* The index of host:port, added if new; -1 when the table is full or host too long. */
int wsg_redis_slot_map_node(wsg_redis_slot_map *m, const char *host, size_t hlen, int port);

/* Replaces the map with a CLUSTER SLOTS reply (primaries only). An empty or "?" endpoint means
 * the node that answered: `asked_host`. Returns the number of slots covered (16384 when the
 * cluster serves every slot), or -1 with a message when the reply is not CLUSTER SLOTS' shape. */
int wsg_redis_slot_map_parse(wsg_redis_slot_map *m, const struct redisReply *rep,
                             const char *asked_host, char *err, size_t errlen);

#define WSG_REDIS_ROUTE_ANY  (-2) /* no key: any node may run it */
#define WSG_REDIS_ROUTE_NONE (-1) /* no node serves the key's slot */

/* The node index that runs a command: its key's slot owner, WSG_REDIS_ROUTE_ANY for a keyless
 * command, WSG_REDIS_ROUTE_NONE when no node serves the slot. Both clients group a pipeline per
 * node with it. */
int wsg_redis_slot_map_route(const wsg_redis_slot_map *m, int argc, const char **argv,
                             const size_t *lens);

typedef enum { WSG_REDIS_REDIRECT_NONE, WSG_REDIS_MOVED, WSG_REDIS_ASK } wsg_redis_redirect_kind;

typedef struct {
  wsg_redis_redirect_kind kind;
  uint16_t slot;
  char host[WSG_REDIS_HOST_MAX]; /* "" when the server's endpoint is unknown: same host as asked */
  int port;
} wsg_redis_redirect;

/* Parses an error reply's text ("MOVED 3999 127.0.0.1:6381", "ASK 3999 :6381", IPv6 hosts
 * included: the port follows the last ':'). False (kind NONE) for any other error. */
bool wsg_redis_redirect_parse(const char *s, size_t len, wsg_redis_redirect *out);

/* Splits "host:port,host:port" (spaces allowed after commas) into at most max nodes. Returns
 * the count, or -1 with a message. */
int wsg_redis_seeds_parse(const char *list, wsg_redis_node *out, int max, char *err, size_t errlen);

#endif
