#ifndef GW_JWT_H
#define GW_JWT_H
#endif
