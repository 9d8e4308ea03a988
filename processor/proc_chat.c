#include "proc_chat.h"
