/**
 * @file lenet5.h
 * @brief What is specific to the original LeNet-5 (LeCun, Bottou, Bengio and Haffner 1998): its layers (trainable
 * subsampling, the partially connected C3, the scaled tanh, the Euclidean RBF output), the MAP criterion over RBF
 * penalties, the Gauss-Newton backward pass and stochastic diagonal Levenberg-Marquardt (SDLM).
 *
 * The core headers (layer.h, model.h, loss.h, criterion.h, optim.h) are a general small-CNN library; this one adds
 * the paper's pieces on top of them.  lenet.h includes it.  docs/lenet5.md shows the network and its results.
 */
#ifndef LENET_LENET5_H
#define LENET_LENET5_H

#include <stddef.h>
#include <stdint.h>

#include "lenet/criterion.h"
#include "lenet/data.h"
#include "lenet/export.h"
#include "lenet/layer.h"
#include "lenet/loss.h"
#include "lenet/model.h"
#include "lenet/optim.h"
#include "lenet/status.h"
#include "lenet/tensor.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---- LeNet-5 (LeCun, Bottou, Bengio, Haffner 1998): the layers of the original network ---- */

/**
 * LeNet-5's trainable subsampling (S2, S4; PyTorch has no such module, name "Subsampling"): each output unit
 * adds the kernel_size x kernel_size inputs of its window, multiplies the sum by one trainable coefficient per
 * map and adds one trainable bias per map.  No padding, floor mode, like lenet_avgpool2d().  Parameters
 * "weight" (C) and "bias" (C).  The squashing function is a separate layer (lenet_scaled_tanh()).
 * @return NULL with LENET_EINVAL unless kernel_size >= 1 and stride >= 1.
 */
LENET_API lenet_layer *lenet_subsampling(int kernel_size, int stride);

/**
 * A valid, stride-1 convolution in which output map o reads only the input maps i with
 * table[o * in_channels + i] != 0 (name "PartialConv2d").  The input must have in_channels maps.
 * Parameters "weight" (connections, k, k), the kernels of the table's connections numbered output-major
 * (map 0's inputs in increasing order, then map 1's, ...), and "bias" (out_channels).  LENET_INIT_LECUN uses
 * each output map's own fan-in (its inputs * k * k).
 * @param table out_channels * in_channels flags, copied (the caller keeps it); at most 240 entries.
 * @return NULL with LENET_EINVAL for sizes < 1, a NULL or empty table, or a table of more than 240 entries.
 */
LENET_API lenet_layer *lenet_partial_conv2d(int out_channels, int in_channels, int kernel_size,
                                            const unsigned char *table);

/**
 * Writes LeNet-5's C3 connection table (the paper's Table I) as lenet_partial_conv2d() takes it:
 * table[o * 6 + i] is 1 when C3 map o reads S2 map i, else 0.  Harmless on NULL.
 */
LENET_API void lenet_lenet5_c3_table(unsigned char table[16 * 6]);

/** LeNet-5's C3: lenet_partial_conv2d(16, 6, 5, Table I): 1,516 parameters, 151,600 connections. */
LENET_API lenet_layer *lenet_lenet5_c3(void);

/**
 * Euclidean radial basis function units (name "EuclideanRBF"): y_i = sum_j (x_j - w_ij)^2 over flattened input
 * of in_features, inferred at build.  The smaller y_i, the better the input matches unit i (a penalty, not a
 * score).  The centres are fixed: the parameter "weight" (out_features, in_features) is not trainable (it is in
 * the state_dict, counts no trainable parameter and no optimizer changes it).  Every lenet_model_init() scheme
 * sets them to zero; write your own through lenet_model_param() after building the model.
 * @return NULL with LENET_EINVAL unless out_features >= 1.
 */
LENET_API lenet_layer *lenet_euclidean_rbf(int out_features);

/**
 * Writes LeNet-5's RBF centres: for digit d, centers[d * 84 + 7 * r + c] is +1 where the 7x12 bitmap of the
 * stylised digit (the paper's Fig. 3) has ink at row r, column c, else -1.  The bitmaps are drawn for liblenet
 * after the paper (docs/lenet5.md shows them).  Harmless on NULL.
 */
LENET_API void lenet_lenet5_rbf_bitmaps(float centers[10 * 84]);

/**
 * LeNet-5's output layer: lenet_euclidean_rbf(10) over 84 inputs (F6) whose centres are the bitmaps of
 * lenet_lenet5_rbf_bitmaps(), written by every lenet_model_init() scheme; 840 connections.  Building it after a
 * layer of other than 84 outputs is LENET_ESHAPE.
 */
