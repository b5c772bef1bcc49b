/* The fused inference kernels (fused.h), compiled like the layers' kernels (dispatch.c): once for SSE2, AVX2+FMA
 * and AVX-512, each table going with the lenet__kernels() table of the same name, so that LENET_ISA and
 * lenet__kernels_force choose both.
 *
 * The tiles (fused.inc names the parameters) hold as many accumulators as the registers allow: a multiply-add takes
 * 4 cycles and a core starts two 256-bit ones (or one 512-bit one) per cycle, so fewer than 8 independent
 * accumulators on AVX2 leave the units idle, and AVX-512 has 32 registers to fill.  lanes_min is where one lane
 * group of the d2l LeNet costs as much as that many single images, on a Zen 4 core (bench/README.md). */
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>
#endif
#include <string.h>

#include "kernels/fused.h"

#define FUSED_ISA_NAME_generic "generic"
#define FUSED_ISA_NAME_avx2 "avx2"
#define FUSED_ISA_NAME_avx512 "avx512"

#pragma GCC push_options
#pragma GCC optimize("O3", "fp-contract=fast")
#define VW 4
#define LANES_MIN 16
#define LP_NO 2
#define LP_NP 2
#define LN_NO 2
#define LN_NP 2
#define LL_NO 1
#define SR_NO 2
#define SC_NV 2
#define SC_NP 2
#define SL_NV 4
#define SUFFIX generic
#include "kernels/fused.inc"
#pragma GCC pop_options

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__)) && !defined(LENET_NO_WIDE_VECTORS)
#define HAVE_WIDE 1
#define LENET_FUSED_X86 1
#define LENET_FUSED_FMA 1
#pragma GCC push_options
#pragma GCC target("avx2,fma")
#pragma GCC optimize("O3", "fp-contract=fast")
#define VW 8
#define LANES_MIN 13
#define LP_NO 3
#define LP_NP 2
#define LN_NO 2
#define LN_NP 4
#define LL_NO 3
#define SR_NO 3
#define SC_NV 2
#define SC_NP 2
#define SL_NV 6
#define SUFFIX avx2
#include "kernels/fused.inc"
#pragma GCC pop_options

#pragma GCC push_options
#pragma GCC target("avx512f,avx2,fma")
#pragma GCC optimize("O3", "fp-contract=fast")
#define VW 16
#define LANES_MIN 12
#define LP_NO 3
#define LP_NP 4
#define LN_NO 4
#define LN_NP 4
#define LL_NO 8
#define SR_NO 6
#define SC_NV 1
#define SC_NP 4
#define SL_NV 8
#define SUFFIX avx512
#include "kernels/fused.inc"
#pragma GCC pop_options
#endif

const lenet_fused_kernels *lenet__fused_kernels(void)
{
    const char *isa = lenet__kernels()->isa;
#ifdef HAVE_WIDE
    if (strcmp(isa, fused_avx512.isa) == 0)
        return &fused_avx512;
    if (strcmp(isa, fused_avx2.isa) == 0)
        return &fused_avx2;
#endif
    (void)isa;
    return &fused_generic;
}
