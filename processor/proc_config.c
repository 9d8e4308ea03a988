#include "proc_config.h"
