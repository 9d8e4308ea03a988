#include "proc_consumer.h"
