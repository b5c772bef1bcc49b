/* Allocation-failure injection (issue 8).  For each operation below, the test makes the 1st, 2nd, ... N-th
 * allocation fail (the internal hook lenet__alloc_fail_at, never exported) until the operation completes without
 * reaching the failing one, and checks every time: the status is LENET_ENOMEM, lenet_last_error() says what
 * could not be allocated, the objects involved still work (the same operation succeeds when retried) or free
 * cleanly, and nothing leaks (this suite runs without fork, so ASan's leak checker and valgrind see it all).
 * Operations: building the d2l LeNet (constructors, add, build), a forward + backward + SGD step, prediction,
 * opening an IDX data set and iterating, train_epoch and evaluate on it, summary, and checkpoints: saving and
 * loading a model, loading weights, saving and restoring a training checkpoint. */
#define _POSIX_C_SOURCE 200809L
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <lenet/io.h>

#include "core/internal.h"
#include "testutil.h"

/* ---- a tiny IDX data set, written once per test in a private directory ---- */

static char dir[256], images_path[300], labels_path[300];
static char model_path[300], checkpoint_path[300], target_path[300];

static void put_be32(FILE *f, uint32_t v)
{
    const unsigned char b[4] = {(unsigned char)(v >> 24), (unsigned char)(v >> 16), (unsigned char)(v >> 8),
                                (unsigned char)v};
    ck_assert_uint_eq(fwrite(b, 1, 4, f), 4);
}

static void write_idx_files(uint32_t n)
{
    const char *tmp = getenv("TMPDIR");
    snprintf(dir, sizeof dir, "%s/lenet-allocfail-XXXXXX", tmp && *tmp ? tmp : "/tmp");
    ck_assert_ptr_nonnull(mkdtemp(dir));
    snprintf(images_path, sizeof images_path, "%s/images", dir);
    snprintf(labels_path, sizeof labels_path, "%s/labels", dir);
    snprintf(model_path, sizeof model_path, "%s/model.safetensors", dir);
    snprintf(checkpoint_path, sizeof checkpoint_path, "%s/train.ckpt", dir);
    snprintf(target_path, sizeof target_path, "%s/target.safetensors", dir);
    FILE *f = fopen(images_path, "wb");
    ck_assert_ptr_nonnull(f);
    put_be32(f, 0x00000803);
    put_be32(f, n);
    put_be32(f, 28);
    put_be32(f, 28);
    for (size_t i = 0; i < (size_t)n * 28 * 28; i++)
        fputc((int)((i * 2654435761u) >> 24), f);
    ck_assert_int_eq(fclose(f), 0);
    f = fopen(labels_path, "wb");
    ck_assert_ptr_nonnull(f);
    put_be32(f, 0x00000801);
    put_be32(f, n);
    for (uint32_t i = 0; i < n; i++)
        fputc((int)(i % 10), f);
    ck_assert_int_eq(fclose(f), 0);
}

static void remove_idx_files(void)
{
    unlink(images_path);
    unlink(labels_path);
    unlink(model_path);
    unlink(checkpoint_path);
    unlink(target_path);
    ck_assert_msg(rmdir(dir) == 0, "%s holds files nobody removed (a save left its temporary file?)", dir);
}

/* ---- the walker ---- */

/* What one walk needs: objects made without injection, the operation under injection, and after a failure a
 * check that the objects still work. */
typedef struct ctx {
    lenet_model *m;
    lenet_optimizer *o;
    lenet_dataset *d;
    lenet_iter *it;
    lenet_tensor *x, *y, *dy;
    int32_t labels[8];
    float *params; /* a copy of the parameters before the operation */
    size_t numel;
} ctx;

typedef struct scenario {
    const char *name;
    void (*setup)(ctx *c);
    lenet_status (*run)(ctx *c);
    void (*after_failure)(ctx *c); /* may be NULL: freeing is the check */
} scenario;

/* Distinct failure messages seen, over all scenarios: about one per allocation site. */
#define MAX_MESSAGES 256
static char messages[MAX_MESSAGES][160];
static size_t n_messages;
static size_t total_points;

static void remember_message(const char *msg)
{
    for (size_t i = 0; i < n_messages; i++)
        if (strncmp(messages[i], msg, sizeof messages[i] - 1) == 0)
            return;
    if (n_messages < MAX_MESSAGES)
        snprintf(messages[n_messages++], sizeof messages[0], "%s", msg);
}

