/* Thread count and instruction-set paths: training must be bit-identical for 1, 2 and 4 threads, and every vector
 * kernel table this CPU supports must agree with the plain reference loops. */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>
#include <string.h>

#include "kernels/kernels.h"
#include "model/internal.h"
#include "testutil.h"

/* Trains a few SGD steps with momentum on a fixed batch whose size is not a multiple of the chunk size and returns
 * a copy of the parameters. */
static float *train_with_threads(int threads, bool modern, size_t *numel)
{
    ck_assert_lenet_ok(lenet_threads_set(threads));
    lenet_model *m = lenet_model_create();
    lenet_layer *d2l[] = {lenet_conv2d(6, 5, 1, 2), lenet_sigmoid(), lenet_avgpool2d(2, 2),
                          lenet_conv2d(16, 5, 1, 0), lenet_sigmoid(), lenet_avgpool2d(2, 2), lenet_flatten(),
                          lenet_linear(120), lenet_sigmoid(), lenet_linear(84), lenet_sigmoid(), lenet_linear(10)};
    lenet_layer *mod[] = {lenet_conv2d(6, 5, 1, 2), lenet_relu(), lenet_maxpool2d(2, 2), lenet_conv2d(16, 5, 2, 1),
                          lenet_tanh(), lenet_maxpool2d(3, 2), lenet_flatten(), lenet_linear(32), lenet_relu(),
                          lenet_linear(10)};
    lenet_layer **layers = modern ? mod : d2l;
    size_t count = modern ? sizeof mod / sizeof mod[0] : sizeof d2l / sizeof d2l[0];
    for (size_t i = 0; i < count; i++)
        ck_assert_lenet_ok(lenet_model_add(m, layers[i]));
    if (!modern) /* the unused array's layers are never added: free them */
        for (size_t i = 0; i < sizeof mod / sizeof mod[0]; i++)
            lenet_layer_free(mod[i]);
    else
        for (size_t i = 0; i < sizeof d2l / sizeof d2l[0]; i++)
            lenet_layer_free(d2l[i]);
    ck_assert_lenet_ok(lenet_model_build(m, 1, 28, 28));
    ck_assert_lenet_ok(lenet_model_init(m, LENET_INIT_XAVIER_UNIFORM, 7));
    lenet_optimizer *o = lenet_sgd_create(m, 0.5f, 0.9f, 1e-3f);
    ck_assert_ptr_nonnull(o);
    const int batch = 75;
    lenet_tensor *x = lenet_tensor_create(4, (int[]){batch, 1, 28, 28});
    lenet_tensor *dy = lenet_tensor_create(2, (int[]){batch, 10});
    int32_t labels[75];
    for (int i = 0; i < batch; i++)
        labels[i] = (i * 7) % 10;
    lenet_test_fill(x, 11, 0.0f, 1.0f);
    for (int step = 0; step < 4; step++) {
        const lenet_tensor *y;
        float loss;
        ck_assert_lenet_ok(lenet_model_forward(m, x, &y));
        ck_assert_lenet_ok(lenet_cross_entropy(y, labels, &loss, dy));
        ck_assert_lenet_ok(lenet_model_zero_grad(m));
        ck_assert_lenet_ok(lenet_model_backward(m, dy));
        ck_assert_lenet_ok(lenet_optimizer_step(o));
    }
    *numel = m->arena_numel;
    float *copy = malloc(m->arena_numel * sizeof(float));
    memcpy(copy, m->params, m->arena_numel * sizeof(float));
    lenet_tensor_free(x);
    lenet_tensor_free(dy);
    lenet_optimizer_free(o);
    lenet_model_free(m);
    return copy;
}

static void check_thread_counts_agree(bool modern)
{
    size_t n1, n2, n4;
    float *one = train_with_threads(1, modern, &n1);
    float *two = train_with_threads(2, modern, &n2);
    float *four = train_with_threads(4, modern, &n4);
    ck_assert_uint_eq(n1, n2);
    ck_assert_uint_eq(n1, n4);
    ck_assert_msg(memcmp(one, two, n1 * sizeof(float)) == 0, "1 and 2 threads differ");
    ck_assert_msg(memcmp(one, four, n1 * sizeof(float)) == 0, "1 and 4 threads differ");
    bool changed = false;
    for (size_t i = 0; i < n1 && !changed; i++)
        changed = one[i] != 0.0f;
    ck_assert(changed);
    free(one);
    free(two);
    free(four);
    lenet_threads_set(0);
}

START_TEST(test_d2l_training_is_bit_identical_for_1_2_and_4_threads)
{
    check_thread_counts_agree(false);
}
END_TEST

START_TEST(test_modern_training_is_bit_identical_for_1_2_and_4_threads)
{
    check_thread_counts_agree(true);
}
END_TEST

