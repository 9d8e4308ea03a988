#include "gw_jwt.h"
