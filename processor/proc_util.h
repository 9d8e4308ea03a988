/*
 * proc_util: the few helpers several processor files share (a string hash, growing an array).
 * Private to processor/ (the double underscore).
 *
 * Threads: any; every function is reentrant.
 */
#ifndef PROC_UTIL_H
#define PROC_UTIL_H

#include <stddef.h>
#include <stdint.h>

/* FNV-1a over n bytes: for the small open-addressing tables of ids. */
uint64_t proc__hash(const void *p, size_t n);

/* Grows *p (of *cap elements of `elem` bytes, doubling from 64) to hold `need`; 0 or -1. */
int proc__reserve(void **p, size_t *cap, size_t need, size_t elem);

#endif
