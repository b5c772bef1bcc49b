/* Learning-rate schedules: PyTorch's StepLR, CosineAnnealingLR and a LinearLR warm-up, in their closed forms,
 * applied by the optimizer before every step from its base lr and its count of steps or epochs. */
#include <assert.h>
#include <math.h>

#include "core/internal.h"
#include "optim/internal.h"

typedef enum schedule_kind { SCHEDULE_CONSTANT = 0, SCHEDULE_STEP = 1, SCHEDULE_COSINE = 2 } schedule_kind;

/* One flat description: an optional warm-up, then one kind. */
struct lenet_schedule {
    int warmup; /* 0: none */
    schedule_kind kind;
    int period;  /* StepLR step_size, CosineAnnealingLR T_max */
    float value; /* StepLR gamma, CosineAnnealingLR eta_min */
};

static lenet_schedule *schedule_new(schedule_kind kind, int period, float value)
{
    lenet_schedule *s = lenet__calloc(1, sizeof *s);
    if (!s)
        return lenet__oom("schedule"), NULL;
    s->kind = kind;
    s->period = period;
    s->value = value;
    return s;
}

lenet_schedule *lenet_schedule_constant(void)
{
    return schedule_new(SCHEDULE_CONSTANT, 0, 0.0f);
}

lenet_schedule *lenet_schedule_step(int step_size, float gamma)
{
    if (step_size < 1 || !(gamma >= 0.0f) || !isfinite(gamma))
        return lenet__fail_null(LENET_EINVAL, "schedule_step: step_size %d must be >= 1 and gamma %g finite and >= 0",
                                step_size, (double)gamma);
    return schedule_new(SCHEDULE_STEP, step_size, gamma);
}

lenet_schedule *lenet_schedule_cosine(int t_max, float eta_min)
{
    if (t_max < 1 || !(eta_min >= 0.0f) || !isfinite(eta_min))
        return lenet__fail_null(LENET_EINVAL, "schedule_cosine: t_max %d must be >= 1 and eta_min %g finite and >= 0",
                                t_max, (double)eta_min);
    return schedule_new(SCHEDULE_COSINE, t_max, eta_min);
}

lenet_schedule *lenet_schedule_warmup(int warmup, lenet_schedule *then)
{
    if (!then) {
        /* The inner constructor failed: keep its message. */
        lenet_status st = lenet__last_status();
        return st < 0 ? NULL : lenet__fail_null(LENET_EINVAL, "schedule_warmup: the schedule after it is NULL");
    }
    if (warmup < 1 || then->warmup != 0) {
        int inner = then->warmup;
        lenet_schedule_free(then);
        return warmup < 1 ? lenet__fail_null(LENET_EINVAL, "schedule_warmup: warmup %d must be >= 1", warmup)
                          : lenet__fail_null(LENET_EINVAL, "schedule_warmup: the schedule after it already has a "
                                                           "warm-up of %d", inner);
    }
    then->warmup = warmup;
    return then;
}

void lenet_schedule_free(lenet_schedule *s)
{
    lenet__free(s);
}

/* Closed forms, in double as PyTorch's Python floats:
 *   warm-up (count < w):  base * (count + 1) / w
 *   StepLR:               base * gamma^floor(c / step_size)
 *   CosineAnnealingLR:    eta_min + (base - eta_min) * (1 + cos(pi * c / T_max)) / 2
 * with c = count - w after the warm-up.  The cosine's argument is taken modulo 2 T_max (its period), which changes
 * nothing below 2 T_max and keeps it exact for any count. */
