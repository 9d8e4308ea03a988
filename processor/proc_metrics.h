/*
 * proc_metrics: the metric tables of wsgate-processor's modules (wsg_metrics.h), and the list of
 * them that drives `wsgate-processor --help-metrics` (docs/METRICS-processor.md). Adding a metric:
 * a row in its module's table; adding a module with metrics: its table here and in the list.
 */
#ifndef PROC_METRICS_H
#define PROC_METRICS_H

#include "wsg_metrics.h"

extern const wsg_metric_table proc_processor_metric_table; /* processor.c */
extern const wsg_metric_table proc_consumer_metric_table;  /* proc_consumer.c */
extern const wsg_metric_table proc_redis_metric_table;     /* proc_redis.c */
extern const wsg_metric_table proc_publish_metric_table;   /* proc_publish.c */
extern const wsg_metric_table proc_direct_metric_table;    /* proc_direct.c */

/* Every table above, in the order /metrics lists their families; NULL-terminated. */
extern const wsg_metric_table *const proc_metric_tables[];

#endif
