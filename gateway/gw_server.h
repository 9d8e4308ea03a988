#ifndef GW_SERVER_H
#define GW_SERVER_H
#endif
