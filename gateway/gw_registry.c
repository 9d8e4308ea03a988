#include "gw_registry.h"
