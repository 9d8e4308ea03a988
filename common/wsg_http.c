#include "wsg_http.h"
