#include "wsg_redis_keys.h"
