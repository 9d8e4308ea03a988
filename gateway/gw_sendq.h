#ifndef GW_SENDQ_H
#define GW_SENDQ_H
#endif