static void free_ctx(ctx *c)
{
    lenet_iter_free(c->it);
    lenet_dataset_free(c->d);
    lenet_optimizer_free(c->o);
    lenet_model_free(c->m);
    lenet_tensor_free(c->x);
    lenet_tensor_free(c->y);
    lenet_tensor_free(c->dy);
    free(c->params);
    memset(c, 0, sizeof *c);
}

/* Walks N = 1, 2, ... and returns the number of allocations the operation makes when nothing fails. */
static size_t walk(const scenario *s)
{
    for (size_t n = 1;; n++) {
        ctx c = {0};
        if (s->setup)
            s->setup(&c);
        lenet_error_clear();
        lenet__alloc_fail_at(n);
        lenet_status st = s->run(&c);
        size_t made = lenet__alloc_fail_at(0);
        if (made < n) {
            /* The operation finished before allocation n: every point has been walked. */
            ck_assert_msg(st == LENET_OK, "%s: without a failure it returned %s: %s", s->name, lenet_status_str(st),
                          lenet_last_error());
            free_ctx(&c);
            ck_assert_msg(n > 1, "%s allocates nothing: the walk tests nothing", s->name);
            fprintf(stderr, "alloc-fail: %-28s %3zu allocation points\n", s->name, n - 1);
            total_points += n - 1;
            return n - 1;
        }
        ck_assert_msg(st == LENET_ENOMEM, "%s: allocation %zu failed but it returned %s (%s)", s->name, n,
                      lenet_status_str(st), lenet_last_error());
        ck_assert_msg(lenet_last_error()[0] != '\0', "%s: allocation %zu failed with no message", s->name, n);
        remember_message(lenet_last_error());
        if (s->after_failure)
            s->after_failure(&c);
        free_ctx(&c);
        ck_assert_msg(n < 10000, "%s: more than 10000 allocations", s->name);
    }
}

/* ---- building the d2l LeNet ---- */

static lenet_status add_d2l_layers(lenet_model *m)
{
    lenet_layer *layers[] = {
        lenet_conv2d(6, 5, 1, 2), lenet_sigmoid(), lenet_avgpool2d(2, 2), lenet_conv2d(16, 5, 1, 0),
        lenet_sigmoid(),          lenet_avgpool2d(2, 2), lenet_flatten(), lenet_linear(120),
        lenet_sigmoid(),          lenet_linear(84), lenet_sigmoid(), lenet_linear(10),
    };
    /* lenet_model_add takes every layer, also NULL ones and also after an earlier failure: the first error wins. */
    lenet_status first = LENET_OK;
    for (size_t i = 0; i < sizeof layers / sizeof layers[0]; i++) {
        lenet_status st = lenet_model_add(m, layers[i]);
        if (first == LENET_OK)
            first = st;
    }
    return first;
}

static lenet_status run_construct(ctx *c)
{
    c->m = lenet_model_create();
    if (!c->m)
        return lenet__last_status();
    return add_d2l_layers(c->m);
}

static void setup_unbuilt(ctx *c)
{
    c->m = lenet_model_create();
    ck_assert_ptr_nonnull(c->m);
    ck_assert_lenet_ok(add_d2l_layers(c->m));
}

static lenet_status run_build(ctx *c)
{
    return lenet_model_build(c->m, 1, 28, 28);
}

static void build_again(ctx *c)
{
    ck_assert_msg(!lenet_model_is_built(c->m), "a failed build left the model built");
    ck_assert_uint_eq(lenet_model_param_count(c->m), 0);
    ck_assert_lenet_ok(lenet_model_build(c->m, 1, 28, 28));
    ck_assert_uint_eq(lenet_model_param_numel(c->m), 61706);
}

static lenet_status run_summary(ctx *c)
{
    FILE *devnull = fopen("/dev/null", "w");
    ck_assert_ptr_nonnull(devnull);
    lenet_status st = lenet_model_summary(c->m, 1, 1, 28, 28, devnull);
    fclose(devnull);
    return st;
}

/* Summary builds the model first; if a later allocation fails the model may stay built, which is fine. */
static void summary_again(ctx *c)
{
    ck_assert_lenet_ok(run_summary(c));
    ck_assert(lenet_model_is_built(c->m));
}

/* ---- one training step by hand ---- */