START_TEST(test_set_num_threads_validates_and_restores_default)
{
    ck_assert_int_eq(lenet_threads_set(-1), LENET_EINVAL);
    ck_assert_msg(strstr(lenet_last_error(), "-1") != NULL, "message: %s", lenet_last_error());
    ck_assert_int_eq(lenet_threads_set(100000), LENET_EINVAL);
    ck_assert_lenet_ok(lenet_threads_set(3));
    ck_assert_int_eq(lenet_threads_get(), 3);
    ck_assert_lenet_ok(lenet_threads_set(0));
    ck_assert_int_ge(lenet_threads_get(), 1);
}
END_TEST

/* The worker threads do not survive fork(): a child that trains must make its own instead of waiting forever. */
START_TEST(test_a_forked_child_trains_on_its_own_threads)
{
    size_t n;
    free(train_with_threads(2, false, &n)); /* the parent's pool now exists */
    fflush(NULL);
    pid_t child = fork();
    ck_assert_int_ge(child, 0);
    if (child == 0) {
        alarm(60); /* a hang fails the test instead of stalling the suite */
        size_t m;
        float *p = train_with_threads(2, false, &m);
        int ok = p && m == n;
        free(p);
        /* exit, not _exit: the library's destructor joins the child's workers, so valgrind sees no leak there. */
        exit(ok ? 0 : 1);
    }
    int status = 0;
    ck_assert_int_eq(waitpid(child, &status, 0), child);
    ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 0, "child status %d", status);
}
END_TEST

static const char *const isas[] = {"generic", "avx2", "avx512"};

static void fill_plain(float *p, size_t n, unsigned seed)
{
    for (size_t i = 0; i < n; i++) {
        seed = seed * 1103515245u + 12345u;
        p[i] = (float)((seed >> 8) & 0xffff) / 32768.0f - 1.0f;
    }
}

/* Forward and weight-gradient kernels of one table against lenet__conv2d_ref and a naive correlation. */
static void check_conv_kernels(const lenet_kernels *kern)
{
    static const int geoms[][6] = {
        /* c, h, k, s, p, oc */
        {1, 28, 5, 1, 2, 6}, {6, 14, 5, 1, 0, 16}, {3, 9, 3, 2, 1, 5}, {2, 7, 7, 1, 0, 17}, {4, 11, 2, 3, 2, 9},
    };
    for (size_t gi = 0; gi < sizeof geoms / sizeof geoms[0]; gi++) {
        lenet_conv_geom g = {.c = geoms[gi][0], .h = geoms[gi][1], .w = geoms[gi][1] + 1, .k = geoms[gi][2],
                             .s = geoms[gi][3], .p = geoms[gi][4]};
        const int oc = geoms[gi][5], vw = kern->vector_width, ocpad = (oc + vw - 1) / vw * vw;
        g.oh = (g.h + 2 * g.p - g.k) / g.s + 1;
        g.ow = (g.w + 2 * g.p - g.k) / g.s + 1;
        const size_t taps = (size_t)g.c * g.k * g.k, xsize = (size_t)g.c * g.h * g.w;
        const size_t psize = (size_t)g.c * (g.h + 2 * g.p) * (g.w + 2 * g.p), osize = (size_t)oc * g.oh * g.ow;
        float *x = malloc(xsize * sizeof(float)), *xp = malloc(psize * sizeof(float));
        float *w = malloc(taps * oc * sizeof(float)), *b = malloc(oc * sizeof(float));
        float *wpack = malloc((taps + 1) * ocpad * sizeof(float));
        float *y = malloc(osize * sizeof(float)), *ref = malloc(osize * sizeof(float));
        float *dyt = calloc((size_t)g.oh * g.ow * ocpad, sizeof(float)), *dw = calloc((taps + 1) * ocpad, sizeof(float));
        fill_plain(x, xsize, 1);
        fill_plain(w, taps * oc, 2);
        fill_plain(b, oc, 3);
        lenet__conv_pack_weights(oc, g.c, g.k, vw, w, b, wpack);
        lenet__conv_pad_input(&g, x, xp);
        kern->conv_forward(&g, oc, xp, wpack, y);
        lenet__conv2d_ref(&g, oc, x, w, b, ref);
        double worst = lenet_test_max_rel_err(y, ref, osize, 1.0);
        ck_assert_msg(worst < 1e-5, "%s conv forward geometry %zu: worst relative error %g", kern->isa, gi, worst);

        /* dW[o][t] = sum over pixels of dy[o][pixel] * x at tap t: with dy = y as the gradient. */
        for (int o = 0; o < oc; o++)
            for (int q = 0; q < g.oh * g.ow; q++)
                dyt[(size_t)q * ocpad + o] = ref[(size_t)o * g.oh * g.ow + q];
        kern->conv_grad_weight(&g, oc, 1, xp, dyt, dw);
        for (int o = 0; o < oc; o++) {
            for (int ci = 0; ci < g.c; ci++) {
                for (int ky = 0; ky < g.k; ky++) {
                    for (int kx = 0; kx < g.k; kx++) {
                        double expect = 0.0;
                        for (int oy = 0; oy < g.oh; oy++)
                            for (int ox = 0; ox < g.ow; ox++)
                                expect += (double)ref[((size_t)o * g.oh + oy) * g.ow + ox] *
                                          xp[((size_t)ci * (g.h + 2 * g.p) + oy * g.s + ky) * (g.w + 2 * g.p) +
                                             ox * g.s + kx];
                        size_t t = ((size_t)ci * g.k + ky) * g.k + kx;
                        float got = dw[t * ocpad + o];
                        ck_assert_msg(fabs(got - expect) <= 1e-4 * (1.0 + fabs(expect)),
                                      "%s conv weight gradient geometry %zu: %g vs %g", kern->isa, gi, got, expect);
                    }
                }
            }
        }
        if (g.s == 1) {
            /* The row-vectorized kernels on the same data: rows padded to the vector width plus the kernel. */
            const int rw = kern->row_width, stride = (g.ow + rw - 1) / rw * rw + g.k - 1, dstride = stride - g.k + 1;
            const int hp = g.h + 2 * g.p;
            float *xr = malloc((size_t)g.c * hp * stride * sizeof(float) + 64);
            float *dyr = calloc((size_t)oc * g.oh * dstride + 16, sizeof(float));
            float *grad = calloc(taps * oc, sizeof(float));
            lenet__conv_pad_input_rows(&g, x, xr, stride);
            memset(y, 0, osize * sizeof(float));
            kern->conv_forward_rows(&g, oc, xr, stride, w, b, y);
            worst = lenet_test_max_rel_err(y, ref, osize, 1.0);
            ck_assert_msg(worst < 1e-5, "%s row conv forward geometry %zu: worst relative error %g", kern->isa, gi,
                          worst);
            for (int r = 0; r < oc * g.oh; r++)
                memcpy(dyr + (size_t)r * dstride, ref + (size_t)r * g.ow, (size_t)g.ow * sizeof(float));
            kern->conv_grad_weight_rows(&g, oc, 1, xr, stride, dyr, dstride, grad);
            for (int o = 0; o < oc; o++)
                for (size_t t = 0; t < taps; t++)
                    ck_assert_msg(fabs(grad[(size_t)o * taps + t] - dw[t * ocpad + o]) <=
                                      1e-4 * (1.0 + fabs(dw[t * ocpad + o])),
                                  "%s row weight gradient geometry %zu differs from the channel kernel", kern->isa, gi);
            free(xr);
            free(dyr);
            free(grad);
        }
        free(x);
        free(xp);
        free(w);
        free(b);
        free(wpack);
        free(y);
        free(ref);
        free(dyt);
        free(dw);
    }
}

