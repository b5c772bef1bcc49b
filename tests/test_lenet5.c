/* The original LeNet-5 (LeCun et al. 1998): its layers against finite differences, the C3 table against the
 * paper's Table I, the parameter and connection counts, the MAP criterion, the diagonal Gauss-Newton pass
 * against a brute-force Gauss-Newton diagonal, and SDLM's update rule. */
#define _POSIX_C_SOURCE 200809L /* fmemopen */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "gradcheck.h"
#include "idxfixture.h"
#include "model/internal.h"
#include "testutil.h"

/* ---- helpers ---- */

static lenet_model *model_of(lenet_layer **layers, size_t count)
{
    lenet_model *m = lenet_model_create();
    ck_assert_ptr_nonnull(m);
    for (size_t i = 0; i < count; i++)
        ck_assert_lenet_ok(lenet_model_add(m, layers[i]));
    return m;
}

#define MODEL(...) model_of((lenet_layer *[]){__VA_ARGS__}, sizeof((lenet_layer *[]){__VA_ARGS__}) / sizeof(lenet_layer *))

static lenet_model *lenet5(void)
{
    return MODEL(lenet_conv2d(6, 5, 1, 0), lenet_scaled_tanh(), lenet_subsampling(2, 2), lenet_scaled_tanh(),
                 lenet_lenet5_c3(), lenet_scaled_tanh(), lenet_subsampling(2, 2), lenet_scaled_tanh(),
                 lenet_conv2d(120, 5, 1, 0), lenet_scaled_tanh(), lenet_flatten(), lenet_linear(84),
                 lenet_scaled_tanh(), lenet_lenet5_rbf());
}

static lenet_tensor *random_tensor(int ndim, const int *shape, uint64_t seed, float lo, float hi)
{
    lenet_tensor *t = lenet_tensor_create(ndim, shape);
    ck_assert_ptr_nonnull(t);
    lenet_test_fill(t, seed, lo, hi);
    return t;
}

/* Sets every trainable parameter of m uniformly in [lo, hi) from a seed (the RBF centres stay). */
static void randomize_params(lenet_model *m, uint64_t seed, float lo, float hi)
{
    for (size_t i = 0; i < lenet_model_param_count(m); i++) {
        if (!m->param_trainable[i])
            continue;
        lenet_test_fill(lenet_model_param(m, i), seed + i, lo, hi);
    }
}

static double rel_err(double a, double b, double floor)
{
    double d = fabs(a) > fabs(b) ? fabs(a) : fabs(b);
    return fabs(a - b) / (d > floor ? d : floor);
}

/* ---- counts ---- */

START_TEST(test_lenet5_has_the_papers_parameters_and_connections_per_layer)
{
    lenet_model *m = lenet5();
    ck_assert_lenet_ok(lenet_model_build(m, 1, 32, 32));
    /* LeCun et al. 1998, section II.B: C1 S2 C3 S4 C5 F6 and the 84x10 output connections. */
    static const size_t params[] = {156, 0, 12, 0, 1516, 0, 32, 0, 48120, 0, 0, 10164, 0, 0};
    static const size_t conns[] = {122304, 0, 5880, 0, 151600, 0, 2000, 0, 48120, 0, 0, 10164, 0, 840};
    ck_assert_uint_eq(lenet_model_layer_count(m), 14);
    size_t total_params = 0, total_conns = 0;
    for (size_t i = 0; i < 14; i++) {
        const lenet_layer *l = lenet_model_layer(m, i);
        size_t n = 0;
        for (int j = 0; j < l->n_params; j++)
            if (m->param_trainable[m->layer_first_param[i] + (size_t)j])
                n += l->param_numel[j];
        size_t c = l->ops->connections ? l->ops->connections(l) : 0;
        ck_assert_msg(n == params[i], "layer %zu (%s): %zu parameters, expected %zu", i, l->ops->name, n, params[i]);
        ck_assert_msg(c == conns[i], "layer %zu (%s): %zu connections, expected %zu", i, l->ops->name, c, conns[i]);
        total_params += n;
        total_conns += c;
    }
    ck_assert_uint_eq(total_params, 60000);
    ck_assert_uint_eq(total_conns, 340908);
    ck_assert_uint_eq(lenet_model_param_numel(m), 60000);

    char buf[4096] = {0};
    FILE *f = fmemopen(buf, sizeof buf - 1, "w");
    ck_assert_ptr_nonnull(f);
    ck_assert_lenet_ok(lenet_model_print(m, f));
    fclose(f);
    ck_assert_msg(strstr(buf, "Total trainable parameters: 60,000") != NULL, "%s", buf);
    ck_assert_msg(strstr(buf, "Total connections: 340,908") != NULL, "%s", buf);
    ck_assert_msg(strstr(buf, "PartialConv2d") && strstr(buf, "Subsampling") && strstr(buf, "EuclideanRBF") &&
                      strstr(buf, "ScaledTanh"),
                  "%s", buf);
    lenet_model_free(m);
}
END_TEST

START_TEST(test_lenet5_layer_names_and_output_shapes)
{
    lenet_model *m = lenet5();
    char buf[4096] = {0};
    FILE *f = fmemopen(buf, sizeof buf - 1, "w");
    ck_assert_lenet_ok(lenet_model_summary(m, 1, 1, 32, 32, f));
    fclose(f);
    ck_assert_msg(strstr(buf, "Conv2d output shape: \t torch.Size([1, 6, 28, 28])") != NULL, "%s", buf);
    ck_assert_msg(strstr(buf, "Subsampling output shape: \t torch.Size([1, 6, 14, 14])") != NULL, "%s", buf);
    ck_assert_msg(strstr(buf, "PartialConv2d output shape: \t torch.Size([1, 16, 10, 10])") != NULL, "%s", buf);
    ck_assert_msg(strstr(buf, "Subsampling output shape: \t torch.Size([1, 16, 5, 5])") != NULL, "%s", buf);
    ck_assert_msg(strstr(buf, "Conv2d output shape: \t torch.Size([1, 120, 1, 1])") != NULL, "%s", buf);
    ck_assert_msg(strstr(buf, "EuclideanRBF output shape: \t torch.Size([1, 10])") != NULL, "%s", buf);
    ck_assert_str_eq(lenet_layer_name(lenet_model_layer(m, 1)), "ScaledTanh");
    /* State_dict names: the RBF centres are kept though fixed. */
    ck_assert_str_eq(lenet_model_param_name(m, 2), "2.weight");
    ck_assert_str_eq(lenet_model_param_name(m, 4), "4.weight");
    ck_assert_int_eq(lenet_tensor_dim(lenet_model_param(m, 4), 0), 60);
    ck_assert_str_eq(lenet_model_param_name(m, lenet_model_param_count(m) - 1), "13.weight");
    lenet_model_free(m);
}
END_TEST

/* ---- C3's table ---- */

