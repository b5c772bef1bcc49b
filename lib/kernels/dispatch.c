/* One binary for every x86-64: the vector kernels are compiled for SSE2 (the x86-64 baseline), AVX2+FMA and
 * AVX-512, and the widest one the CPU supports is chosen once at run time.  LENET_ISA=generic|avx2|avx512 in the
 * environment (or lenet__kernels_force from tests) selects a narrower one, so every path can be tested. */
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/kernels.h"

#define ISA_NAME__generic "generic"
#define ISA_NAME__avx2 "avx2"
#define ISA_NAME__avx512 "avx512"
#define ISA_NAME_generic ISA_NAME__generic
#define ISA_NAME_avx2 ISA_NAME__avx2
#define ISA_NAME_avx512 ISA_NAME__avx512

#pragma GCC push_options
#pragma GCC optimize("O3", "fp-contract=fast")
#define VW 4
#define CVW 4
#define LANES_FWD_NO 2
#define LANES_FWD_NP 1
#define LANES_GRAD_NO 1
#define LANES_GRAD_KB 2
#define GEMM_MR 2
#define GEMM_NR 2
#define SUFFIX generic
#include "kernels/simd.inc"
#pragma GCC pop_options

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__)) && !defined(LENET_NO_WIDE_VECTORS)
#define HAVE_WIDE 1
#pragma GCC push_options
#pragma GCC target("avx2,fma")
#pragma GCC optimize("O3", "fp-contract=fast")
#define VW 8
#define CVW 8
#define LANES_FWD_NO 2
#define LANES_FWD_NP 2
#define LANES_GRAD_NO 2
#define LANES_GRAD_KB 3
#define GEMM_MR 4
#define GEMM_NR 2
#define SUFFIX avx2
#include "kernels/simd.inc"
#pragma GCC pop_options

#pragma GCC push_options
#pragma GCC target("avx512f,avx2,fma")
#pragma GCC optimize("O3", "fp-contract=fast")
#define VW 16
#define CVW 8
#define LANES_FWD_NO 4
#define LANES_FWD_NP 4
#define LANES_GRAD_NO 4
#define LANES_GRAD_KB 5
#define GEMM_MR 4
#define GEMM_NR 4
#define SUFFIX avx512
#include "kernels/simd.inc"
#pragma GCC pop_options
#endif

static _Atomic(const lenet_kernels *) selected;

static const lenet_kernels *by_name(const char *isa)
{
    if (strcmp(isa, "generic") == 0)
        return &kernels_generic;
#ifdef HAVE_WIDE
    __builtin_cpu_init();
    if (strcmp(isa, "avx2") == 0 && __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))
        return &kernels_avx2;
    if (strcmp(isa, "avx512") == 0 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx2") &&
        __builtin_cpu_supports("fma"))
        return &kernels_avx512;
#endif
    return NULL;
}

static const lenet_kernels *best(void)
{
    const char *env = getenv("LENET_ISA");
    const lenet_kernels *k = env && *env ? by_name(env) : NULL;
    if (k)
        return k;
    static const char *const order[] = {"avx512", "avx2", "generic"};
    for (size_t i = 0; i < sizeof order / sizeof order[0]; i++)
        if ((k = by_name(order[i])) != NULL)
            return k;
    return &kernels_generic;
}

const lenet_kernels *lenet__kernels(void)
{
    const lenet_kernels *k = atomic_load_explicit(&selected, memory_order_acquire);
    if (!k) {
        k = best();
        atomic_store_explicit(&selected, k, memory_order_release);
    }
    return k;
}

bool lenet__kernels_force(const char *isa)
{
    const lenet_kernels *k = isa ? by_name(isa) : best();
    if (!k)
        return false;
    atomic_store_explicit(&selected, k, memory_order_release);
    return true;
}
