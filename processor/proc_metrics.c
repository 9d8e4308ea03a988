/* proc_metrics: the list of wsgate-processor's metric tables (proc_metrics.h). */
#include "proc_metrics.h"

#include <stddef.h>

const wsg_metric_table *const proc_metric_tables[] = {
    &proc_processor_metric_table, &proc_consumer_metric_table, &proc_redis_metric_table,
    &proc_publish_metric_table,   &proc_direct_metric_table,   NULL,
};