START_TEST(test_c3_table_is_table_one_of_the_paper)
{
    /* Table I, column by column: the S2 maps each C3 map reads. */
    static const int expected[16][6] = {
        {0, 1, 2, -1},    {1, 2, 3, -1},    {2, 3, 4, -1},    {3, 4, 5, -1},    {0, 4, 5, -1},    {0, 1, 5, -1},
        {0, 1, 2, 3, -1}, {1, 2, 3, 4, -1}, {2, 3, 4, 5, -1}, {0, 3, 4, 5, -1}, {0, 1, 4, 5, -1}, {0, 1, 2, 5, -1},
        {0, 1, 3, 4, -1}, {1, 2, 4, 5, -1}, {0, 2, 3, 5, -1}, {0, 1, 2, 3, 4, 5},
    };
    unsigned char table[16 * 6];
    memset(table, 7, sizeof table);
    lenet_lenet5_c3_table(table);
    int total = 0;
    for (int o = 0; o < 16; o++) {
        unsigned char want[6] = {0};
        for (int k = 0; k < 6 && expected[o][k] >= 0; k++)
            want[expected[o][k]] = 1;
        for (int i = 0; i < 6; i++) {
            ck_assert_msg(table[o * 6 + i] == want[i], "C3 map %d, S2 map %d: %d, expected %d", o, i, table[o * 6 + i],
                          want[i]);
            total += table[o * 6 + i];
        }
    }
    ck_assert_int_eq(total, 60);
    lenet_lenet5_c3_table(NULL); /* harmless */
}
END_TEST

START_TEST(test_partial_conv_reads_only_the_connected_maps)
{
    /* Map 0 reads input 1 only, map 1 reads inputs 0 and 2. */
    const unsigned char table[2 * 3] = {0, 1, 0, 1, 0, 1};
    lenet_model *m = MODEL(lenet_partial_conv2d(2, 3, 2, table));
    ck_assert_lenet_ok(lenet_model_build(m, 3, 3, 3));
    ck_assert_int_eq(lenet_tensor_dim(lenet_model_param(m, 0), 0), 3);
    float *w = lenet_tensor_data(lenet_model_param(m, 0)), *b = lenet_tensor_data(lenet_model_param(m, 1));
    for (int k = 0; k < 12; k++)
        w[k] = (float)(k / 4 + 1); /* connection c has all weights c + 1 */
    b[0] = 0.5f;
    b[1] = -1.0f;
    lenet_tensor *x = lenet_tensor_create(4, (int[]){1, 3, 3, 3});
    for (int c = 0; c < 3; c++)
        for (int k = 0; k < 9; k++)
            lenet_tensor_data(x)[c * 9 + k] = (float)((c + 1) * 10 + k);
    const lenet_tensor *y;
    ck_assert_lenet_ok(lenet_model_forward(m, x, &y));
    /* Window (0,0) of a plane holds k = 0, 1, 3, 4. */
    float s0 = 4 * 20 + 0 + 1 + 3 + 4, s2 = 4 * 10 + 8, s3 = 4 * 30 + 8;
    ck_assert_float_eq_tol(lenet_tensor_cdata(y)[0], 1 * s0 + 0.5f, 1e-4);
    ck_assert_float_eq_tol(lenet_tensor_cdata(y)[4], 2 * s2 + 3 * s3 - 1.0f, 1e-4);
    ck_assert_ptr_null(lenet_partial_conv2d(2, 3, 2, (const unsigned char[6]){0}));
    ck_assert_ptr_null(lenet_partial_conv2d(2, 3, 2, NULL));
    ck_assert_ptr_null(lenet_partial_conv2d(16, 16, 5, table)); /* 256 entries > 240 */
    lenet_tensor_free(x);
    lenet_model_free(m);

    /* The wrong number of input maps is a shape error naming the layer. */
    m = MODEL(lenet_lenet5_c3());
    ck_assert_int_eq(lenet_model_build(m, 4, 14, 14), LENET_ESHAPE);
    ck_assert_msg(strstr(lenet_last_error(), "PartialConv2d") != NULL, "%s", lenet_last_error());
    lenet_model_free(m);
}
END_TEST

/* ---- forward values ---- */

START_TEST(test_scaled_tanh_is_a_tanh_of_s_a)
{
    lenet_model *m = MODEL(lenet_scaled_tanh());
    lenet_tensor *x = lenet_tensor_create(4, (int[]){1, 1, 1, 4});
    const float in[4] = {-1.0f, 0.0f, 1.0f, 3.0f};
    memcpy(lenet_tensor_data(x), in, sizeof in);
    const lenet_tensor *y;
    ck_assert_lenet_ok(lenet_model_forward(m, x, &y));
    for (int i = 0; i < 4; i++)
        ck_assert_double_eq_tol(lenet_tensor_cdata(y)[i], 1.7159 * tanh(2.0 / 3.0 * in[i]), 1e-6);
    /* The paper's choice: f(+-1) = +-1. */
    ck_assert_double_eq_tol(lenet_tensor_cdata(y)[2], 1.0, 2e-4);
    ck_assert_double_eq_tol(lenet_tensor_cdata(y)[0], -1.0, 2e-4);
    lenet_tensor_free(x);
    lenet_model_free(m);
}
END_TEST

START_TEST(test_subsampling_scales_window_sums_per_map)
{
    lenet_model *m = MODEL(lenet_subsampling(2, 2));
    ck_assert_lenet_ok(lenet_model_build(m, 2, 4, 4));
    ck_assert_uint_eq(lenet_model_param_numel(m), 4);
    float *w = lenet_tensor_data(lenet_model_param(m, 0)), *b = lenet_tensor_data(lenet_model_param(m, 1));
    w[0] = 0.5f, w[1] = -2.0f, b[0] = 1.0f, b[1] = 0.25f;
    lenet_tensor *x = lenet_tensor_create(4, (int[]){1, 2, 4, 4});
    for (int k = 0; k < 32; k++)
        lenet_tensor_data(x)[k] = (float)k;
    const lenet_tensor *y;
    ck_assert_lenet_ok(lenet_model_forward(m, x, &y));
    ck_assert_int_eq(lenet_tensor_dim(y, 2), 2);
    /* Map 0, window (1, 1): 10 + 11 + 14 + 15 = 50; map 1, window (0, 0): 16 + 17 + 20 + 21 = 74. */
    ck_assert_float_eq_tol(lenet_tensor_cdata(y)[3], 0.5f * 50 + 1.0f, 1e-5);
    ck_assert_float_eq_tol(lenet_tensor_cdata(y)[4], -2.0f * 74 + 0.25f, 1e-4);
    ck_assert_ptr_null(lenet_subsampling(0, 2));
    ck_assert_ptr_null(lenet_subsampling(2, 0));
    lenet_tensor_free(x);
    lenet_model_free(m);
}
END_TEST

