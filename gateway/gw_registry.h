#ifndef GW_REGISTRY_H
#define GW_REGISTRY_H
#endif
