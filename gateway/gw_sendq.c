#include "gw_sendq.h"
