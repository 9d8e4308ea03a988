#ifndef PROC_ROUTER_H
#define PROC_ROUTER_H
#endif