static void setup_built(ctx *c)
{
    setup_unbuilt(c);
    ck_assert_lenet_ok(lenet_model_build(c->m, 1, 28, 28));
    ck_assert_lenet_ok(lenet_model_init(c->m, LENET_INIT_XAVIER_UNIFORM, 3));
    c->o = lenet_sgd_create(c->m, 0.1f, 0.9f, 1e-4f); /* momentum: its buffer is allocated at the first step */
    ck_assert_ptr_nonnull(c->o);
    c->x = lenet_tensor_create(4, (int[]){8, 1, 28, 28});
    ck_assert_ptr_nonnull(c->x);
    lenet_test_fill(c->x, 5, 0.0f, 1.0f);
    for (int i = 0; i < 8; i++)
        c->labels[i] = i % 10;
}

static lenet_status run_step(ctx *c)
{
    const lenet_tensor *logits;
    lenet_status st = lenet_model_forward(c->m, c->x, &logits);
    if (st != LENET_OK)
        return st;
    lenet_tensor_free(c->dy);
    c->dy = lenet_tensor_create(2, (int[]){8, 10});
    if (!c->dy)
        return lenet__last_status();
    float loss;
    st = lenet_cross_entropy(logits, c->labels, &loss, c->dy);
    if (st == LENET_OK)
        st = lenet_optimizer_zero_grad(c->o);
    if (st == LENET_OK)
        st = lenet_model_backward(c->m, c->dy);
    if (st == LENET_OK)
        st = lenet_optimizer_step(c->o);
    return st;
}

static void step_again(ctx *c)
{
    ck_assert_lenet_ok(run_step(c));
}

static lenet_status run_predict(ctx *c)
{
    lenet_tensor_free(c->y);
    c->y = lenet_tensor_create(2, (int[]){8, 10});
    if (!c->y)
        return lenet__last_status();
    lenet_status st = lenet_model_predict(c->m, c->x, c->y);
    if (st != LENET_OK)
        return st;
    int32_t classes[8];
    float probs[80];
    return lenet_model_classify(c->m, c->x, classes, probs);
}

static void predict_again(ctx *c)
{
    ck_assert_lenet_ok(run_predict(c));
}

/* ---- data and the training loop ---- */

static lenet_status run_open(ctx *c)
{
    c->d = lenet_dataset_open_idx(images_path, labels_path);
    if (!c->d)
        return lenet__last_status();
    c->it = lenet_iter_create(c->d, 8, true, 1);
    if (!c->it)
        return lenet__last_status();
    const lenet_tensor *images;
    const int32_t *labels;
    int count;
    return lenet_iter_next(c->it, &images, &labels, &count);
}

static void setup_training(ctx *c)
{
    setup_unbuilt(c); /* train_epoch builds it from the first batch: build's allocations are walked again */
    c->o = lenet_sgd_create(c->m, 0.1f, 0.5f, 0.0f);
    ck_assert_ptr_nonnull(c->o);
    c->d = lenet_dataset_open_idx(images_path, labels_path);
    ck_assert_ptr_nonnull(c->d);
    c->it = lenet_iter_create(c->d, 8, true, 1);
    ck_assert_ptr_nonnull(c->it);
}

static lenet_status run_train(ctx *c)
{
    lenet_metrics mt;
    lenet_status st = lenet_train_epoch(c->m, c->o, c->it, NULL, NULL, &mt);
    if (st == LENET_OK)
        st = lenet_evaluate(c->m, c->it, &mt);
    return st;
}

static void train_again(ctx *c)
{
    lenet_metrics mt;
    ck_assert_lenet_ok(lenet_train_epoch(c->m, c->o, c->it, NULL, NULL, &mt));
    ck_assert_lenet_ok(lenet_evaluate(c->m, c->it, &mt));
    ck_assert_uint_eq(mt.examples, 20);
}

/* ---- checkpoints ---- */

static void copy_params(ctx *c)
{
    c->numel = 0;
    for (size_t i = 0; i < lenet_model_param_count(c->m); i++)
        c->numel += lenet_tensor_numel(lenet_model_param(c->m, i));
    free(c->params);
    c->params = malloc(c->numel * sizeof *c->params);
    ck_assert_ptr_nonnull(c->params);
    size_t at = 0;
    for (size_t i = 0; i < lenet_model_param_count(c->m); i++) {
        const lenet_tensor *t = lenet_model_param(c->m, i);
        memcpy(c->params + at, lenet_tensor_cdata(t), lenet_tensor_numel(t) * sizeof(float));
        at += lenet_tensor_numel(t);
    }
}

