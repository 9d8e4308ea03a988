#include "proc_echo.h"
