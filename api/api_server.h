/*
 * api_server: wsgate-api itself: the HTTP endpoints of docs/API.md on wsg_http (a thread per
 * connection), bearer keys (api_keys), a rate limit per key, request decoding (api_request),
 * idempotency (api_idem) and the transactional producer (api_kafka); plus the operations
 * endpoint (/healthz, /readyz, /metrics).
 *
 * Threads: create, reload and destroy on the main thread; requests on wsg_http's threads.
 */
#ifndef API_SERVER_H
#define API_SERVER_H

#include <stdbool.h>
#include <stddef.h>

#include "api_config.h"
#include "wsg_metrics.h"

typedef struct api_server api_server;

/* Loads the keys, starts the producer's thread and both HTTP servers. Returns 0, or -1 with
 * what is wrong in `err` (-2: a configuration problem such as an invalid keys file: exit 2). */
int api_server_create(api_server **out, const api_config *cfg, char *err, size_t errlen);
void api_server_destroy(api_server *s); /* NULL is a no-op */

/* Reloads the keys file when `force` (SIGHUP) or when it changed. Main thread. */
void api_server_check_keys(api_server *s, bool force);
/* The main loop turned: /healthz fails once it has not for --liveness-stall. Main thread. */
void api_server_beat(api_server *s);

int api_server_port(const api_server *s);     /* the API's bound port */
int api_server_ops_port(const api_server *s); /* the operations endpoint's */

/* Every metric table of wsgate-api, NULL-terminated (--help-metrics, docs/METRICS-api.md). */
extern const wsg_metric_table *const api_metric_tables[];

#endif
