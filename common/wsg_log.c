#include "wsg_log.h"