LENET_API lenet_layer *lenet_lenet5_rbf(void);

/**
 * LeNet-5's squashing function f(a) = A tanh(S a) with A = 1.7159 and S = 2/3, elementwise
 * (name "ScaledTanh"; f(1) = 1, f(-1) = -1).
 */
LENET_API lenet_layer *lenet_scaled_tanh(void);

/* ---- LeNet-5 (LeCun et al. 1998): criteria over RBF penalties ---- */

/**
 * The criteria for a network whose outputs are penalties y (smaller is better), such as lenet_euclidean_rbf() units.
 */
typedef enum lenet_rbf_loss_kind {
    /** The paper's MAP criterion (eq. 9): E = mean_p [ y_{D_p} + log(e^{-j} + sum_i e^{-y_i}) ]. */
    LENET_RBF_LOSS_MAP = 0,
    /** The plain mean-squared criterion (eq. 8): E = mean_p y_{D_p}, the squared distance to the right centre. */
    LENET_RBF_LOSS_MSE = 1
} lenet_rbf_loss_kind;

/** The constant j of the MAP criterion that the liblenet examples use (the paper gives none; 3 beat 0.1 and 10 on
 * MNIST, see docs/lenet5.md). */
#define LENET_MAP_J_DEFAULT 3.0f

/**
 * Evaluates an RBF criterion over a batch of penalties, its gradient and the diagonal of its Hessian, all as
 * means over the batch.  Computed stably (log-sum-exp shifted by the smallest exponent) for penalties of any size.
 *
 * @param y      (N, K) penalties
 * @param labels N class indices in [0, K), borrowed
 * @param criterion LENET_RBF_LOSS_MAP or LENET_RBF_LOSS_MSE
 * @param j      the MAP constant (ignored for MSE); finite
 * @param loss   receives the mean loss (may be NULL)
 * @param dy     if not NULL, a caller-owned (N, K) tensor receiving dE/dy: MAP (onehot - q) / N with
 *               q_i = e^{-y_i} / (e^{-j} + sum_k e^{-y_k}); MSE onehot / N
 * @param hy     if not NULL, a caller-owned (N, K) tensor receiving the diagonal d2E/dy_i^2 (what
 *               lenet_model_backward_gn() takes): MAP q_i (1 - q_i) / N; MSE 0
 * @return LENET_OK; LENET_EINVAL for NULL y or labels, an unknown criterion, a non-finite j or a label out of
 *         range; LENET_ESHAPE if y is not 2-D or dy/hy differ in shape; LENET_ENUMERIC for a NaN or infinite
 *         penalty (nothing is written then).
 */
LENET_API lenet_status lenet_rbf_loss(const lenet_tensor *y, const int32_t *labels, lenet_rbf_loss_kind criterion,
                                      float j, float *loss, lenet_tensor *dy, lenet_tensor *hy);

/**
 * LeNet-5's criteria over RBF penalties (lenet_rbf_loss()), the smallest penalty wins.
 * @param kind LENET_RBF_LOSS_MAP or LENET_RBF_LOSS_MSE
 * @param j    the MAP constant (LENET_MAP_J_DEFAULT is what the examples use); ignored for MSE, finite
 * @return a new criterion the caller frees with lenet_criterion_free(), or NULL (LENET_EINVAL for an unknown kind or
 *         a non-finite j; LENET_ENOMEM).
 */
LENET_API lenet_criterion *lenet_criterion_rbf(lenet_rbf_loss_kind kind, float j);

/* ---- LeNet-5 (LeCun et al. 1998): second-order information for SDLM ---- */

/**
 * Back-propagates the diagonal Gauss-Newton curvature of a loss through the last forward pass and adds, for
 * every parameter, the estimate of d2E/dw2 into its gradient buffer (lenet_model_grad()), as
 * lenet_model_backward() adds dE/dw: the loss's diagonal Hessian @p hy at the output goes back as
 * d2E/da2 = f'(a)^2 d2E/dy2 through nonlinearities and d2E/dx_k^2 = sum w_k^2 d2E/da^2 through weighted sums,
 * and d2E/dw_k^2 = sum over the weight's connections of x_k^2 d2E/da^2 (LeCun et al. 1998, appendix C).
 * Every term is >= 0 when @p hy is.  Used by lenet_sdlm_estimate_hessian(); call lenet_model_zero_grad() first
 * unless accumulating.
 *
 * @param dy the loss gradient at the output (same shape as the output), or NULL; a last layer whose own
 *           curvature enters (lenet_euclidean_rbf(): 2 * sum dy) needs it.
 * @param hy diag d2E/dy2 at the output, same shape (e.g. from lenet_rbf_loss()).
 * @return LENET_OK; LENET_EINVAL; LENET_ESTATE without a preceding forward; LENET_ESHAPE if a shape differs;
 *         LENET_EUNSUPPORTED naming the first layer that has no Gauss-Newton pass (overlapping pools, and layers
 *         outside liblenet's LeNet-5 set and the linear/elementwise layers); LENET_ENOMEM.  Nothing is written
 *         on failure.
 */