START_TEST(test_rbf_outputs_squared_distances_to_fixed_bitmaps)
{
    float centers[840];
    lenet_lenet5_rbf_bitmaps(centers);
    for (int k = 0; k < 840; k++)
        ck_assert(centers[k] == 1.0f || centers[k] == -1.0f);
    /* Ten different codes, each with ink, far enough apart to be told apart. */
    for (int a = 0; a < 10; a++) {
        int ink = 0;
        for (int k = 0; k < 84; k++)
            ink += centers[a * 84 + k] > 0;
        ck_assert_msg(ink >= 12 && ink <= 42, "digit %d has %d ink pixels", a, ink);
        for (int b = 0; b < a; b++) {
            int differ = 0;
            for (int k = 0; k < 84; k++)
                differ += centers[a * 84 + k] != centers[b * 84 + k];
            ck_assert_msg(differ >= 8, "digits %d and %d differ in %d pixels only", a, b, differ);
        }
    }

    lenet_model *m = MODEL(lenet_flatten(), lenet_lenet5_rbf());
    ck_assert_lenet_ok(lenet_model_build(m, 1, 12, 7));
    ck_assert_uint_eq(lenet_model_param_count(m), 1);
    ck_assert_uint_eq(lenet_model_param_numel(m), 0); /* fixed: no trainable parameter */
    /* Every init scheme writes the bitmaps. */
    ck_assert_lenet_ok(lenet_model_init(m, LENET_INIT_LECUN, 3));
    ck_assert_mem_eq(lenet_tensor_cdata(lenet_model_param(m, 0)), centers, sizeof centers);
    /* Input = bitmap of 3: penalty 0 for 3, 4 * (differing pixels) for the others. */
    lenet_tensor *x = lenet_tensor_create(4, (int[]){1, 1, 12, 7});
    memcpy(lenet_tensor_data(x), centers + 3 * 84, 84 * sizeof(float));
    const lenet_tensor *y;
    ck_assert_lenet_ok(lenet_model_forward(m, x, &y));
    for (int d = 0; d < 10; d++) {
        int differ = 0;
        for (int k = 0; k < 84; k++)
            differ += centers[d * 84 + k] != centers[3 * 84 + k];
        ck_assert_float_eq_tol(lenet_tensor_cdata(y)[d], 4.0f * differ, 1e-4);
    }
    /* The outputs are penalties: classify picks the smallest (3, the bitmap shown), and its probabilities are the
     * softmax of the negated penalties, largest for 3. */
    int32_t cls = -1;
    float probs[10];
    ck_assert_lenet_ok(lenet_model_classify(m, x, &cls, probs));
    ck_assert_int_eq(cls, 3);
    double sum = 0.0, norm = 0.0;
    for (int d = 0; d < 10; d++)
        norm += exp(-(double)lenet_tensor_cdata(y)[d]);
    for (int d = 0; d < 10; d++) {
        sum += probs[d];
        ck_assert_float_eq_tol(probs[d], exp(-(double)lenet_tensor_cdata(y)[d]) / norm, 1e-6);
        ck_assert(d == 3 || probs[d] < probs[3]);
    }
    ck_assert_double_eq_tol(sum, 1.0, 1e-5);
    /* An optimizer never moves the centres. */
    lenet_optimizer *o = lenet_sgd_create(m, 0.5f, 0.0f, 0.0f);
    lenet_tensor *dy = random_tensor(2, (int[]){1, 10}, 4, -1, 1);
    ck_assert_lenet_ok(lenet_model_backward(m, dy));
    ck_assert_lenet_ok(lenet_optimizer_step(o));
    ck_assert_mem_eq(lenet_tensor_cdata(lenet_model_param(m, 0)), centers, sizeof centers);
    lenet_optimizer_free(o);
    lenet_tensor_free(dy);
    lenet_tensor_free(x);
    lenet_model_free(m);

    ck_assert_ptr_null(lenet_euclidean_rbf(0));
    /* The bitmaps need 84 inputs; a general RBF takes any count and starts from zero centres. */
    m = MODEL(lenet_flatten(), lenet_lenet5_rbf());
    ck_assert_int_eq(lenet_model_build(m, 1, 10, 10), LENET_ESHAPE);
    lenet_model_free(m);
    m = MODEL(lenet_flatten(), lenet_euclidean_rbf(10));
    ck_assert_lenet_ok(lenet_model_build(m, 1, 10, 10));
    ck_assert_int_eq(lenet_tensor_dim(lenet_model_param(m, 0), 1), 100);
    for (size_t k = 0; k < lenet_tensor_numel(lenet_model_param(m, 0)); k++)
        ck_assert_float_eq(lenet_tensor_cdata(lenet_model_param(m, 0))[k], 0.0f);
    lenet_model_free(m);
}
END_TEST

/* ---- initialisation ---- */

START_TEST(test_lecun_init_uses_each_units_fan_in)
{
    lenet_model *m = lenet5();
    ck_assert_lenet_ok(lenet_model_build(m, 1, 32, 32));
    ck_assert_lenet_ok(lenet_model_init(m, LENET_INIT_LECUN, 11));
    unsigned char table[96];
    lenet_lenet5_c3_table(table);
    const float *w = lenet_tensor_cdata(lenet_model_param(m, 4)), *b = lenet_tensor_cdata(lenet_model_param(m, 5));
    int c = 0;
    for (int o = 0; o < 16; o++) {
        int inputs = 0;
        for (int i = 0; i < 6; i++)
            inputs += table[o * 6 + i];
        float bound = 2.4f / (float)(inputs * 25), most = 0.0f;
        for (int k = 0; k < inputs * 25; k++, c++)
            most = fabsf(w[c * 1]) > most ? fabsf(w[c]) : most;
        ck_assert_msg(most <= bound && most > 0.8f * bound, "C3 map %d (%d inputs): max |w| %g, bound %g", o, inputs,
                      (double)most, (double)bound);
        ck_assert(fabsf(b[o]) <= bound);
    }
    ck_assert_int_eq(c, 1500);
    /* Subsampling: fan-in 4. */
    for (int k = 0; k < 6; k++)
        ck_assert(fabsf(lenet_tensor_cdata(lenet_model_param(m, 2))[k]) <= 0.6f);
    lenet_model_free(m);
}
END_TEST

/* ---- finite differences of every new layer ---- */

static void gradcheck_model(lenet_model *m, int n, int c, int h, int w, uint64_t seed)
{
    lenet_tensor *x = random_tensor(4, (int[]){n, c, h, w}, seed, -1.5f, 1.5f);
    ck_assert_lenet_ok(lenet_model_build(m, c, h, w));
    randomize_params(m, seed + 100, -0.7f, 0.7f);
    ck_assert_gradcheck(m, x, &(lenet_gradcheck_opts){.eps = 1e-2, .tol = 2e-2, .seed = seed});
    lenet_tensor_free(x);
    lenet_model_free(m);
}

START_TEST(test_scaled_tanh_backward_matches_finite_differences)
{
    gradcheck_model(MODEL(lenet_scaled_tanh()), 2, 2, 3, 3, 1);
}
END_TEST

START_TEST(test_subsampling_backward_matches_finite_differences)
{
    gradcheck_model(MODEL(lenet_subsampling(2, 2)), 2, 3, 6, 6, 2);
    gradcheck_model(MODEL(lenet_subsampling(3, 2)), 2, 2, 7, 7, 3); /* overlapping windows */
}
END_TEST

START_TEST(test_partial_conv_backward_matches_finite_differences)
{
    gradcheck_model(MODEL(lenet_lenet5_c3()), 2, 6, 7, 7, 4);
    const unsigned char table[3 * 2] = {1, 0, 1, 1, 0, 1};
    gradcheck_model(MODEL(lenet_partial_conv2d(3, 2, 3, table), lenet_scaled_tanh()), 3, 2, 5, 6, 5);
}
END_TEST

START_TEST(test_rbf_backward_matches_finite_differences)
{
    float centers[3 * 8];
    for (int k = 0; k < 24; k++)
        centers[k] = (k * 7 % 5) * 0.4f - 0.8f;
    lenet_model *m = MODEL(lenet_flatten(), lenet_euclidean_rbf(3));
    ck_assert_lenet_ok(lenet_model_build(m, 2, 2, 2));
    memcpy(lenet_tensor_data(lenet_model_param(m, 0)), centers, sizeof centers);
    lenet_tensor *x = random_tensor(4, (int[]){2, 2, 2, 2}, 6, -1, 1);
    ck_assert_gradcheck(m, x, &(lenet_gradcheck_opts){.eps = 1e-2, .tol = 1e-2, .seed = 6});
    lenet_tensor_free(x);
    lenet_model_free(m);
    /* LeNet-5's output: penalties near 84 leave float32 differences an absolute noise of ~1e-3, hence the floor. */
    m = MODEL(lenet_flatten(), lenet_linear(84), lenet_scaled_tanh(), lenet_lenet5_rbf());
    x = random_tensor(4, (int[]){2, 1, 3, 3}, 7, -1, 1);
    ck_assert_lenet_ok(lenet_model_build(m, 1, 3, 3));
    randomize_params(m, 107, -0.7f, 0.7f);
    ck_assert_gradcheck(m, x, &(lenet_gradcheck_opts){.eps = 1e-2, .tol = 2e-2, .floor = 0.5, .seed = 7});
    lenet_tensor_free(x);
    lenet_model_free(m);
}
END_TEST

