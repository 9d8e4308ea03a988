#include "proc_handler.h"
