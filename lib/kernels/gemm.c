#include <string.h>

#include <cblas.h>

#include "kernels/kernels.h"

void lenet__sgemm(bool trans_a, bool trans_b, int m, int n, int k, float alpha, const float *a, int lda,
                  const float *b, int ldb, float beta, float *c, int ldc)
{
    /* OpenBLAS's small-matrix kernels allocate a scratch block on every call (0.3.21, AVX-512), and an inference
     * plan promises to allocate nothing.  The plain product of the kernel tables never allocates: it takes
     * C = A B, the im2col convolutions' case.  For beta = 0 otherwise, C is cleared and accumulated into, which
     * the kernels for beta = 1 need no scratch for; 0 + x is x exactly. */
    if (!trans_a && !trans_b && alpha == 1.0f && beta == 0.0f) {
        lenet__kernels()->gemm_nn(m, n, k, a, lda, b, ldb, c, ldc);
        return;
    }
    if (beta == 0.0f) {
        for (int r = 0; r < m; r++)
            memset(c + (size_t)r * ldc, 0, (size_t)n * sizeof(float));
        beta = 1.0f;
    }
    cblas_sgemm(CblasRowMajor, trans_a ? CblasTrans : CblasNoTrans, trans_b ? CblasTrans : CblasNoTrans, m, n, k,
                alpha, a, lda, b, ldb, beta, c, ldc);
}
