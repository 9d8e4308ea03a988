#ifndef PROC_HANDLER_H
#define PROC_HANDLER_H
#endif
