/*
 * gw_metrics: the metric tables of wsgate-gateway's modules (wsg_metrics.h), and the list of
 * them that drives `wsgate-gateway --help-metrics` (docs/METRICS-gateway.md). Adding a metric:
 * a row in its module's table; adding a module with metrics: its table here and in the list.
 */
#ifndef GW_METRICS_H
#define GW_METRICS_H

#include "wsg_metrics.h"

extern const wsg_metric_table gw_gateway_metric_table;   /* gateway.c */
extern const wsg_metric_table gw_server_metric_table;    /* gw_server_metrics.c */
extern const wsg_metric_table gw_kafka_metric_table;     /* gw_kafka.c */
extern const wsg_metric_table gw_registry_metric_table;  /* gw_registry.c */
extern const wsg_metric_table gw_chreg_metric_table;     /* gw_chreg.c */
extern const wsg_metric_table gw_chpresq_metric_table;   /* gw_chpresq.c */
extern const wsg_metric_table gw_chresync_metric_table;  /* gw_chresync.c */
extern const wsg_metric_table gw_chrenew_metric_table;   /* gw_chrenew.c */
extern const wsg_metric_table gw_chjlserve_metric_table; /* gw_chjlserve.c */
extern const wsg_metric_table gw_auth_metric_table;      /* gw_auth.c */
extern const wsg_metric_table gw_expiry_metric_table;    /* gw_expiry.c */
extern const wsg_metric_table gw_reload_metric_table;    /* gw_reload.c */
extern const wsg_metric_table gw_direct_metric_table;    /* gw_direct.c */

/* Every table above, in the order /metrics lists their families; NULL-terminated. */
extern const wsg_metric_table *const gw_metric_tables[];

#endif
