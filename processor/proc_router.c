#include "proc_router.h"
