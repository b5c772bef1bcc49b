/* All allocations of the library go through here, so tests can make the n-th one fail and check that every
 * caller reports LENET_ENOMEM and leaks nothing.  The counter is process-wide on purpose: injection tests run
 * single-threaded, and a global keeps the hook out of every function signature. */
#include <stdatomic.h>
#include <stdlib.h>

#include "core/internal.h"

static atomic_size_t allocations;
static atomic_size_t fail_at; /* 0: never fail */

static bool should_fail(void)
{
    size_t n = atomic_fetch_add(&allocations, 1) + 1;
    size_t target = atomic_load(&fail_at);
    return target != 0 && n == target;
}

size_t lenet__alloc_fail_at(size_t n)
{
    size_t counted = atomic_exchange(&allocations, 0);
    atomic_store(&fail_at, n);
    return counted;
}

void *lenet__malloc(size_t size)
{
    if (should_fail())
        return NULL;
    return malloc(size ? size : 1);
}

void *lenet__calloc(size_t count, size_t size)
{
    if (should_fail())
        return NULL;
    if (count == 0 || size == 0)
        count = size = 1;
    return calloc(count, size);
}

void *lenet__realloc(void *p, size_t size)
{
    if (should_fail())
        return NULL;
    return realloc(p, size ? size : 1);
}

void lenet__free(void *p)
{
    free(p);
}

void *lenet__malloc_aligned(size_t size)
{
    if (should_fail())
        return NULL;
    size = (size + 63) & ~(size_t)63;
    return aligned_alloc(64, size ? size : 64);
}

void lenet__free_aligned(void *p)
{
    free(p);
}
