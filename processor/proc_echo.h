#ifndef PROC_ECHO_H
#define PROC_ECHO_H
#endif