START_TEST(test_every_supported_kernel_path_matches_the_reference)
{
    int tested = 0;
    for (size_t i = 0; i < sizeof isas / sizeof isas[0]; i++) {
        if (!lenet__kernels_force(isas[i]))
            continue;
        const lenet_kernels *kern = lenet__kernels();
        ck_assert_str_eq(kern->isa, isas[i]);
        check_conv_kernels(kern);
        float x[1003], y[1003], ref[1003];
        for (int j = 0; j < 1003; j++)
            x[j] = -120.0f + 0.24f * (float)j;
        x[0] = -1e30f;
        x[1] = 1e30f;
        kern->sigmoid_forward(1003, x, y);
        lenet__sigmoid_forward_ref(1003, x, ref);
        for (int j = 0; j < 1003; j++)
            ck_assert_msg(fabsf(y[j] - ref[j]) <= 4e-7f + 4e-7f * ref[j], "%s sigmoid(%g) = %g, libm %g", kern->isa,
                          x[j], y[j], ref[j]);
        x[5] = NAN;
        kern->sigmoid_forward(7, x, y);
        ck_assert(isnan(y[5]));
        tested++;
    }
    ck_assert(lenet__kernels_force(NULL));
    ck_assert_int_ge(tested, 1);
    ck_assert(!lenet__kernels_force("sse9"));
}
END_TEST

int main(void)
{
    Suite *s = suite_create("threads");
    TCase *tc = tcase_create("threads");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_set_num_threads_validates_and_restores_default);
    tcase_add_test(tc, test_d2l_training_is_bit_identical_for_1_2_and_4_threads);
    tcase_add_test(tc, test_modern_training_is_bit_identical_for_1_2_and_4_threads);
#ifndef __SANITIZE_THREAD__ /* ThreadSanitizer cannot start threads after a multi-threaded fork */
    tcase_add_test(tc, test_a_forked_child_trains_on_its_own_threads);
#endif
    tcase_add_test(tc, test_every_supported_kernel_path_matches_the_reference);
    suite_add_tcase(s, tc);
    return lenet_test_run(s);
}
