/*
 * wsg_redis_cluster: the asynchronous Redis of a libev loop, on one node or on a Redis Cluster,
 * with wsg_redis_conn's API and guarantees (wsg_redis_conn.h: no blocking, reconnection with
 * backoff, watchdog, exactly one callback per command). The gateway's registry uses it.
 *
 * One node (no seeds): exactly one wsg_redis_conn, every call delegated.
 * A cluster: a discovery connection to a seed reads CLUSTER SLOTS, then one wsg_redis_conn per
 * primary (each with its own handshake, watchdog and backoff) carries the commands of its slots
 * (wsg_redis_slots.h says which argument is the key; keyless commands go to any ready primary, or
 * to the node in handshake when sent from on_handshake, so per-connection setup such as SCRIPT
 * LOAD reaches every primary). A MOVED reply updates the map, resends the command to the named
 * node and re-reads CLUSTER SLOTS; ASK resends it once behind ASKING; a node that is lost makes
 * the map be re-read every second from a ready primary until every primary is ready again, which
 * is how a failover's new primary is found. A MOVED/ASK to a node not ready yet reaches the caller
 * as the error reply it is.
 *
 * "Ready" is: the map is known and every primary's connection answered its handshake. on_ready
 * runs when that becomes true, on_down when it stops being true; on_handshake runs once per node
 * connection.
 *
 * Threads: the loop thread, like wsg_redis_conn.
 */
#ifndef WSG_REDIS_CLUSTER_H
#define WSG_REDIS_CLUSTER_H

#include "wsg_redis_conn.h"
#include "wsg_redis_slots.h"

typedef struct wsg_redis_cluster wsg_redis_cluster;

typedef struct {
  wsg_redis_conn_options conn; /* host/port: the single node (ignored with seeds); hooks, arg */
  const char *seeds;           /* non-empty: a cluster, "host:port,host:port" (copied) */
  wsg_redis_cluster_metrics metrics; /* a cluster only; untouched on one node */
} wsg_redis_cluster_options;

/* As wsg_redis_conn_create. A cluster needs db 0. */
int wsg_redis_cluster_create(wsg_redis_cluster **out, struct ev_loop *loop,
                             const wsg_redis_cluster_options *o, char *err, size_t errlen);
void wsg_redis_cluster_destroy(wsg_redis_cluster *c);

/* As wsg_redis_conn_command, routed by key. WSG_REDIS_CONN_NOT_CONNECTED when the node serving
 * the key has no connection. */
int wsg_redis_cluster_command(wsg_redis_cluster *c, wsg_redis_conn_req *req, int argc,
                              const char **argv, const size_t *lens);

bool wsg_redis_cluster_ready(const wsg_redis_cluster *c);
/* The node serving key answered its handshake (one node: wsg_redis_cluster_ready): a command on
 * that key can run while another primary fails over. */
bool wsg_redis_cluster_key_ready(const wsg_redis_cluster *c, const char *key, size_t klen);
bool wsg_redis_cluster_open(const wsg_redis_cluster *c); /* every primary has a connection */
void wsg_redis_cluster_cancel_retry(wsg_redis_cluster *c);
void wsg_redis_cluster_stop(wsg_redis_cluster *c);

/* Redirections followed and slot map reads, for tests and logs. */
typedef struct {
  uint64_t moved, ask, map_reads;
  uint32_t nodes; /* primaries in the map */
} wsg_redis_cluster_stats;
void wsg_redis_cluster_get_stats(const wsg_redis_cluster *c, wsg_redis_cluster_stats *out);

#endif