START_TEST(test_whole_lenet5_backward_matches_finite_differences)
{
    /* C1 to F6 (the RBF is checked above: its large outputs would drown float32 differences here). */
    lenet_model *m = MODEL(lenet_conv2d(6, 5, 1, 0), lenet_scaled_tanh(), lenet_subsampling(2, 2), lenet_scaled_tanh(),
                           lenet_lenet5_c3(), lenet_scaled_tanh(), lenet_subsampling(2, 2), lenet_scaled_tanh(),
                           lenet_conv2d(120, 5, 1, 0), lenet_scaled_tanh(), lenet_flatten(), lenet_linear(84),
                           lenet_scaled_tanh());
    lenet_tensor *x = random_tensor(4, (int[]){1, 1, 32, 32}, 8, -0.1f, 1.175f);
    ck_assert_lenet_ok(lenet_model_build(m, 1, 32, 32));
    ck_assert_lenet_ok(lenet_model_init(m, LENET_INIT_LECUN, 8));
    ck_assert_gradcheck(m, x, &(lenet_gradcheck_opts){.eps = 1e-2, .tol = 3e-2, .floor = 1e-1, .seed = 8,
                                                     .max_per_tensor = 12});
    lenet_tensor_free(x);
    lenet_model_free(m);
}
END_TEST

/* ---- the criteria ---- */

static double map_reference(const float *y, int k, int label, double j)
{
    double sum = exp(-j);
    for (int i = 0; i < k; i++)
        sum += exp(-(double)y[i]);
    return y[label] + log(sum);
}

START_TEST(test_map_loss_value_gradient_and_curvature)
{
    const int n = 3, k = 10;
    lenet_tensor *y = random_tensor(2, (int[]){n, k}, 9, 0.0f, 6.0f);
    lenet_tensor *dy = lenet_tensor_create(2, (int[]){n, k}), *hy = lenet_tensor_create(2, (int[]){n, k});
    const int32_t labels[3] = {2, 0, 9};
    const float j = 0.7f;
    float loss;
    ck_assert_lenet_ok(lenet_rbf_loss(y, labels, LENET_RBF_LOSS_MAP, j, &loss, dy, hy));
    double want = 0.0;
    for (int s = 0; s < n; s++)
        want += map_reference(lenet_tensor_cdata(y) + s * k, k, labels[s], j) / n;
    ck_assert_double_eq_tol(loss, want, 1e-5);
    float again;
    ck_assert_lenet_ok(lenet_rbf_loss(y, labels, LENET_RBF_LOSS_MAP, j, &again, NULL, NULL));
    ck_assert_float_eq(again, loss);

    /* dE/dy and d2E/dy2 against central differences of the reference (in double). */
    for (int s = 0; s < n; s++) {
        for (int i = 0; i < k; i++) {
            float row[10];
            memcpy(row, lenet_tensor_cdata(y) + s * k, sizeof row);
            const double e = 1e-2;
            float base = row[i];
            row[i] = base + (float)e;
            double up = map_reference(row, k, labels[s], j) / n;
            row[i] = base - (float)e;
            double down = map_reference(row, k, labels[s], j) / n;
            row[i] = base;
            double mid = map_reference(row, k, labels[s], j) / n;
            double grad = (up - down) / (2 * e), curv = (up - 2 * mid + down) / (e * e);
            ck_assert_msg(rel_err(lenet_tensor_cdata(dy)[s * k + i], grad, 1e-3) < 1e-3, "dy[%d][%d] %g vs %g", s, i,
                          (double)lenet_tensor_cdata(dy)[s * k + i], grad);
            ck_assert_msg(rel_err(lenet_tensor_cdata(hy)[s * k + i], curv, 1e-3) < 2e-2, "hy[%d][%d] %g vs %g", s, i,
                          (double)lenet_tensor_cdata(hy)[s * k + i], curv);
            ck_assert(lenet_tensor_cdata(hy)[s * k + i] >= 0.0f);
        }
    }
    lenet_tensor_free(y);
    lenet_tensor_free(dy);
    lenet_tensor_free(hy);
}
END_TEST

START_TEST(test_map_loss_is_stable_for_large_penalties)
{
    lenet_tensor *y = lenet_tensor_create(2, (int[]){1, 10}), *dy = lenet_tensor_create(2, (int[]){1, 10});
    for (int i = 0; i < 10; i++)
        lenet_tensor_data(y)[i] = 900.0f + 10.0f * i;
    float loss;
    /* All penalties huge: log(e^-j + ...) ~ -j, so E ~ y_D - j. */
    ck_assert_lenet_ok(lenet_rbf_loss(y, (const int32_t[]){4}, LENET_RBF_LOSS_MAP, 0.1f, &loss, dy, NULL));
    ck_assert_double_eq_tol(loss, 940.0 - 0.1, 1e-3);
    ck_assert_float_eq_tol(lenet_tensor_cdata(dy)[4], 1.0f, 1e-6);
    /* A negative penalty below j still works (no overflow). */
    lenet_tensor_data(y)[0] = -80.0f;
    ck_assert_lenet_ok(lenet_rbf_loss(y, (const int32_t[]){0}, LENET_RBF_LOSS_MAP, 0.1f, &loss, dy, NULL));
    ck_assert_double_eq_tol(loss, 0.0, 1e-4);
    ck_assert(isfinite(lenet_tensor_cdata(dy)[0]));
    lenet_tensor_data(y)[3] = NAN;
    ck_assert_int_eq(lenet_rbf_loss(y, (const int32_t[]){0}, LENET_RBF_LOSS_MAP, 0.1f, &loss, dy, NULL), LENET_ENUMERIC);
    ck_assert_int_eq(lenet_rbf_loss(y, (const int32_t[]){10}, LENET_RBF_LOSS_MAP, 0.1f, &loss, dy, NULL), LENET_EINVAL);
    ck_assert_int_eq(lenet_rbf_loss(y, (const int32_t[]){0}, LENET_RBF_LOSS_MAP, INFINITY, &loss, dy, NULL), LENET_EINVAL);
    lenet_tensor_free(y);
    lenet_tensor_free(dy);
}
END_TEST

START_TEST(test_mse_criterion_is_the_mean_right_penalty)
{
    lenet_tensor *y = random_tensor(2, (int[]){2, 4}, 12, 0, 5), *dy = lenet_tensor_create(2, (int[]){2, 4});
    lenet_tensor *hy = lenet_tensor_create(2, (int[]){2, 4});
    const int32_t labels[2] = {3, 1};
    float loss;
    ck_assert_lenet_ok(lenet_rbf_loss(y, labels, LENET_RBF_LOSS_MSE, 0.0f, &loss, dy, hy));
    ck_assert_double_eq_tol(loss, (lenet_tensor_cdata(y)[3] + lenet_tensor_cdata(y)[5]) / 2.0, 1e-6);
    for (int k = 0; k < 8; k++) {
        ck_assert_float_eq(lenet_tensor_cdata(dy)[k], (k == 3 || k == 5) ? 0.5f : 0.0f);
        ck_assert_float_eq(lenet_tensor_cdata(hy)[k], 0.0f);
    }
    float again;
    ck_assert_lenet_ok(lenet_rbf_loss(y, labels, LENET_RBF_LOSS_MSE, 0.0f, &again, NULL, NULL));
    ck_assert_float_eq(again, loss);
    ck_assert_int_eq(lenet_rbf_loss(y, labels, (lenet_rbf_loss_kind)7, 0.0f, &loss, NULL, NULL), LENET_EINVAL);
    lenet_tensor_free(y);
    lenet_tensor_free(dy);
    lenet_tensor_free(hy);
}
END_TEST

