#include "gw_server.h"
