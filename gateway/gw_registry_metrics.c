/*
 * gw_registry_metrics: the metric table of gw_registry.c (Redis: the slot lease, connection
 * entries), for --help-metrics and docs/METRICS-gateway.md.
 *
 * Transitional (issue 14): gw_registry.c's register_metrics() still registers these series by
 * hand, with the same names, help and labels, because struct gw_registry is private to it. Wave 2
 * moves this table into the file that defines the struct (or includes its header here), turns
 * each WSG_BY_HAND_ROW(type, m_x, ...) into WSG_COUNTER_ROW / WSG_GAUGE_ROW(struct gw_registry,
 * m_x, ...), and replaces the registrations in register_metrics() with
 * wsg_metrics_register_table(m, &gw_registry_metric_table, r) (keeping its two initial gauge
 * values: slot -1, connected 0).
 */
#include "gw_metrics.h"

#define COUNTER(f, name, help, labels) WSG_BY_HAND_ROW(WSG_METRIC_COUNTER, f, name, help, labels)
#define GAUGE(f, name, help, labels)   WSG_BY_HAND_ROW(WSG_METRIC_GAUGE, f, name, help, labels)

#define COMMANDS      "wsgate_gateway_redis_commands_total"
#define COMMANDS_HELP "Redis commands answered, by result (lost: connection dropped first)"

static const wsg_metric_def metric_rows[] = {
    COUNTER(m_ok, COMMANDS, COMMANDS_HELP, "result=\"ok\""),
    COUNTER(m_error, COMMANDS, COMMANDS_HELP, "result=\"error\""),
    COUNTER(m_lost, COMMANDS, COMMANDS_HELP, "result=\"lost\""),
    COUNTER(m_reconnects, "wsgate_gateway_redis_connects_total", "Redis connection attempts", NULL),
    COUNTER(m_lease_losses, "wsgate_gateway_lease_losses_total", "Outbound slot leases lost", NULL),
    COUNTER(m_backlog_drops, "wsgate_gateway_redis_remove_drops_total",
            "Connection removals dropped while Redis was unreachable and the backlog was full",
            NULL),
    GAUGE(m_connected, "wsgate_gateway_redis_connected", "1 while the Redis connection is usable",
          NULL),
    GAUGE(m_slot, "wsgate_gateway_slot", "Outbound slot (partition) held, -1 if none", NULL),
};

const wsg_metric_table gw_registry_metric_table =
    WSG_METRIC_TABLE("gateway/gw_registry.c", metric_rows);