/* ---- the diagonal Gauss-Newton pass against brute force ---- */

/* Exact Gauss-Newton diagonal sum_p sum_u D_pu (dy_pu / dw)^2 for every trainable parameter of m at x, with
 * the Jacobian by central differences of the outputs (in double), written into exact (arena-sized). */
static void brute_force_gn(lenet_model *m, const lenet_tensor *x, const lenet_tensor *d, double *exact)
{
    const lenet_tensor *y;
    size_t out = lenet_tensor_numel(d);
    double *plus = malloc(out * sizeof *plus);
    ck_assert_ptr_nonnull(plus);
    for (size_t t = 0; t < lenet_model_param_count(m); t++) {
        float *p = lenet_tensor_data(lenet_model_param(m, t));
        for (size_t i = 0; i < lenet_tensor_numel(lenet_model_param(m, t)); i++) {
            const float e = 1e-2f, saved = p[i];
            p[i] = saved + e;
            ck_assert_lenet_ok(lenet_model_forward(m, x, &y));
            for (size_t u = 0; u < out; u++)
                plus[u] = lenet_tensor_cdata(y)[u];
            p[i] = saved - e;
            ck_assert_lenet_ok(lenet_model_forward(m, x, &y));
            p[i] = saved;
            double sum = 0.0;
            for (size_t u = 0; u < out; u++) {
                double jac = (plus[u] - lenet_tensor_cdata(y)[u]) / (2.0 * e);
                sum += lenet_tensor_cdata(d)[u] * jac * jac;
            }
            exact[m->param_offset[t] + i] = sum;
        }
    }
    free(plus);
}

/* Runs lenet_model_backward_gn with hy = d and compares every trainable parameter with brute_force_gn. */
static void check_gn_is_exact(lenet_model *m, int n, int c, int h, int w, uint64_t seed)
{
    lenet_tensor *x = random_tensor(4, (int[]){n, c, h, w}, seed, -1.0f, 1.0f);
    ck_assert_lenet_ok(lenet_model_build(m, c, h, w));
    randomize_params(m, seed + 50, -0.5f, 0.5f);
    const lenet_tensor *y;
    ck_assert_lenet_ok(lenet_model_forward(m, x, &y));
    int shape[4];
    for (int a = 0; a < lenet_tensor_ndim(y); a++)
        shape[a] = lenet_tensor_dim(y, a);
    lenet_tensor *d = lenet_tensor_create(lenet_tensor_ndim(y), shape);
    lenet_test_fill(d, seed + 1, 0.2f, 2.0f);
    ck_assert_lenet_ok(lenet_model_zero_grad(m));
    ck_assert_lenet_ok(lenet_model_backward_gn(m, NULL, d));
    double *exact = calloc(m->arena_numel, sizeof *exact);
    ck_assert_ptr_nonnull(exact);
    brute_force_gn(m, x, d, exact);
    double worst = 0.0;
    size_t worst_at = 0, compared = 0;
    for (size_t t = 0; t < lenet_model_param_count(m); t++) {
        if (!m->param_trainable[t])
            continue;
        for (size_t i = 0; i < lenet_tensor_numel(lenet_model_param(m, t)); i++, compared++) {
            size_t k = m->param_offset[t] + i;
            double err = rel_err(m->grads[k], exact[k], 1e-3);
            ck_assert(m->grads[k] >= 0.0f);
            if (err > worst)
                worst = err, worst_at = k;
        }
    }
    ck_assert_uint_gt(compared, 0);
    ck_assert_msg(worst < 2e-2, "%s: Gauss-Newton %g vs brute force %g (error %g)", lenet_layer_name(m->layers[0]),
                  (double)m->grads[worst_at], exact[worst_at], worst);
    free(exact);
    lenet_tensor_free(d);
    lenet_tensor_free(x);
    lenet_model_free(m);
}

START_TEST(test_gauss_newton_of_one_layer_is_the_exact_gauss_newton_diagonal)
{
    /* One weighted layer and a nonlinearity: every connection of a shared weight reaches a different unit,
     * so summing over connections is exact. */
    check_gn_is_exact(MODEL(lenet_subsampling(2, 2), lenet_scaled_tanh()), 2, 2, 4, 6, 20);
    check_gn_is_exact(MODEL(lenet_lenet5_c3(), lenet_scaled_tanh()), 2, 6, 6, 7, 21);
    check_gn_is_exact(MODEL(lenet_conv2d(3, 3, 1, 1), lenet_scaled_tanh()), 2, 2, 4, 4, 22);
    check_gn_is_exact(MODEL(lenet_conv2d(2, 2, 2, 0), lenet_sigmoid()), 1, 2, 4, 4, 23);
}
END_TEST

START_TEST(test_gauss_newton_of_two_dense_layers_is_exact)
{
    /* Each weight feeds one unit, each unit one path per output: the back-propagated diagonal is exact through
     * Linear, ScaledTanh, Tanh, ReLU and Flatten (the generic passes of Linear and the elementwise layers). */
    check_gn_is_exact(MODEL(lenet_flatten(), lenet_linear(4), lenet_scaled_tanh(), lenet_linear(3), lenet_tanh()), 3,
                      1, 2, 3, 24);
    check_gn_is_exact(MODEL(lenet_flatten(), lenet_linear(5), lenet_relu(), lenet_linear(2), lenet_scaled_tanh()), 2,
                      2, 2, 2, 25);
}
END_TEST

