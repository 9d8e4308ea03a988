#ifndef PROCESSOR_H
#define PROCESSOR_H
#endif
