#include "gw_config.h"
