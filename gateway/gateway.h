/*
 * gateway: wires wsgate-gateway together and runs it: the libev loop (created here, shared by
 * libwebsockets, hiredis and our timers), the Kafka producer/consumer (gw_kafka), the Redis
 * registry (gw_registry), the WebSocket server (gw_server), the operations endpoint (wsg_http),
 * readiness, and the drain on SIGTERM/SIGINT:
 *
 *   1. not ready at once (/readyz 503), new upgrades refused with 503;
 *   2. clients closed with 1001 and a reconnect hint, spread over --drain-window;
 *   3. Kafka flushed (polled from a timer, never blocking the loop);
 *   4. Redis entries, gateway record and slot released;
 *   5. exit 0 — at the latest when --drain-grace has passed. A second signal skips the rest.
 *
 * Threads: create/run/destroy on the main thread, which becomes the loop thread in run.
 */
#ifndef GATEWAY_H
#define GATEWAY_H

#include <signal.h>
#include <stddef.h>

#include "gw_config.h"

typedef struct gw_gateway gw_gateway;

/*
 * Starts everything but the loop: raises RLIMIT_NOFILE to its hard limit, checks the Kafka
 * topics (blocking, at most 30 s, cut short as soon as *stop is set: the flag of the caller's
 * SIGTERM/SIGINT handler, NULL for none), binds the WebSocket and operations ports and starts
 * connecting to Redis. Returns 0 with *out set (caller destroys), or -1 with a message in err.
 * A stop that arrives after the wait makes the gateway drain as soon as it runs.
 * cfg: borrowed, must outlive the gateway; stop: borrowed, read only until this returns.
 */
int gw_gateway_create(gw_gateway **out, const gw_config *cfg, const volatile sig_atomic_t *stop,
                      char *err, size_t errlen);

/* Runs the loop until the drain has finished. Returns the process exit status (0 after a drain). */
int gw_gateway_run(gw_gateway *g);

/* Stops and frees everything. NULL is a no-op. */
void gw_gateway_destroy(gw_gateway *g);

#endif
