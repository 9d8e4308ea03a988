/* gw_metrics: the list of wsgate-gateway's metric tables (gw_metrics.h). */
#include "gw_metrics.h"

#include <stddef.h>

/* One table per line, so that adding one is a one-line diff. */
/* clang-format off */
const wsg_metric_table *const gw_metric_tables[] = {
    &gw_gateway_metric_table,
    &gw_kafka_metric_table,
    &gw_registry_metric_table,
    &gw_chreg_metric_table,
    &gw_chpresq_metric_table,
    &gw_chresync_metric_table,
    &gw_chrenew_metric_table,
    &gw_chjlserve_metric_table,
    &gw_server_metric_table,
    &gw_auth_metric_table,
    &gw_expiry_metric_table,
    &gw_reload_metric_table,
    &gw_direct_metric_table,
    NULL,
};
/* clang-format on */
