/* Numeric inner loops over raw float arrays: no handles, no allocation, no error codes.
 * Letters follow the math: n samples, c channels, h x w planes, k kernel size, s stride, p padding.
 * Never installed. */
#ifndef LENET_KERNELS_H
#define LENET_KERNELS_H

#include <stdbool.h>
#include <stddef.h>

/* C (m x n) = alpha * op(A) op(B) + beta * C, row-major, through cblas_sgemm. */
void lenet__sgemm(bool trans_a, bool trans_b, int m, int n, int k, float alpha, const float *a, int lda,
                  const float *b, int ldb, float beta, float *c, int ldc);

/* Geometry of one convolution or pooling window sweep over one sample. */
typedef struct lenet_conv_geom {
    int c, h, w;    /* input channels and size */
    int k, s, p;    /* kernel size, stride, zero padding */
    int oh, ow;     /* output size */
} lenet_conv_geom;

/* cols (c*k*k rows, oh*ow columns) from one sample x (c, h, w); padding reads as zero. */
void lenet__im2col(const lenet_conv_geom *g, const float *x, float *cols);
/* dx (c, h, w) = sum of cols scattered back to the positions im2col read them from (overwrites dx). */
void lenet__col2im(const lenet_conv_geom *g, const float *cols, float *dx);

/* Plain direct convolution of one sample, the reference the fast paths are tested against:
 * y (oc, oh, ow) = weight (oc, c, k, k) * x + bias. */
void lenet__conv2d_ref(const lenet_conv_geom *g, int oc, const float *x, const float *weight, const float *bias,
                       float *y);

/* Pooling over planes: `planes` = n * c independent (h, w) planes, each to (oh, ow).  Uses g->h, w, k, s, oh, ow. */
void lenet__avgpool_forward(const lenet_conv_geom *g, size_t planes, const float *x, float *y);
void lenet__avgpool_backward(const lenet_conv_geom *g, size_t planes, const float *dy, float *dx);
void lenet__maxpool_forward(const lenet_conv_geom *g, size_t planes, const float *x, float *y);
/* Recomputes each window's first maximum from x, so forward needs to store nothing. */
void lenet__maxpool_backward(const lenet_conv_geom *g, size_t planes, const float *x, const float *dy,
                             float *dx);

/* Elementwise activations over `count` floats; backward takes the forward output y. */
void lenet__sigmoid_forward(size_t count, const float *x, float *y);
void lenet__sigmoid_backward(size_t count, const float *y, const float *dy, float *dx);
void lenet__relu_forward(size_t count, const float *x, float *y);
void lenet__relu_backward(size_t count, const float *y, const float *dy, float *dx);
void lenet__tanh_forward(size_t count, const float *x, float *y);
void lenet__tanh_backward(size_t count, const float *y, const float *dy, float *dx);

/* y[i] += b[i / inner % outer]-style bias add: each of `rows` rows of `cols` gets bias[row % nbias]. */
void lenet__add_bias_rows(size_t rows, size_t cols, const float *bias, size_t nbias, float *y);
/* db[r % nbias] += sum of row r of dy (rows x cols). */
void lenet__sum_rows_into(size_t rows, size_t cols, const float *dy, float *db, size_t nbias);

#endif /* LENET_KERNELS_H */
