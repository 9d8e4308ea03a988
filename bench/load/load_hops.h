/*
 * load_hops: the per-hop breakdown of a run (wsgate-load --hops-from), read from the daemons'
 * own latency histograms (docs/GATEWAY.md "Where the time goes").
 *
 * The parent scrapes every given /metrics endpoint when the measured window starts (after the
 * warm-up) and again when every worker has reported, and subtracts: what remains is what the
 * daemons observed while the run was measured. The series of several daemons of one kind (two
 * gateways) add up, bucket by bucket, since their bounds are the same list (WSG_HOP_BOUNDS).
 * Percentiles are estimated as Prometheus' histogram_quantile() does: linear inside the bucket
 * that holds the rank, so they are only as fine as the buckets.
 *
 * Endpoints must be http://127.x.x.x:port (or localhost), like the tool's targets.
 *
 * Threads: the parent process only.
 */
#ifndef LOAD_HOPS_H
#define LOAD_HOPS_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#define LOAD_HOPS_MAX_BUCKETS 40

/* One histogram family summed over the endpoints that expose it. */
typedef struct {
  size_t nb;                             /* finite bounds seen (+Inf is cum[nb]) */
  double le[LOAD_HOPS_MAX_BUCKETS];      /* upper bounds, seconds, ascending */
  double cum[LOAD_HOPS_MAX_BUCKETS + 1]; /* cumulative counts, +Inf last */
  double sum, count;
  int seen; /* endpoints that exposed it */
} load_hops_hist;

/* The hops, in the order of a round trip. */
typedef enum {
  LOAD_HOP_GW_ACKED,     /* gateway: produce -> Kafka ack */
  LOAD_HOP_PROC_HANDLER, /* processor: frame read (ts) -> handler start */
  LOAD_HOP_PROC_COMMAND, /* processor: command accepted (ts) -> executor start */
  LOAD_HOP_PROC_ACKED,   /* processor: handler start -> reply acked */
  LOAD_HOP_GW_HANDOFF,   /* gateway: reply built (ts) -> handed to connections */
  LOAD_HOP_GW_WRITTEN,   /* gateway: reply built (ts) -> written to the socket */
  LOAD_HOP__COUNT
} load_hop;

typedef struct {
  load_hops_hist h[LOAD_HOP__COUNT];
} load_hops_snap;

/* The metric name and a short description of each hop. */
const char *load_hop_metric(load_hop hop);
const char *load_hop_label(load_hop hop);

/* Adds the hop histograms found in a Prometheus text exposition (borrowed) to *snap. Unknown
 * families are skipped. Returns 0, or -1 for a bucket list larger than LOAD_HOPS_MAX_BUCKETS or
 * bounds that differ from those already in *snap. */
int load_hops_parse(const char *text, load_hops_snap *snap);

/* after - before, family by family, into *out (a family missing from before counts as zero). */
void load_hops_diff(const load_hops_snap *after, const load_hops_snap *before, load_hops_snap *out);

/* The q-quantile (0 < q < 1) in seconds: linear inside its bucket; the highest finite bound when
 * it falls in +Inf; NAN when empty. */
double load_hops_quantile(const load_hops_hist *h, double q);

typedef struct load_hops load_hops;

/* urls: comma-separated http://127.x.x.x:port[/path] (path defaults to /metrics); copied.
 * NULL with err set when one is not a loopback http URL. */
load_hops *load_hops_create(const char *urls, char *err, size_t errlen);
void load_hops_destroy(load_hops *h); /* NULL is a no-op */
/* Scrapes every endpoint now: the first call is "before", the second "after". 0, or -1 with err
 * set (an endpoint that cannot be read fails the breakdown, not the run). */
int load_hops_mark(load_hops *h, char *err, size_t errlen);
/* After two marks: the breakdown as a JSON object (new reference), or printed as a table. */
json_t *load_hops_json(const load_hops *h);
void load_hops_print(const load_hops *h, FILE *out);

#endif
