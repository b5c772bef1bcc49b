/* Finite-difference gradient checker: see gradcheck.h. */
#include "gradcheck.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model/internal.h"

/* ---- dL/dx through the layer vtable ---- */

/* The engine's backward with the input gradient too (lenet__model_backward_input: whole-batch layers and all),
 * after the last forward; the model's gradients are put back as they were. */
static lenet_status engine_input_grad(lenet_model *m, const float *dy, float *dx)
{
    float *saved = malloc((m->arena_numel ? m->arena_numel : 1) * sizeof *saved);
    if (!saved)
        return LENET_ENOMEM;
    memcpy(saved, m->grads, m->arena_numel * sizeof *saved);
    lenet__model_backward_input(m, dy, dx);
    memcpy(m->grads, saved, m->arena_numel * sizeof *saved);
    free(saved);
    return LENET_OK;
}

static bool same_shape(const lenet_tensor *a, const lenet_tensor *b)
{
    if (lenet_tensor_ndim(a) != lenet_tensor_ndim(b))
        return false;
    for (int d = 0; d < lenet_tensor_ndim(a); d++)
        if (lenet_tensor_dim(a, d) != lenet_tensor_dim(b, d))
            return false;
    return true;
}

lenet_status lenet_test_input_grad(lenet_model *m, const lenet_tensor *x, const lenet_tensor *dy, lenet_tensor *dx)
{
    if (!m || !x || !dy || !dx)
        return LENET_EINVAL;
    const lenet_tensor *y;
    lenet_status st = lenet_model_forward(m, x, &y); /* builds and validates x */
    if (st != LENET_OK)
        return st;
    if (!same_shape(dy, y) || !same_shape(dx, x))
        return LENET_ESHAPE;
    return engine_input_grad(m, lenet_tensor_cdata(dy), lenet_tensor_data(dx));
}

/* ---- the checker ---- */

typedef struct checker {
    lenet_model *m;
    lenet_tensor *x;       /* private copy of the input, perturbed in place */
    const lenet_tensor *w; /* loss weights, the shape of the output */
    lenet_gradcheck_opts opts;
    lenet_gradcheck_report *report;
    double loss0;
    lenet_rng rng;
} checker;

static lenet_status loss_at(checker *c, double *loss)
{
    const lenet_tensor *y;
    lenet_status st = lenet_model_forward(c->m, c->x, &y);
    if (st != LENET_OK)
        return st;
    const float *yd = lenet_tensor_cdata(y), *wd = lenet_tensor_cdata(c->w);
    double sum = 0.0;
    for (size_t i = 0; i < lenet_tensor_numel(y); i++)
        sum += (double)wd[i] * (double)yd[i];
    *loss = sum;
    return LENET_OK;
}

/* |a - b| / max(|a|, |b|, floor); infinite for NaN. */
static double error_of(double a, double b, double floor)
{
    double err = fabs(a - b) / fmax(fmax(fabs(a), fabs(b)), floor);
    return isnan(err) ? INFINITY : err;
}

/* Compares analytic[i] with the central difference over v[i] for the sampled i; `label` names v. */
static lenet_status check_tensor(checker *c, float *v, const float *analytic, size_t numel, const char *label,
                                 double *worst_of_kind)
{
    size_t count = c->opts.max_per_tensor && c->opts.max_per_tensor < numel ? c->opts.max_per_tensor : numel;
    for (size_t j = 0; j < count; j++) {
        /* Element j of `count` strata, each of numel / count elements, at a random place in its stratum. */
        size_t lo = j * numel / count, hi = (j + 1) * numel / count;
        size_t i = count == numel ? j : lo + (size_t)lenet__rng_below(&c->rng, hi - lo);
        float saved = v[i];
        float up = (float)(saved + c->opts.eps), down = (float)(saved - c->opts.eps);
        double loss_up, loss_down;
        v[i] = up;
        lenet_status st = loss_at(c, &loss_up);
        v[i] = down;
        if (st == LENET_OK)
            st = loss_at(c, &loss_down);
        v[i] = saved;
        if (st != LENET_OK)
            return st;
        /* Divide by the steps actually taken, not the nominal 2 eps: float rounding of v +- eps. */
        double numeric = (loss_up - loss_down) / ((double)up - (double)down);
        double a = analytic[i];
        double err = error_of(a, numeric, c->opts.floor);
        if (err > c->opts.tol && c->opts.kinks) {
            /* A kink inside (v - eps, v + eps) spoils the central difference, but the one-sided difference on
             * the side without it still gives the derivative the layer computes. */
            double right = (loss_up - c->loss0) / ((double)up - saved);
            double left = (c->loss0 - loss_down) / ((double)saved - down);
            if (fmin(error_of(a, right, c->opts.floor), error_of(a, left, c->opts.floor)) <= c->opts.tol) {
                c->report->skipped++;
                continue;
            }
        }
        c->report->checked++;
        if (err > *worst_of_kind)
            *worst_of_kind = err;
        if (err > c->report->worst || c->report->checked == 1) {
            c->report->worst = err;
            c->report->analytic = a;
            c->report->numeric = numeric;
            snprintf(c->report->where, sizeof c->report->where, "%s[%zu]", label, i);
        }
    }
    return LENET_OK;
}

