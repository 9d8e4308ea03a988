#include "wsg_envelope.h"
