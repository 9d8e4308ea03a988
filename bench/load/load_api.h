/*
 * load_api: wsgate-load's HTTP sender for --mode api (docs/BENCHMARKS.md, "API"). One process
 * beside the receiving workers, on the same control protocol (load_engine.h): it reports "R 0 0"
 * at once, starts at "G <t0>", and reports its result as "J <bytes>\n<json>".
 *
 * It posts /v1/send to wsgate-api over --api-clients keep-alive connections (libcurl multi, one
 * easy handle per connection), on the fixed schedule of --rate (open loop): send g is due at
 * t0 + g / rate, goes to user g mod users (to the --api-users users from g * api_users on, mod
 * users, in one request), and carries its due time as the payload's marker, so a
 * receiver measures request -> delivery from the due time, queueing in this sender included (no
 * coordinated omission). When every connection is busy the schedule waits (nothing is queued in
 * memory) and the lateness shows as send lag. A --rate above what the API accepts measures the
 * accepted commands/s. With --api-batch N > 1 a request is POST /v1/batch of N sends, started
 * when the last of them is due, all N carrying that due time.
 *
 * Threads: one (libcurl's multi interface, no threads of its own).
 */
#ifndef LOAD_API_H
#define LOAD_API_H

#include "load_engine.h"

/* Runs the sender on control socket `ctl` (taken). Returns the exit status (0: reported). */
int load_api_run(const load_plan *plan, int ctl);

#endif
