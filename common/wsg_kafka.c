#include "wsg_kafka.h"
