#include "wsg_metrics.h"
