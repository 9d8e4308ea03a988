#include "gw_kafka.h"
