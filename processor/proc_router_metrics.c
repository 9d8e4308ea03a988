/*
 * proc_router_metrics: the metric table of proc_router.c (the processor's Redis work: routing
 * lookups, stale entries, resume appends, handlers' commands), for --help-metrics and
 * docs/METRICS-processor.md.
 *
 * Transitional (issue 14): proc_router_create() still registers these series by hand, with the
 * same names, help, labels and bounds, because struct proc_router is private to proc_router.c.
 * Wave 2 moves this table into that file (or the file its code moved to), turns each
 * WSG_BY_HAND_ROW(type, m_x, ...) into WSG_COUNTER_ROW(proc_router, m_x, ...) and the histogram
 * into WSG_HISTOGRAM_ROW, and replaces the counter()/wsg_metrics_histogram() calls of
 * proc_router_create() with wsg_metrics_register_table(o->metrics, &proc_router_metric_table, r).
 */
#include "proc_metrics.h"

#define COUNTER(f, name, help, labels) WSG_BY_HAND_ROW(WSG_METRIC_COUNTER, f, name, help, labels)

#define LOOKUPS      "wsgate_processor_redis_lookups_total"
#define LOOKUPS_HELP "Redis reads made to route: users' connections and gateways' records"

static const double rtt_bounds[] = {0.0001, 0.00025, 0.0005, 0.001, 0.0025,
                                    0.005,  0.01,    0.025,  0.05,  0.1};

static const wsg_metric_def metric_rows[] = {
    COUNTER(m_user_lookups, LOOKUPS, LOOKUPS_HELP, "kind=\"user\""),
    COUNTER(m_gw_lookups, LOOKUPS, LOOKUPS_HELP, "kind=\"gateway\""),
    COUNTER(m_cache_hits, "wsgate_processor_gateway_cache_hits_total",
            "Gateway lookups answered from the cache", NULL),
    COUNTER(m_handler_cmds, "wsgate_processor_redis_handler_commands_total",
            "Redis commands handlers ran through wsgate_redis()", NULL),
    COUNTER(m_errors, "wsgate_processor_redis_errors_total",
            "Failed Redis connects and round trips", NULL),
    COUNTER(m_stale_seen, "wsgate_processor_stale_connections_total",
            "Connection entries skipped because their gateway's lease is gone (nothing is "
            "produced for them)",
            NULL),
    COUNTER(m_stale_removed, "wsgate_processor_stale_connections_removed_total",
            "Connection entries of gateways whose lease expired, removed by processors", NULL),
    COUNTER(m_bad_entries, "wsgate_processor_bad_connection_entries_total",
            "user:<id> hash fields that are not <conn id> -> <live gateway id> with a valid slot",
            NULL),
    COUNTER(m_appends, "wsgate_processor_resume_appends_total",
            "Deliveries to users numbered and stored in their replay streams", NULL),
    COUNTER(m_append_refused, "wsgate_processor_resume_append_refused_total",
            "Deliveries Redis refused to store (sent without q): a key of another type under the "
            "prefix",
            NULL),
    WSG_BY_HAND_HISTOGRAM_ROW(m_rtt, "wsgate_processor_redis_round_trip_seconds",
                              "Duration of one pipelined Redis round trip", NULL, rtt_bounds),
};

const wsg_metric_table proc_router_metric_table =
    WSG_METRIC_TABLE("processor/proc_router.c", metric_rows);