/* Layer-level check of hx: for one layer alone, hx_j = sum_u hy_u (dy_u / dx_j)^2 (+ the RBF's own curvature). */
static void check_layer_hx(lenet_model *m, int c, int h, int w, uint64_t seed, bool with_dy)
{
    ck_assert_lenet_ok(lenet_model_build(m, c, h, w));
    randomize_params(m, seed, -0.8f, 0.8f);
    const lenet_layer *l = lenet_model_layer(m, lenet_model_layer_count(m) - 1);
    ck_assert(l->ops->backward_gn != NULL);
    size_t in = l->in_size, out = l->out_size;
    float *x = malloc(in * sizeof *x), *y = malloc(out * sizeof *y), *y2 = malloc(out * sizeof *y2);
    float *hy = malloc(out * sizeof *hy), *dy = malloc(out * sizeof *dy), *hx = malloc(in * sizeof *hx);
    float *grads[LENET_MAX_LAYER_PARAMS], *grad_mem = calloc(m->arena_numel + 1, sizeof(float));
    ck_assert(x && y && y2 && hy && dy && hx && grad_mem);
    for (int j = 0; j < l->n_params; j++)
        grads[j] = grad_mem + m->param_offset[(size_t)j + (l->n_params ? m->layer_first_param[lenet_model_layer_count(m) - 1] : 0)];
    lenet_tensor *xt = random_tensor(1, (int[]){(int)in}, seed + 1, -1.2f, 1.2f);
    memcpy(x, lenet_tensor_cdata(xt), in * sizeof *x);
    for (size_t u = 0; u < out; u++) {
        hy[u] = 0.3f + (float)((u * 37) % 11) * 0.1f;
        dy[u] = with_dy ? 0.05f + (float)((u * 13) % 7) * 0.02f : 0.0f;
    }
    size_t work = l->ops->workspace ? l->ops->workspace(l, 1) : 0;
    float *workspace = malloc((work + 1) * sizeof(float));
    lenet_pass p = {.n = 1, .x = x, .work = workspace};
    l->ops->forward(l, &p, y);
    p.y = y;
    p.dy = with_dy ? dy : NULL;
    p.grads = grads;
    l->ops->backward_gn(l, &p, hy, hx);
    double worst = 0.0;
    for (size_t j = 0; j < in; j++) {
        const float e = 1e-2f, saved = x[j];
        double sum = 0.0;
        float *y_up = malloc(out * sizeof *y_up);
        x[j] = saved + e;
        l->ops->forward(l, &p, y_up);
        x[j] = saved - e;
        l->ops->forward(l, &p, y2);
        x[j] = saved;
        for (size_t u = 0; u < out; u++) {
            double jac = ((double)y_up[u] - y2[u]) / (2.0 * e);
            sum += hy[u] * jac * jac;
            if (with_dy) /* + dy * d2y/dx2 */
                sum += dy[u] * ((double)y_up[u] - 2.0 * y[u] + y2[u]) / ((double)e * e);
        }
        free(y_up);
        double err = rel_err(hx[j], sum, 1e-2);
        worst = err > worst ? err : worst;
    }
    ck_assert_msg(worst < 3e-2, "%s: hx differs from the brute-force diagonal by %g", l->ops->name, worst);
    lenet_tensor_free(xt);
    free(x), free(y), free(y2), free(hy), free(dy), free(hx), free(grad_mem), free(workspace);
    lenet_model_free(m);
}

START_TEST(test_gauss_newton_input_curvature_of_each_layer_matches_brute_force)
{
    check_layer_hx(MODEL(lenet_subsampling(2, 2)), 2, 4, 4, 30, false);
    check_layer_hx(MODEL(lenet_subsampling(3, 1)), 1, 5, 5, 31, false);
    check_layer_hx(MODEL(lenet_lenet5_c3()), 6, 6, 6, 32, false);
    check_layer_hx(MODEL(lenet_scaled_tanh()), 2, 3, 3, 33, false);
    float centers[4 * 6];
    for (int k = 0; k < 24; k++)
        centers[k] = (k % 3) - 1.0f;
    lenet_model *rbf = MODEL(lenet_flatten(), lenet_euclidean_rbf(4));
    ck_assert_lenet_ok(lenet_model_build(rbf, 1, 2, 3));
    memcpy(lenet_tensor_data(lenet_model_param(rbf, 0)), centers, sizeof centers);
    check_layer_hx(rbf, 1, 2, 3, 34, true);
}
END_TEST

START_TEST(test_gauss_newton_through_rbf_mse_is_the_exact_hessian_of_f6)
{
    /* E = y_D = ||x - w_D||^2 is quadratic in F6's outputs x: d2E/dx2 = 2, so the pass from the criterion
     * (hy = 0, dy = onehot) must give F6's weights sum_units 2 (dx_unit / dw)^2 exactly. */
    lenet_model *m = MODEL(lenet_flatten(), lenet_linear(84), lenet_scaled_tanh(), lenet_lenet5_rbf());
    lenet_tensor *x = random_tensor(4, (int[]){2, 1, 2, 3}, 40, -1, 1);
    ck_assert_lenet_ok(lenet_model_build(m, 1, 2, 3));
    randomize_params(m, 41, -0.6f, 0.6f);
    const lenet_tensor *y;
    ck_assert_lenet_ok(lenet_model_forward(m, x, &y));
    lenet_tensor *dy = lenet_tensor_create(2, (int[]){2, 10}), *hy = lenet_tensor_create(2, (int[]){2, 10});
    const int32_t labels[2] = {7, 2};
    float loss;
    ck_assert_lenet_ok(lenet_rbf_loss(y, labels, LENET_RBF_LOSS_MSE, 0, &loss, dy, hy));
    ck_assert_lenet_ok(lenet_model_zero_grad(m));
    ck_assert_lenet_ok(lenet_model_backward_gn(m, dy, hy));
    /* Brute force through a model that stops at F6, with D = 2 / N on every unit. */
    lenet_model *f6 = MODEL(lenet_flatten(), lenet_linear(84), lenet_scaled_tanh());
    ck_assert_lenet_ok(lenet_model_build(f6, 1, 2, 3));
    for (size_t t = 0; t < 2; t++)
        ck_assert_lenet_ok(lenet_tensor_copy(lenet_model_param(f6, t), lenet_model_param(m, t)));
    lenet_tensor *d = lenet_tensor_create(2, (int[]){2, 84});
    for (int k = 0; k < 168; k++)
        lenet_tensor_data(d)[k] = 2.0f / 2;
    double *exact = calloc(f6->arena_numel, sizeof *exact);
    brute_force_gn(f6, x, d, exact);
    double worst = 0.0;
    for (size_t k = 0; k < f6->arena_numel && k < m->arena_numel; k++) {
        if (k >= f6->param_offset[1] + 84)
            break;
        double err = rel_err(m->grads[k], exact[k], 1e-3);
        worst = err > worst ? err : worst;
    }
    ck_assert_msg(worst < 2e-2, "F6 curvature through the RBF differs from the exact Hessian by %g", worst);
    free(exact);
    lenet_tensor_free(d);
    lenet_tensor_free(dy);
    lenet_tensor_free(hy);
    lenet_tensor_free(x);
    lenet_model_free(f6);
    lenet_model_free(m);
}
END_TEST

START_TEST(test_gauss_newton_refuses_layers_without_a_pass)
{
    lenet_model *m = MODEL(lenet_conv2d(2, 3, 1, 0), lenet_avgpool2d(3, 1), lenet_scaled_tanh());
    lenet_tensor *x = random_tensor(4, (int[]){1, 1, 6, 6}, 50, -1, 1);
    const lenet_tensor *y;
    ck_assert_int_eq(lenet_model_backward_gn(m, NULL, x), LENET_ESTATE); /* no forward yet */
    ck_assert_lenet_ok(lenet_model_forward(m, x, &y));
    lenet_tensor *hy = lenet_tensor_create(4, (int[]){1, 2, 2, 2});
    ck_assert_int_eq(lenet_model_backward_gn(m, NULL, hy), LENET_EUNSUPPORTED);
    ck_assert_msg(strstr(lenet_last_error(), "AvgPool2d") != NULL, "%s", lenet_last_error());
    lenet_tensor *wrong = lenet_tensor_create(2, (int[]){1, 8});
    ck_assert_int_eq(lenet_model_backward_gn(m, NULL, wrong), LENET_ESHAPE);
    ck_assert_int_eq(lenet_model_backward_gn(NULL, NULL, hy), LENET_EINVAL);
    lenet_tensor_free(wrong);
    lenet_tensor_free(hy);
    lenet_tensor_free(x);
    lenet_model_free(m);
}
END_TEST

/* ---- SDLM ---- */

