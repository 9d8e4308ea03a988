#ifndef GW_KAFKA_H
#define GW_KAFKA_H
#endif