double lenet__schedule_lr(const lenet_schedule *s, double base_lr, unsigned long long count)
{
    const unsigned long long warmup = (unsigned long long)s->warmup;
    if (count < warmup)
        return base_lr * (double)(count + 1) / (double)warmup;
    const unsigned long long c = count - warmup;
    switch (s->kind) {
    case SCHEDULE_STEP:
        return base_lr * pow((double)s->value, (double)(c / (unsigned long long)s->period));
    case SCHEDULE_COSINE: {
        const double pi = 3.14159265358979323846; /* Python's math.pi */
        const double eta_min = s->value, t_max = s->period;
        const double phase = (double)(c % (2ULL * (unsigned long long)s->period));
        return eta_min + (base_lr - eta_min) * (1.0 + cos(pi * phase / t_max)) / 2.0;
    }
    case SCHEDULE_CONSTANT:
    default:
        return base_lr;
    }
}

float lenet_schedule_lr(const lenet_schedule *s, float base_lr, uint64_t count)
{
    return s ? lenet__lr_float(lenet__schedule_lr(s, base_lr, count)) : 0.0f;
}

/* ---- attached to an optimizer ---- */

lenet_status lenet_optimizer_set_schedule(lenet_optimizer *o, lenet_schedule *s, lenet_schedule_unit unit)
{
    lenet_status st;
    if (!s) {
        st = lenet__last_status();
        return st < 0 ? st : lenet__fail(LENET_EINVAL, "optimizer_set_schedule: schedule is NULL");
    }
    if (!o)
        st = lenet__fail(LENET_EINVAL, "optimizer_set_schedule: optimizer is NULL");
    else if (unit != LENET_SCHEDULE_PER_STEP && unit != LENET_SCHEDULE_PER_EPOCH)
        st = lenet__fail(LENET_EINVAL, "optimizer_set_schedule: unknown unit %d", (int)unit);
    else if (o->schedule)
        st = lenet__fail(LENET_ESTATE, "optimizer_set_schedule: the optimizer already has a schedule");
    else if (o->steps != 0 || o->epochs != 0)
        st = lenet__fail(LENET_ESTATE, "optimizer_set_schedule: attach the schedule before the first step (%llu "
                         "steps and %llu epochs are done)", o->steps, o->epochs);
    else
        st = LENET_OK;
    if (st != LENET_OK) {
        lenet_schedule_free(s);
        return st;
    }
    o->schedule = s;
    o->schedule_unit = unit;
    o->base_lr = o->lr;
    o->lr = lenet__lr_float(lenet__optimizer_scheduled_lr(o));
    return LENET_OK;
}

double lenet__optimizer_scheduled_lr(const lenet_optimizer *o)
{
    if (!o->schedule)
        return o->lr;
    return lenet__schedule_lr(o->schedule, o->base_lr,
                              o->schedule_unit == LENET_SCHEDULE_PER_EPOCH ? o->epochs : o->steps);
}

/* The schedule as settings: its unit, base lr, warm-up and kind, and the kind's two parameters.  Names are fixed
 * per kind, so a checkpoint with another kind has other names and is refused. */
void lenet__schedule_settings(const lenet_optimizer *o, lenet_optimizer_state *out)
{
    const lenet_schedule *s = o->schedule;
    if (!s)
        return;
    const char *names[6] = {"schedule_unit", "schedule_base_lr", "schedule_warmup", "schedule_kind", NULL, NULL};
    double values[6] = {(double)o->schedule_unit, (double)o->base_lr, (double)s->warmup, (double)s->kind, 0.0, 0.0};
    int n = 4;
    if (s->kind == SCHEDULE_STEP) {
        names[n] = "schedule_step_size", values[n++] = s->period;
        names[n] = "schedule_gamma", values[n++] = s->value;
    } else if (s->kind == SCHEDULE_COSINE) {
        names[n] = "schedule_t_max", values[n++] = s->period;
        names[n] = "schedule_eta_min", values[n++] = s->value;
    }
    assert(out->n_settings + n <= LENET_OPTIM_MAX_SETTINGS);
    for (int i = 0; i < n; i++) {
        out->setting_names[out->n_settings] = names[i];
        out->settings[out->n_settings++] = values[i];
    }
}