START_TEST(test_sdlm_steps_by_epsilon_over_mu_plus_the_mean_curvature)
{
    lenet_model *m = MODEL(lenet_flatten(), lenet_linear(84), lenet_scaled_tanh(), lenet_lenet5_rbf());
    ck_assert_lenet_ok(lenet_model_build(m, 1, 2, 2));
    randomize_params(m, 60, -0.5f, 0.5f);
    lenet_optimizer *o = lenet_sdlm_create(m, 0.001f, 0.02f);
    ck_assert_ptr_nonnull(o);
    ck_assert_int_eq(lenet_optimizer_step(o), LENET_ESTATE); /* no estimate yet */

    /* A data set of 6 patterns; the estimate over all of them is the mean of the per-pattern diagonals. */
    lenet_tensor *x = random_tensor(4, (int[]){6, 1, 2, 2}, 61, -1, 1);
    const int32_t labels[6] = {0, 3, 5, 9, 1, 3};
    size_t numel = m->arena_numel;
    double *want = calloc(numel, sizeof *want);
    lenet_tensor *dy = lenet_tensor_create(2, (int[]){1, 10}), *hy = lenet_tensor_create(2, (int[]){1, 10});
    for (int s = 0; s < 6; s++) {
        lenet_tensor one;
        lenet__tensor_view(&one, 4, (int[]){1, 1, 2, 2}, lenet_tensor_data(x) + 4 * s);
        const lenet_tensor *y;
        ck_assert_lenet_ok(lenet_model_forward(m, &one, &y));
        ck_assert_lenet_ok(lenet_rbf_loss(y, &labels[s], LENET_RBF_LOSS_MAP, 0.1f, NULL, dy, hy));
        ck_assert_lenet_ok(lenet_model_zero_grad(m));
        ck_assert_lenet_ok(lenet_model_backward_gn(m, dy, hy));
        for (size_t k = 0; k < numel; k++)
            want[k] += m->grads[k] / 6.0;
    }
    ck_assert_lenet_ok(lenet_model_zero_grad(m));
    for (size_t k = 0; k < numel; k++)
        m->grads[k] = (float)(want[k] * 6.0);
    ck_assert_lenet_ok(lenet_sdlm_update_hessian_from_grads(o, 6.0, 1.0f));

    lenet_tensor *h = lenet_tensor_create(2, (int[]){84, 4});
    ck_assert_lenet_ok(lenet_sdlm_hessian(o, 0, h));
    for (size_t k = 0; k < 84 * 4; k++)
        ck_assert_double_eq_tol(lenet_tensor_cdata(h)[k], want[k], 1e-6 + 1e-5 * want[k]);

    /* One step: w -= epsilon / (mu + h) * g. */
    float before[84 * 4], grad[84 * 4];
    memcpy(before, lenet_tensor_cdata(lenet_model_param(m, 0)), sizeof before);
    lenet_test_fill(lenet_model_grad(m, 0), 62, -1, 1);
    memcpy(grad, lenet_tensor_cdata(lenet_model_grad(m, 0)), sizeof grad);
    ck_assert_lenet_ok(lenet_optimizer_step(o));
    for (size_t k = 0; k < 84 * 4; k++) {
        double step = 0.001 / (0.02 + lenet_tensor_cdata(h)[k]) * grad[k];
        ck_assert_double_eq_tol(lenet_tensor_cdata(lenet_model_param(m, 0))[k], before[k] - step, 1e-6);
    }
    lenet_optimizer_free(o);
    lenet_tensor_free(h);
    lenet_tensor_free(dy);
    lenet_tensor_free(hy);
    lenet_tensor_free(x);
    free(want);
    lenet_model_free(m);
}
END_TEST

START_TEST(test_sdlm_paper_schedule_and_arguments)
{
    static const float eps[20] = {5e-4f, 5e-4f, 2e-4f, 2e-4f, 2e-4f, 1e-4f, 1e-4f, 1e-4f, 5e-5f, 5e-5f,
                                  5e-5f, 5e-5f, 1e-5f, 1e-5f, 1e-5f, 1e-5f, 1e-5f, 1e-5f, 1e-5f, 1e-5f};
    for (int pass = 0; pass < 20; pass++)
        ck_assert_float_eq(lenet_sdlm_paper_epsilon(pass), eps[pass]);
    lenet_model *m = MODEL(lenet_flatten(), lenet_linear(2));
    ck_assert_ptr_null(lenet_sdlm_create(NULL, 1e-3f, 0.02f));
    ck_assert_ptr_null(lenet_sdlm_create(m, -1.0f, 0.02f));
    ck_assert_ptr_null(lenet_sdlm_create(m, 1e-3f, 0.0f));
    lenet_optimizer *o = lenet_sdlm_create(m, 1e-3f, 0.02f), *sgd = lenet_sgd_create(m, 0.1f, 0, 0);
    /* epsilon is SDLM's learning rate. */
    ck_assert_lenet_ok(lenet_optimizer_set_lr(o, 2e-4f));
    ck_assert_float_eq(lenet_optimizer_lr(o), 2e-4f);
    ck_assert_int_eq(lenet_sdlm_update_hessian_from_grads(sgd, 1.0, 1.0f), LENET_EINVAL);
    ck_assert_int_eq(lenet_sdlm_estimate_hessian(sgd, NULL, 10, LENET_RBF_LOSS_MAP, 0.1f), LENET_EINVAL);
    ck_assert_int_eq(lenet_sdlm_estimate_hessian(o, NULL, 10, LENET_RBF_LOSS_MAP, 0.1f), LENET_EINVAL);
    lenet_optimizer_free(sgd);
    lenet_optimizer_free(o);
    lenet_model_free(m);
}
END_TEST

