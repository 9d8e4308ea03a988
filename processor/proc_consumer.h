#ifndef PROC_CONSUMER_H
#define PROC_CONSUMER_H
#endif
