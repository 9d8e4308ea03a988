#include "wsg_config.h"
