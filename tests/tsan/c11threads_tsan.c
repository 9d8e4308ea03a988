/*
 * c11threads_tsan: C11 <threads.h> on top of POSIX threads, preloaded (LD_PRELOAD) into the
 * ThreadSanitizer builds of wsgate-gateway and wsgate-processor. Not used anywhere else.
 *
 * Why: Debian's librdkafka 2.0.2 is built on glibc's C11 threads (thrd_create, mtx_lock,
 * cnd_wait, ...). glibc implements them by calling its internal __pthread_* functions directly,
 * and the ThreadSanitizer runtimes of gcc 12 and clang 14 intercept only the pthread_* entry
 * points, not the C11 ones. A thread started with thrd_create is therefore unknown to TSAN (the
 * daemon crashes in TSAN's allocator on the thread's first malloc), and librdkafka's mutexes
 * would be invisible (every access they protect reported as a race). Routing each C11 call
 * through the public pthread_* function, which the TSAN runtime intercepts, makes librdkafka's
 * threads and locks visible with glibc's own semantics: glibc's C11 functions are thin wrappers
 * of the same pthread operations (nptl/thrd_create.c, mtx_lock.c, cnd_wait.c, ...).
 *
 * The return codes follow C11 (thrd_success, thrd_busy, thrd_error, thrd_nomem, thrd_timedout),
 * mapped from the pthread result as glibc's thrd_err_map does.
 *
 * Threads: any; every function is as thread-safe as its pthread counterpart.
 */
#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <threads.h>
#include <time.h>

/* The casts below rely on glibc laying the C11 types out as their pthread counterparts. */
_Static_assert(sizeof(mtx_t) == sizeof(pthread_mutex_t), "mtx_t is a pthread mutex in glibc");
_Static_assert(sizeof(cnd_t) == sizeof(pthread_cond_t), "cnd_t is a pthread condition in glibc");
_Static_assert(sizeof(once_flag) == sizeof(pthread_once_t), "once_flag is a pthread_once_t");
_Static_assert(sizeof(thrd_t) == sizeof(pthread_t), "thrd_t is a pthread_t in glibc");

/* glibc's thrd_err_map (nptl/thrd_priv.h). */
static int thrd_err(int rc) {
  switch (rc) {
  case 0:
    return thrd_success;
  case ENOMEM:
    return thrd_nomem;
  case ETIMEDOUT:
    return thrd_timedout;
  case EBUSY:
    return thrd_busy;
  default:
    return thrd_error;
  }
}

typedef struct {
  thrd_start_t func;
  void *arg;
} start_args;

static void *start(void *p) {
  start_args a = *(start_args *)p;
  free(p);
  /* glibc stores the int result as the thread's void * result; thrd_join reads it back. */
  return (void *)(intptr_t)a.func(a.arg);
}

int thrd_create(thrd_t *thr, thrd_start_t func, void *arg) {
  start_args *a = malloc(sizeof *a);
  if (!a)
    return thrd_nomem;
  a->func = func;
  a->arg = arg;
  pthread_t t;
  int rc = pthread_create(&t, NULL, start, a);
  if (rc != 0) {
    free(a);
    return thrd_err(rc);
  }
  *thr = (thrd_t)t;
  return thrd_success;
}

int thrd_join(thrd_t thr, int *res) {
  void *v = NULL;
  int rc = pthread_join((pthread_t)thr, &v);
  if (rc == 0 && res)
    *res = (int)(intptr_t)v;
  return thrd_err(rc);
}

int thrd_detach(thrd_t thr) {
  return thrd_err(pthread_detach((pthread_t)thr));
}

thrd_t thrd_current(void) {
  return (thrd_t)pthread_self();
}

int thrd_equal(thrd_t a, thrd_t b) {
  return pthread_equal((pthread_t)a, (pthread_t)b);
}

_Noreturn void thrd_exit(int res) {
  pthread_exit((void *)(intptr_t)res);
}

int mtx_init(mtx_t *m, int type) {
  pthread_mutexattr_t attr;
  pthread_mutexattr_init(&attr);
  /* mtx_plain and mtx_timed are PTHREAD_MUTEX_NORMAL in glibc; mtx_recursive adds recursion. */
  pthread_mutexattr_settype(&attr, (type & mtx_recursive) ? PTHREAD_MUTEX_RECURSIVE
                                                          : PTHREAD_MUTEX_NORMAL);
  int rc = pthread_mutex_init((pthread_mutex_t *)m, &attr);
  pthread_mutexattr_destroy(&attr);
  return thrd_err(rc);
}

int mtx_lock(mtx_t *m) {
  return thrd_err(pthread_mutex_lock((pthread_mutex_t *)m));
}

int mtx_trylock(mtx_t *m) {
  return thrd_err(pthread_mutex_trylock((pthread_mutex_t *)m));
}

int mtx_timedlock(mtx_t *restrict m, const struct timespec *restrict ts) {
  return thrd_err(pthread_mutex_timedlock((pthread_mutex_t *)m, ts));
}

int mtx_unlock(mtx_t *m) {
  return thrd_err(pthread_mutex_unlock((pthread_mutex_t *)m));
}

void mtx_destroy(mtx_t *m) {
  pthread_mutex_destroy((pthread_mutex_t *)m);
}

int cnd_init(cnd_t *c) {
  return thrd_err(pthread_cond_init((pthread_cond_t *)c, NULL));
}

int cnd_signal(cnd_t *c) {
  return thrd_err(pthread_cond_signal((pthread_cond_t *)c));
}

int cnd_broadcast(cnd_t *c) {
  return thrd_err(pthread_cond_broadcast((pthread_cond_t *)c));
}

int cnd_wait(cnd_t *c, mtx_t *m) {
  return thrd_err(pthread_cond_wait((pthread_cond_t *)c, (pthread_mutex_t *)m));
}

int cnd_timedwait(cnd_t *restrict c, mtx_t *restrict m, const struct timespec *restrict ts) {
  return thrd_err(pthread_cond_timedwait((pthread_cond_t *)c, (pthread_mutex_t *)m, ts));
}

void cnd_destroy(cnd_t *c) {
  pthread_cond_destroy((pthread_cond_t *)c);
}

void call_once(once_flag *flag, void (*func)(void)) {
  pthread_once((pthread_once_t *)flag, func);
}