START_TEST(test_sdlm_estimate_is_the_mean_gauss_newton_over_the_patterns)
{
    /* 7 patterns of 2x3 pixels; an estimate over 10 patterns wraps around the 7 (batches of 4: 4, 3, then 3 of
     * the next pass), so it must equal the mean of the per-pattern curvatures over those 10. */
    uint8_t pixels[7 * 6], labels[7];
    for (int k = 0; k < 42; k++)
        pixels[k] = (uint8_t)(k * 37 % 256);
    for (int k = 0; k < 7; k++)
        labels[k] = (uint8_t)(k * 3 % 10);
    idx_dir_create();
    idx_bytes ib = idx_images(7, 2, 3, pixels), lb = idx_labels(7, labels);
    const char *ip = idx_write("i.idx", ib.data, ib.size), *lp = idx_write("l.idx", lb.data, lb.size);
    lenet_dataset *d = lenet_dataset_open_idx(ip, lp);
    ck_assert_ptr_nonnull(d);
    lenet_model *m = MODEL(lenet_flatten(), lenet_linear(84), lenet_scaled_tanh(), lenet_lenet5_rbf());
    ck_assert_lenet_ok(lenet_model_build(m, 1, 2, 3));
    randomize_params(m, 80, -0.5f, 0.5f);

    double *want = calloc(m->arena_numel, sizeof *want);
    lenet_tensor *dy = lenet_tensor_create(2, (int[]){1, 10}), *hy = lenet_tensor_create(2, (int[]){1, 10});
    lenet_tensor *x = lenet_tensor_create(4, (int[]){1, 1, 2, 3});
    for (int p = 0; p < 10; p++) {
        size_t i = (size_t)(p % 7);
        const lenet_tensor *y;
        int32_t label = lenet_dataset_label(d, i);
        ck_assert_lenet_ok(lenet_dataset_image(d, i, lenet_tensor_data(x)));
        ck_assert_lenet_ok(lenet_model_forward(m, x, &y));
        ck_assert_lenet_ok(lenet_rbf_loss(y, &label, LENET_RBF_LOSS_MAP, 0.3f, NULL, dy, hy));
        ck_assert_lenet_ok(lenet_model_zero_grad(m));
        ck_assert_lenet_ok(lenet_model_backward_gn(m, dy, hy));
        for (size_t k = 0; k < m->arena_numel; k++)
            want[k] += m->grads[k] / 10.0;
    }
    lenet_optimizer *o = lenet_sdlm_create(m, 1e-3f, 0.02f);
    lenet_iter *it = lenet_iter_create(d, 4, false, 0);
    ck_assert_lenet_ok(lenet_sdlm_estimate_hessian(o, it, 10, LENET_RBF_LOSS_MAP, 0.3f));
    for (size_t k = 0; k < m->arena_numel; k++)
        ck_assert_float_eq(m->grads[k], 0.0f); /* left zeroed */
    lenet_tensor *h = lenet_tensor_create(1, (int[]){84 * 6});
    ck_assert_lenet_ok(lenet_sdlm_hessian(o, 0, h));
    for (size_t k = 0; k < 84 * 6; k++)
        ck_assert_double_eq_tol(lenet_tensor_cdata(h)[k], want[k], 1e-6 + 1e-4 * want[k]);

    /* The running form blends: h <- (1 - g) h + g * grads / count. */
    lenet_test_fill(lenet_model_grad(m, 0), 81, 0.0f, 2.0f);
    float fresh[84 * 6];
    memcpy(fresh, lenet_tensor_cdata(lenet_model_grad(m, 0)), sizeof fresh);
    ck_assert_lenet_ok(lenet_sdlm_update_hessian_from_grads(o, 2.0, 0.25f));
    lenet_tensor *h2 = lenet_tensor_create(1, (int[]){84 * 6});
    ck_assert_lenet_ok(lenet_sdlm_hessian(o, 0, h2));
    for (size_t k = 0; k < 84 * 6; k++)
        ck_assert_double_eq_tol(lenet_tensor_cdata(h2)[k], 0.75 * lenet_tensor_cdata(h)[k] + 0.25 * fresh[k] / 2.0,
                                1e-6);
    ck_assert_int_eq(lenet_sdlm_update_hessian_from_grads(o, 1.0, 0.0f), LENET_EINVAL);
    ck_assert_int_eq(lenet_sdlm_update_hessian_from_grads(o, 0.0, 0.5f), LENET_EINVAL);

    lenet_tensor_free(h);
    lenet_tensor_free(h2);
    lenet_tensor_free(x);
    lenet_tensor_free(dy);
    lenet_tensor_free(hy);
    free(want);
    lenet_iter_free(it);
    lenet_optimizer_free(o);
    lenet_model_free(m);
    lenet_dataset_free(d);
    idx_bytes_free(&ib);
    idx_bytes_free(&lb);
    idx_dir_remove();
}
END_TEST

/* ---- checkpoints ---- */

START_TEST(test_lenet5_round_trips_through_a_checkpoint)
{
    char path[] = "/tmp/lenet5_test_XXXXXX";
    int fd = mkstemp(path);
    ck_assert_int_ge(fd, 0);
    close(fd);
    lenet_model *m = lenet5();
    ck_assert_lenet_ok(lenet_model_build(m, 1, 32, 32));
    ck_assert_lenet_ok(lenet_model_init(m, LENET_INIT_LECUN, 70));
    ck_assert_lenet_ok(lenet_model_save(m, path));
    lenet_model *back = lenet_model_load(path);
    ck_assert_msg(back != NULL, "%s", lenet_last_error());
    ck_assert_uint_eq(lenet_model_layer_count(back), 14);
    ck_assert_uint_eq(lenet_model_param_numel(back), 60000);
    lenet_tensor *x = random_tensor(4, (int[]){2, 1, 32, 32}, 71, -0.1f, 1.175f);
    lenet_tensor *y1 = lenet_tensor_create(2, (int[]){2, 10}), *y2 = lenet_tensor_create(2, (int[]){2, 10});
    ck_assert_lenet_ok(lenet_model_predict(m, x, y1));
    ck_assert_lenet_ok(lenet_model_predict(back, x, y2));
    ck_assert_mem_eq(lenet_tensor_cdata(y1), lenet_tensor_cdata(y2), 20 * sizeof(float));
    /* The rebuilt layers are the same kinds with the same arguments: C3's table and the RBF bitmaps too. */
    for (size_t i = 0; i < 14; i++) {
        const lenet_layer *a = lenet_model_layer(m, i), *b = lenet_model_layer(back, i);
        ck_assert_str_eq(lenet_layer_name(a), lenet_layer_name(b));
        ck_assert_int_eq(a->n_args, b->n_args);
        for (int k = 0; k < a->n_args; k++)
            ck_assert_double_eq(a->args[k], b->args[k]);
    }
    ck_assert_lenet_ok(lenet_model_init(back, LENET_INIT_PYTORCH, 1));
    ck_assert_mem_eq(lenet_tensor_cdata(lenet_model_param(back, lenet_model_param_count(back) - 1)),
                     lenet_tensor_cdata(lenet_model_param(m, lenet_model_param_count(m) - 1)), 840 * sizeof(float));
    lenet_tensor_free(x);
    lenet_tensor_free(y1);
    lenet_tensor_free(y2);
    lenet_model_free(back);
    lenet_model_free(m);
    remove(path);
}
END_TEST

static Suite *lenet5_suite(void)
{
    Suite *s = suite_create("lenet5");
    TCase *t = tcase_create("lenet5");
    tcase_set_timeout(t, 60);
    tcase_add_test(t, test_lenet5_has_the_papers_parameters_and_connections_per_layer);
    tcase_add_test(t, test_lenet5_layer_names_and_output_shapes);
    tcase_add_test(t, test_c3_table_is_table_one_of_the_paper);
    tcase_add_test(t, test_partial_conv_reads_only_the_connected_maps);
    tcase_add_test(t, test_scaled_tanh_is_a_tanh_of_s_a);
    tcase_add_test(t, test_subsampling_scales_window_sums_per_map);
    tcase_add_test(t, test_rbf_outputs_squared_distances_to_fixed_bitmaps);
    tcase_add_test(t, test_lecun_init_uses_each_units_fan_in);
    tcase_add_test(t, test_scaled_tanh_backward_matches_finite_differences);
    tcase_add_test(t, test_subsampling_backward_matches_finite_differences);
    tcase_add_test(t, test_partial_conv_backward_matches_finite_differences);
    tcase_add_test(t, test_rbf_backward_matches_finite_differences);
    tcase_add_test(t, test_whole_lenet5_backward_matches_finite_differences);
    tcase_add_test(t, test_map_loss_value_gradient_and_curvature);
    tcase_add_test(t, test_map_loss_is_stable_for_large_penalties);
    tcase_add_test(t, test_mse_criterion_is_the_mean_right_penalty);
    tcase_add_test(t, test_gauss_newton_of_one_layer_is_the_exact_gauss_newton_diagonal);
    tcase_add_test(t, test_gauss_newton_of_two_dense_layers_is_exact);
    tcase_add_test(t, test_gauss_newton_input_curvature_of_each_layer_matches_brute_force);
    tcase_add_test(t, test_gauss_newton_through_rbf_mse_is_the_exact_hessian_of_f6);
    tcase_add_test(t, test_gauss_newton_refuses_layers_without_a_pass);
    tcase_add_test(t, test_sdlm_steps_by_epsilon_over_mu_plus_the_mean_curvature);
    tcase_add_test(t, test_sdlm_paper_schedule_and_arguments);
    tcase_add_test(t, test_sdlm_estimate_is_the_mean_gauss_newton_over_the_patterns);
    tcase_add_test(t, test_lenet5_round_trips_through_a_checkpoint);
    suite_add_tcase(s, t);
    return s;
}

int main(void)
{
    return lenet_test_run(lenet5_suite());
}
