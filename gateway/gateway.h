#ifndef GATEWAY_H
#define GATEWAY_H
#endif