static void assert_params_unchanged(ctx *c)
{
    size_t at = 0;
    for (size_t i = 0; i < lenet_model_param_count(c->m); i++) {
        const lenet_tensor *t = lenet_model_param(c->m, i);
        ck_assert_msg(memcmp(c->params + at, lenet_tensor_cdata(t), lenet_tensor_numel(t) * sizeof(float)) == 0,
                      "a failed load changed %s", lenet_model_param_name(c->m, i));
        at += lenet_tensor_numel(t);
    }
}

/* The file a save replaces: its bytes must survive a failed save. */
static const char old_content[] = "the previous file";

static void setup_save(ctx *c)
{
    setup_built(c);
    FILE *f = fopen(target_path, "wb");
    ck_assert_ptr_nonnull(f);
    ck_assert_uint_eq(fwrite(old_content, 1, sizeof old_content, f), sizeof old_content);
    ck_assert_int_eq(fclose(f), 0);
}

static lenet_status run_save(ctx *c)
{
    return lenet_model_save(c->m, target_path);
}

static void old_file_kept_and_save_again(ctx *c)
{
    char buf[64] = {0};
    FILE *f = fopen(target_path, "rb");
    ck_assert_ptr_nonnull(f);
    size_t got = fread(buf, 1, sizeof buf, f);
    fclose(f);
    ck_assert_msg(got == sizeof old_content && memcmp(buf, old_content, got) == 0,
                  "a failed save did not leave the previous file as it was");
    ck_assert_lenet_ok(run_save(c));
}

static lenet_status run_load(ctx *c)
{
    c->m = lenet_model_load(model_path);
    return c->m ? LENET_OK : lenet__last_status();
}

static void setup_load_weights(ctx *c)
{
    setup_built(c);
    ck_assert_lenet_ok(lenet_model_init(c->m, LENET_INIT_LECUN, 99)); /* differs from the file */
    copy_params(c);
}

static lenet_status run_load_weights(ctx *c)
{
    return lenet_model_load_weights(c->m, model_path);
}

static void weights_unchanged_and_load_again(ctx *c)
{
    assert_params_unchanged(c);
    ck_assert_lenet_ok(run_load_weights(c));
}

/* A model, SGD with momentum after one step, and an iterator part-way through its pass. */
static void setup_checkpoint(ctx *c)
{
    setup_built(c);
    ck_assert_lenet_ok(run_step(c));
    c->d = lenet_dataset_open_idx(images_path, labels_path);
    ck_assert_ptr_nonnull(c->d);
    c->it = lenet_iter_create(c->d, 8, true, 1);
    ck_assert_ptr_nonnull(c->it);
    const lenet_tensor *images;
    const int32_t *labels;
    int count;
    ck_assert_lenet_ok(lenet_iter_next(c->it, &images, &labels, &count));
}

static lenet_status run_checkpoint_save(ctx *c)
{
    return lenet_checkpoint_save(c->m, c->o, c->it, "epoch 1", target_path);
}

static void checkpoint_save_again(ctx *c)
{
    ck_assert_lenet_ok(run_checkpoint_save(c));
}

static void setup_checkpoint_load(ctx *c)
{
    setup_checkpoint(c);
    ck_assert_lenet_ok(lenet_model_init(c->m, LENET_INIT_LECUN, 99));
    copy_params(c);
}

/* The same into an optimizer that never stepped: the load allocates its momentum buffer. */
static void setup_checkpoint_load_fresh(ctx *c)
{
    setup_checkpoint_load(c);
    lenet_optimizer_free(c->o);
    c->o = lenet_sgd_create(c->m, 0.1f, 0.9f, 1e-4f);
    ck_assert_ptr_nonnull(c->o);
}

static lenet_status run_checkpoint_load(ctx *c)
{
    char note[32];
    lenet_status st = lenet_checkpoint_load(c->m, c->o, c->it, checkpoint_path, note, sizeof note);
    ck_assert(st != LENET_OK || strcmp(note, "epoch 1") == 0);
    return st;
}

static void checkpoint_unchanged_and_load_again(ctx *c)
{
    assert_params_unchanged(c);
    ck_assert_uint_eq(lenet_iter_position(c->it), 8);
    ck_assert_lenet_ok(run_checkpoint_load(c));
    /* ... and training goes on from the restored state. */
    lenet_metrics mt;
    ck_assert_lenet_ok(lenet_train_epoch(c->m, c->o, c->it, NULL, NULL, &mt));
    ck_assert_uint_eq(mt.examples, 12);
}