LENET_API lenet_status lenet_model_backward_gn(lenet_model *m, const lenet_tensor *dy, const lenet_tensor *hy);

/* ---- LeNet-5 (LeCun et al. 1998): stochastic diagonal Levenberg-Marquardt ---- */

/**
 * Creates stochastic diagonal Levenberg-Marquardt (LeCun et al. 1998, appendix C): every trainable parameter
 * w_k has its own step eta_k = epsilon / (mu + h_kk), where h_kk is an estimate of d2E/dw_k^2 (the Gauss-Newton
 * diagonal, see lenet_model_backward_gn()), so each step is w_k -= eta_k * grad_k.  The paper uses mu = 0.02 and
 * the epsilon schedule of lenet_sdlm_paper_epsilon(), with one step per pattern (batches of 1) and the h_kk
 * re-estimated on 500 patterns before every pass.  lenet_optimizer_set_lr() / lenet_optimizer_lr() set and read
 * epsilon.
 *
 * @param m the model, borrowed: it must outlive the optimizer.  It may be unbuilt until the first estimate.
 * @return a new optimizer to free with lenet_optimizer_free(), or NULL (LENET_EINVAL for NULL, a negative or
 *         non-finite epsilon, a non-positive or non-finite mu; LENET_ENOMEM).
 */
LENET_API lenet_optimizer *lenet_sdlm_create(lenet_model *m, float epsilon, float mu);

/**
 * Re-estimates the h_kk of an SDLM optimizer as the mean of the per-pattern Gauss-Newton diagonal over the
 * next @p samples patterns of @p it (reset when it runs out; a shuffled iterator gives the paper's randomly
 * chosen patterns), for a model whose outputs are RBF penalties scored by @p criterion with constant @p j
 * (see lenet_rbf_loss()).  Uses the model's gradient buffers, which are zero afterwards.
 * Until the first estimate, lenet_optimizer_step() fails with LENET_ESTATE.
 * @return LENET_OK; LENET_EINVAL (NULL, not an SDLM optimizer, samples == 0, bad criterion or j); the errors of
 *         lenet_model_forward(), lenet_rbf_loss() and lenet_model_backward_gn().
 */
LENET_API lenet_status lenet_sdlm_estimate_hessian(lenet_optimizer *o, lenet_iter *it, size_t samples,
                                                   lenet_rbf_loss_kind criterion, float j);

/**
 * The running form of the estimate (the paper's h_kk <- (1 - gamma) h_kk + gamma d2E^p/dw_k^2): blends the
 * model's gradient buffers, holding a curvature summed over @p count patterns by lenet_model_backward_gn(), into
 * the h_kk with weight @p gamma in (0, 1] (1 replaces them; the first
 * call always replaces).  Negative values are clamped at 0.
 * @return LENET_OK; LENET_EINVAL; LENET_ESTATE if the model is not built; LENET_ENOMEM.
 */
LENET_API lenet_status lenet_sdlm_update_hessian_from_grads(lenet_optimizer *o, double count, float gamma);

/**
 * Copies the current h_kk of parameter tensor @p i (numbered as lenet_model_param()) into @p out, a tensor of
 * the same number of elements.
 * @return LENET_OK; LENET_EINVAL (NULL, not SDLM, i out of range); LENET_ESTATE before the first estimate;
 *         LENET_ESHAPE if the sizes differ.
 */
LENET_API lenet_status lenet_sdlm_hessian(const lenet_optimizer *o, size_t i, lenet_tensor *out);

/**
 * The paper's epsilon for pass @p pass (0-based): 0.0005 for passes 0-1, 0.0002 for 2-4, 0.0001 for 5-7,
 * 0.00005 for 8-11 and 0.00001 from pass 12 on.
 */
LENET_API float lenet_sdlm_paper_epsilon(int pass);

#ifdef __cplusplus
}
#endif

#endif /* LENET_LENET5_H */
