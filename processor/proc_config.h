#ifndef PROC_CONFIG_H
#define PROC_CONFIG_H
#endif
