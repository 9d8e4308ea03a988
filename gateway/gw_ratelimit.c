#include "gw_ratelimit.h"
