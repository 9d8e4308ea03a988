#ifndef PROC_CHAT_H
#define PROC_CHAT_H
#endif