lenet_status lenet_test_gradcheck(lenet_model *m, const lenet_tensor *x, const lenet_gradcheck_opts *opts,
                                  lenet_gradcheck_report *report)
{
    if (!m || !x || !report)
        return LENET_EINVAL;
    memset(report, 0, sizeof *report);
    checker c = {.m = m, .report = report};
    if (opts)
        c.opts = *opts;
    if (c.opts.eps <= 0.0)
        c.opts.eps = 1e-2;
    if (c.opts.tol <= 0.0)
        c.opts.tol = 1e-2;
    if (c.opts.floor <= 0.0)
        c.opts.floor = 1e-2;
    report->tol = c.opts.tol;
    lenet__rng_seed(&c.rng, c.opts.seed);

    size_t n_params = 0;
    float **param_grads = NULL;
    lenet_tensor *w = NULL, *dx = NULL;
    const lenet_tensor *y;
    lenet_status st = lenet_model_forward(m, x, &y); /* builds the model and validates x */
    if (st != LENET_OK)
        return st;
    int shape[LENET_TENSOR_MAX_DIMS];
    for (int d = 0; d < lenet_tensor_ndim(y); d++)
        shape[d] = lenet_tensor_dim(y, d);
    int xshape[LENET_TENSOR_MAX_DIMS];
    for (int d = 0; d < lenet_tensor_ndim(x); d++)
        xshape[d] = lenet_tensor_dim(x, d);
    st = LENET_ENOMEM;
    w = lenet_tensor_create(lenet_tensor_ndim(y), shape);
    dx = lenet_tensor_create(lenet_tensor_ndim(x), xshape);
    c.x = lenet_tensor_create(lenet_tensor_ndim(x), xshape);
    n_params = lenet_model_param_count(m);
    param_grads = calloc(n_params ? n_params : 1, sizeof *param_grads);
    if (!w || !dx || !c.x || !param_grads)
        goto done;
    c.w = w;
    float *wd = lenet_tensor_data(w);
    for (size_t i = 0; i < lenet_tensor_numel(w); i++)
        wd[i] = 2.0f * lenet__rng_uniform(&c.rng) - 1.0f;
    if ((st = lenet_tensor_copy(c.x, x)) != LENET_OK)
        goto done;

    /* Analytic gradients: parameters through the model's own backward, the input through the layers. */
    if ((st = lenet_model_zero_grad(m)) != LENET_OK || (st = lenet_model_forward(m, c.x, &y)) != LENET_OK ||
        (st = lenet_model_backward(m, w)) != LENET_OK)
        goto done;
    st = LENET_ENOMEM;
    for (size_t t = 0; t < n_params; t++) {
        size_t numel = lenet_tensor_numel(lenet_model_grad(m, t));
        if (!(param_grads[t] = malloc(numel * sizeof(float))))
            goto done;
        memcpy(param_grads[t], lenet_tensor_cdata(lenet_model_grad(m, t)), numel * sizeof(float));
    }
    if ((st = lenet_test_input_grad(m, c.x, w, dx)) != LENET_OK || (st = loss_at(&c, &c.loss0)) != LENET_OK)
        goto done;

    if (!c.opts.skip_input) {
        st = check_tensor(&c, lenet_tensor_data(c.x), lenet_tensor_cdata(dx), lenet_tensor_numel(c.x), "input",
                          &report->worst_input);
        if (st != LENET_OK)
            goto done;
    }
    for (size_t t = 0; t < n_params && !c.opts.skip_params; t++) {
        lenet_tensor *p = lenet_model_param(m, t);
        st = check_tensor(&c, lenet_tensor_data(p), param_grads[t], lenet_tensor_numel(p),
                          lenet_model_param_name(m, t), &report->worst_param);
        if (st != LENET_OK)
            goto done;
    }
    report->passed = report->checked > 0 && report->worst <= c.opts.tol;
    if (getenv("LENET_GRADCHECK_VERBOSE"))
        fprintf(stderr, "gradcheck: %zu checked, %zu skipped, worst %.3g at %s (analytic %.7g, numeric %.7g); "
                        "input %.3g, parameters %.3g\n",
                report->checked, report->skipped, report->worst, report->where, report->analytic, report->numeric,
                report->worst_input, report->worst_param);
    st = LENET_OK;

done:
    for (size_t t = 0; param_grads && t < n_params; t++)
        free(param_grads[t]);
    free(param_grads);
    lenet_tensor_free(w);
    lenet_tensor_free(dx);
    lenet_tensor_free(c.x);
    return st;
}
