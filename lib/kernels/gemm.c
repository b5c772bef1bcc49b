#include <string.h>

#include <cblas.h>

#include "kernels/kernels.h"

void lenet__sgemm(bool trans_a, bool trans_b, int m, int n, int k, float alpha, const float *a, int lda,
                  const float *b, int ldb, float beta, float *c, int ldc)
{
    /* OpenBLAS's small-matrix kernels for beta = 0 allocate a scratch block on every call (0.3.21, AVX-512); the
     * training step allocates nothing if C is cleared here and accumulated into instead.  0 + x is x exactly. */
    if (beta == 0.0f) {
        for (int r = 0; r < m; r++)
            memset(c + (size_t)r * ldc, 0, (size_t)n * sizeof(float));
        beta = 1.0f;
    }
    cblas_sgemm(CblasRowMajor, trans_a ? CblasTrans : CblasNoTrans, trans_b ? CblasTrans : CblasNoTrans, m, n, k,
                alpha, a, lda, b, ldb, beta, c, ldc);
}