/* ---- the tests ---- */

START_TEST(test_every_allocation_failure_in_building_the_d2l_lenet_is_enomem_without_a_leak)
{
    static const scenario construct = {"construct d2l LeNet", NULL, run_construct, NULL};
    static const scenario build = {"build", setup_unbuilt, run_build, build_again};
    static const scenario summary = {"summary (builds)", setup_unbuilt, run_summary, summary_again};
    ck_assert_uint_ge(walk(&construct), 13); /* the model and its 12 layers at least */
    ck_assert_uint_ge(walk(&build), 10);
    ck_assert_uint_ge(walk(&summary), 10);
}
END_TEST

START_TEST(test_every_allocation_failure_in_a_training_step_is_enomem_and_the_step_can_be_retried)
{
    static const scenario step = {"forward+backward+SGD step", setup_built, run_step, step_again};
    static const scenario predict = {"predict+classify", setup_built, run_predict, predict_again};
    ck_assert_uint_ge(walk(&step), 3);
    ck_assert_uint_ge(walk(&predict), 3);
}
END_TEST

START_TEST(test_every_allocation_failure_in_data_training_and_evaluation_is_enomem_and_recoverable)
{
    write_idx_files(20);
    static const scenario open = {"open IDX + iterate", NULL, run_open, NULL};
    static const scenario train = {"train_epoch + evaluate", setup_training, run_train, train_again};
    ck_assert_uint_ge(walk(&open), 4);
    ck_assert_uint_ge(walk(&train), 10);
    remove_idx_files();
}
END_TEST

START_TEST(test_every_allocation_failure_in_saving_and_loading_is_enomem_and_changes_nothing)
{
    write_idx_files(20);
    ctx c = {0};
    setup_checkpoint(&c);
    ck_assert_lenet_ok(lenet_model_save(c.m, model_path));
    ck_assert_lenet_ok(lenet_checkpoint_save(c.m, c.o, c.it, "epoch 1", checkpoint_path));
    free_ctx(&c);
    static const scenario save = {"model_save", setup_save, run_save, old_file_kept_and_save_again};
    static const scenario load = {"model_load", NULL, run_load, NULL};
    static const scenario weights = {"model_load_weights", setup_load_weights, run_load_weights,
                                     weights_unchanged_and_load_again};
    static const scenario ck_save = {"checkpoint_save", setup_checkpoint, run_checkpoint_save,
                                     checkpoint_save_again};
    static const scenario ck_load = {"checkpoint_load", setup_checkpoint_load, run_checkpoint_load,
                                     checkpoint_unchanged_and_load_again};
    ck_assert_uint_ge(walk(&save), 2);
    ck_assert_uint_ge(walk(&load), 10);
    ck_assert_uint_ge(walk(&weights), 2);
    ck_assert_uint_ge(walk(&ck_save), 2);
    static const scenario ck_load_fresh = {"checkpoint_load (new SGD)", setup_checkpoint_load_fresh,
                                           run_checkpoint_load, checkpoint_unchanged_and_load_again};
    ck_assert_uint_ge(walk(&ck_load), 2);
    ck_assert_uint_ge(walk(&ck_load_fresh), 3);
    remove_idx_files();
}
END_TEST

int main(void)
{
    Suite *s = suite_create("alloc_fail");
    TCase *tc = tcase_create("walk");
    tcase_set_timeout(tc, 300);
    tcase_add_test(tc, test_every_allocation_failure_in_building_the_d2l_lenet_is_enomem_without_a_leak);
    tcase_add_test(tc, test_every_allocation_failure_in_a_training_step_is_enomem_and_the_step_can_be_retried);
    tcase_add_test(tc, test_every_allocation_failure_in_data_training_and_evaluation_is_enomem_and_recoverable);
    tcase_add_test(tc, test_every_allocation_failure_in_saving_and_loading_is_enomem_and_changes_nothing);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    /* No fork: the walker's global counter and the leak checkers then see one process. */
    srunner_set_fork_status(sr, CK_NOFORK);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    fprintf(stderr, "alloc-fail: %zu allocation points walked in all, %zu distinct failure messages\n", total_points,
            n_messages);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
