/* The process-wide thread count and the one-time taming of the BLAS's own threads. */
#define _POSIX_C_SOURCE 200809L
#include <stdatomic.h>
#include <stdlib.h>
#include <unistd.h>
#ifdef LENET_HAVE_OPENBLAS
#include <cblas.h>
#endif

#include "core/internal.h"
#include "lenet/threads.h"

#define MAX_THREADS 1024

static atomic_int requested; /* 0: default */
static atomic_flag blas_tamed = ATOMIC_FLAG_INIT;

static int default_threads(void)
{
    const char *env = getenv("LENET_NUM_THREADS");
    if (env && *env) {
        char *end;
        long n = strtol(env, &end, 10);
        if (*end == '\0' && n >= 1 && n <= MAX_THREADS)
            return (int)n;
    }
    long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    return cpus < 1 ? 1 : cpus > MAX_THREADS ? MAX_THREADS : (int)cpus;
}

lenet_status lenet_threads_set(int n)
{
    if (n < 0 || n > MAX_THREADS)
        return lenet__fail(LENET_EINVAL, "set_num_threads: %d is outside [0, %d]", n, MAX_THREADS);
    atomic_store(&requested, n);
    return LENET_OK;
}

int lenet_threads_get(void)
{
    int n = atomic_load(&requested);
    return n > 0 ? n : default_threads();
}

int lenet__threads(void)
{
    /* Our chunks already use every core; a multi-threaded BLAS inside each would oversubscribe them. */
    if (!atomic_flag_test_and_set(&blas_tamed)) {
#ifdef LENET_HAVE_OPENBLAS
        openblas_set_num_threads(1);
#endif
    }
    return lenet_threads_get();
}
