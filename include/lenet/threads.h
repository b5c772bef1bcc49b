/**
 * @file threads.h
 * @brief How many threads liblenet uses for training and batch inference.
 *
 * liblenet splits each batch into fixed chunks of samples and sums their gradients in a fixed order, so for a
 * given seed the results are bit-identical whatever the thread count.  While it runs, liblenet is the one owner
 * of the cores: it keeps the BLAS library single-threaded (OpenBLAS: openblas_set_num_threads(1)) so the two
 * thread pools do not fight.
 */
#ifndef LENET_THREADS_H
#define LENET_THREADS_H

#include "lenet/export.h"
#include "lenet/status.h"

#ifdef __cplusplus
extern "C" {
#endif

/**
 * Sets the number of threads for the following calls, process-wide.  0 restores the default: the environment
 * variable LENET_NUM_THREADS if set, else the number of online CPUs.  The library's worker threads sleep when
 * idle, survive fork() (the child makes its own) and are joined when the library is unloaded.  One parallel call
 * runs at a time: a call made while another thread's call is running runs on its caller's thread alone.
 * @return LENET_OK; LENET_EINVAL if n < 0 or n > 1024.
 */
LENET_API lenet_status lenet_threads_set(int n);

/** Returns the number of threads the next call will use (at least 1). */
LENET_API int lenet_threads_get(void);

#ifdef __cplusplus
}
#endif

#endif /* LENET_THREADS_H */
