#ifndef GW_CONFIG_H
#define GW_CONFIG_H
#endif
