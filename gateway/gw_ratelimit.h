#ifndef GW_RATELIMIT_H
#define GW_RATELIMIT_H
#endif
