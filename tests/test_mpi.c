/* Data-parallel training over MPI (lenet/mpi.h), run by `meson test` under
 * `mpirun --oversubscribe --allow-run-as-root -np 2` and `-np 3` in an MPI build: every process trains its share of
 * each batch, and the weights, losses, metrics and checkpoint bytes must be bit for bit those of one process with one
 * thread (the reference, which every process also computes on its own, without a communicator).  Failures on one
 * process must fail every process with that process's message, never hang.
 *
 * Every check first agrees across the processes (MPI_Allreduce of the verdict), so a failing check fails the test on
 * every process at the same point instead of leaving the others waiting in a collective.  The suite runs with
 * CK_FORK=no: forking after MPI_Init is not allowed. */
#ifdef LENET_WITH_MPI
#define _POSIX_C_SOURCE 200809L

#include <math.h>
#include <mpi.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <lenet/mpi.h>

#include "idxfixture.h"
#include "model/internal.h" /* lenet__chunk_share, LENET_CHUNK */
#include "testutil.h"

enum { SIDE = 28, PLANE = SIDE * SIDE, CLASSES = 10, TRAIN = 300, TEST = 150, EPOCHS = 2 };

static int rank, size;

/* True on every process when `ok` holds on every process; a process where it does not says why first. */
static bool everywhere(bool ok, const char *what)
{
    if (!ok)
        fprintf(stderr, "rank %d of %d: %s\n", rank, size, what);
    int mine = ok, all = 0;
    MPI_Allreduce(&mine, &all, 1, MPI_INT, MPI_LAND, MPI_COMM_WORLD);
    return all != 0;
}

#define ck_assert_everywhere(cond, what) ck_assert_msg(everywhere((cond), (what)), "%s (on some rank)", (what))

static uint32_t lcg_next(uint64_t *state)
{
    *state = *state * 6364136223846793005ULL + 1442695040888963407ULL;
    return (uint32_t)(*state >> 33);
}

/* n 28x28 images whose class c shows as a bright 5x5 block at a position of its own, over noise. */
static lenet_dataset *blocks(const char *name, uint32_t n, uint64_t seed)
{
    uint8_t *pixels = malloc((size_t)n * PLANE), *labels = malloc(n);
    ck_assert_ptr_nonnull(pixels);
    ck_assert_ptr_nonnull(labels);
    uint64_t state = seed;
    for (uint32_t i = 0; i < n; i++) {
        labels[i] = (uint8_t)(lcg_next(&state) % CLASSES);
        uint8_t *image = pixels + (size_t)i * PLANE;
        for (int p = 0; p < PLANE; p++)
            image[p] = (uint8_t)(lcg_next(&state) % 96);
        const int top = 2 + 5 * (labels[i] / 5) * 2, left = 2 + 5 * (labels[i] % 5);
        for (int y = top; y < top + 5; y++)
            for (int x = left; x < left + 5; x++)
                image[y * SIDE + x] = (uint8_t)(160 + lcg_next(&state) % 96);
    }
    idx_bytes images = idx_images(n, SIDE, SIDE, pixels), label_file = idx_labels(n, labels);
    char file[64];
    snprintf(file, sizeof file, "%s-images", name);
    const char *images_path = idx_write_bytes(file, &images, false);
    snprintf(file, sizeof file, "%s-labels", name);
    const char *labels_path = idx_write_bytes(file, &label_file, false);
    lenet_dataset *d = lenet_dataset_open_idx(images_path, labels_path);
    ck_assert_msg(d != NULL, "%s", lenet_last_error());
    idx_bytes_free(&images);
    idx_bytes_free(&label_file);
    free(pixels);
    free(labels);
    return d;
}

typedef enum model_kind { D2L, BATCHNORM, RELU } model_kind;

static const char *kind_name(model_kind kind)
{
    return kind == D2L ? "d2l" : kind == BATCHNORM ? "batchnorm" : "relu";
}

static lenet_model *make_model(model_kind kind)
{
    lenet_model *m = lenet_model_create();
    ck_assert_ptr_nonnull(m);
    if (kind == D2L) {
        lenet_test_add_d2l_layers(m);
    } else if (kind == BATCHNORM) {
        /* BatchNorm in both forms, and Dropout: batch statistics and random streams cross the processes. */
        ck_assert_lenet_ok(lenet_model_add(m, lenet_conv2d(6, 5, 1, 2)));
        ck_assert_lenet_ok(lenet_model_add(m, lenet_batchnorm2d(1e-5f, 0.1f)));
        ck_assert_lenet_ok(lenet_model_add(m, lenet_relu()));
        ck_assert_lenet_ok(lenet_model_add(m, lenet_avgpool2d(2, 2)));
        ck_assert_lenet_ok(lenet_model_add(m, lenet_conv2d(16, 5, 1, 0)));
        ck_assert_lenet_ok(lenet_model_add(m, lenet_batchnorm2d(1e-5f, 0.1f)));
        ck_assert_lenet_ok(lenet_model_add(m, lenet_relu()));
        ck_assert_lenet_ok(lenet_model_add(m, lenet_avgpool2d(2, 2)));
        ck_assert_lenet_ok(lenet_model_add(m, lenet_flatten()));
        ck_assert_lenet_ok(lenet_model_add(m, lenet_linear(64)));
        ck_assert_lenet_ok(lenet_model_add(m, lenet_batchnorm1d(1e-5f, 0.1f)));
        ck_assert_lenet_ok(lenet_model_add(m, lenet_relu()));
        ck_assert_lenet_ok(lenet_model_add(m, lenet_dropout(0.25f)));
        ck_assert_lenet_ok(lenet_model_add(m, lenet_linear(CLASSES)));
    } else {
        ck_assert_lenet_ok(lenet_model_add(m, lenet_conv2d(4, 3, 1, 1)));
        ck_assert_lenet_ok(lenet_model_add(m, lenet_relu()));
        ck_assert_lenet_ok(lenet_model_add(m, lenet_maxpool2d(2, 2)));
        ck_assert_lenet_ok(lenet_model_add(m, lenet_flatten()));
        ck_assert_lenet_ok(lenet_model_add(m, lenet_linear(CLASSES)));
    }
    ck_assert_lenet_ok(lenet_model_build(m, 1, SIDE, SIDE));
    ck_assert_lenet_ok(lenet_model_init(m, LENET_INIT_XAVIER_UNIFORM, 7));
    return m;
}

static lenet_optimizer *make_optimizer(model_kind kind, lenet_model *m)
{
    lenet_optimizer *o = kind == BATCHNORM ? lenet_adam_create(m, 0.01f, 0.9f, 0.999f, 1e-8f, 1e-4f)
                                           : lenet_sgd_create(m, 0.5f, 0.9f, 0.0f);
    ck_assert_msg(o != NULL, "%s", lenet_last_error());
    return o;
}

static lenet_dataset *train_set, *test_set;

/* What a run produced: every parameter and buffer, and the metrics of each epoch. */
typedef struct run_result {
    float *params, *buffers;
    size_t n_params, n_buffers;
    lenet_metrics train[EPOCHS], eval[EPOCHS];
    lenet_metrics statistics; /* of lenet_update_statistics after the epochs */
} run_result;

static void result_free(run_result *r)
{
    free(r->params);
    free(r->buffers);
}

/* Trains `epochs` epochs (evaluating after each) from a fresh model, on `threads` threads, over MPI_COMM_WORLD when
 * `shared`, and saves a checkpoint to `checkpoint` unless it is NULL.  With a criterion the loop gathers the whole
 * batch's outputs on every process; without, each process computes its own samples' cross-entropy. */
static const lenet_criterion *criterion;

static void train_run(model_kind kind, int batch, int threads, bool shared, const char *checkpoint, run_result *out)
{
    ck_assert_lenet_ok(lenet_threads_set(threads));
    lenet_model *m = make_model(kind);
    if (shared)
        ck_assert_lenet_ok(lenet_model_set_comm(m, MPI_COMM_WORLD));
    lenet_optimizer *o = make_optimizer(kind, m);
    lenet_iter *train = lenet_iter_create(train_set, batch, true, 42);
    lenet_iter *test = lenet_iter_create(test_set, batch, false, 0);
    ck_assert_ptr_nonnull(train);
    ck_assert_ptr_nonnull(test);
    for (int e = 0; e < EPOCHS; e++) {
        ck_assert_lenet_ok(lenet_train_epoch_with(m, o, train, criterion, NULL, NULL, &out->train[e]));
        ck_assert_lenet_ok(lenet_evaluate_with(m, test, criterion, &out->eval[e]));
    }
    /* The running statistics recomputed over the training set in order: one more pass the processes share. */
    lenet_iter *plain = lenet_iter_create(train_set, batch, false, 0);
    ck_assert_ptr_nonnull(plain);
    ck_assert_lenet_ok(lenet_update_statistics(m, plain, &out->statistics));
    lenet_iter_free(plain);
    if (checkpoint)
        ck_assert_lenet_ok(lenet_checkpoint_save(m, o, train, "epoch 2", checkpoint));
    out->params = lenet_test_copy_tensors(m, false, &out->n_params);
    out->buffers = lenet_test_copy_tensors(m, true, &out->n_buffers);
    lenet_iter_free(test);
    lenet_iter_free(train);
    lenet_optimizer_free(o);
    lenet_model_free(m);
    lenet_threads_set(0);
}

static bool same_metrics(const lenet_metrics *a, const lenet_metrics *b)
{
    return memcmp(&a->loss, &b->loss, sizeof a->loss) == 0 && memcmp(&a->accuracy, &b->accuracy, sizeof a->accuracy) == 0 &&
           a->examples == b->examples;
}

static bool same_file(const char *a, const char *b)
{
    idx_bytes x = idx_read_file(a), y = idx_read_file(b);
    bool same = x.size == y.size && memcmp(x.data, y.data, x.size) == 0;
    idx_bytes_free(&x);
    idx_bytes_free(&y);
    return same;
}

/* Checks one configuration: N processes x `threads` against one process x one thread. */
static void check_bit_identity(model_kind kind, int batch, int threads)
{
    char ref_name[64], dp_name[64], ref_path[512], dp_path[512];
    snprintf(ref_name, sizeof ref_name, "ref-%s-%d.ckpt", kind_name(kind), batch);
    snprintf(dp_name, sizeof dp_name, "dp-%s-%d.ckpt", kind_name(kind), batch);
    snprintf(ref_path, sizeof ref_path, "%s", idx_write(ref_name, "", 0));
    snprintf(dp_path, sizeof dp_path, "%s", idx_write(dp_name, "", 0));
    unlink(ref_path);
    unlink(dp_path);
    run_result ref = {0}, dp = {0};
    train_run(kind, batch, 1, false, ref_path, &ref);
    train_run(kind, batch, threads, true, dp_path, &dp);

    char what[160];
    snprintf(what, sizeof what, "%s, batch %d, %d thread(s) per process: parameters differ", kind_name(kind), batch,
             threads);
    ck_assert_everywhere(ref.n_params == dp.n_params && memcmp(ref.params, dp.params, ref.n_params * sizeof(float)) == 0,
                         what);
    snprintf(what, sizeof what, "%s, batch %d: buffers (running statistics) differ", kind_name(kind), batch);
    ck_assert_everywhere(ref.n_buffers == dp.n_buffers &&
                             memcmp(ref.buffers, dp.buffers, ref.n_buffers * sizeof(float)) == 0,
                         what);
    bool metrics = true;
    for (int e = 0; e < EPOCHS; e++)
        metrics = metrics && same_metrics(&ref.train[e], &dp.train[e]) && same_metrics(&ref.eval[e], &dp.eval[e]) &&
                  dp.train[e].examples == TRAIN && dp.eval[e].examples == TEST;
    metrics = metrics && same_metrics(&ref.statistics, &dp.statistics) &&
              dp.statistics.examples == (kind == BATCHNORM ? TRAIN : 0);
    snprintf(what, sizeof what, "%s, batch %d: losses, accuracies or example counts differ", kind_name(kind), batch);
    ck_assert_everywhere(metrics, what);
    /* Rank 0 wrote the checkpoint, byte for byte the reference's; the others wrote nothing. */
    bool file = rank == 0 ? same_file(ref_path, dp_path) : access(dp_path, F_OK) != 0;
    snprintf(what, sizeof what, "%s, batch %d: the checkpoint differs from the reference's, or a rank other than 0 "
             "wrote one", kind_name(kind), batch);
    ck_assert_everywhere(file, what);
    result_free(&ref);
    result_free(&dp);
}

START_TEST(test_the_d2l_lenet_trains_bit_identically_for_batches_of_one_to_eight_chunks)
{
    check_bit_identity(D2L, 16, 1);   /* one chunk: the other processes only exchange */
    check_bit_identity(D2L, 40, 2);   /* 3 chunks, the last of 8 samples; the last batch of 20 */
    check_bit_identity(D2L, 100, 1);  /* 7 chunks, the last of 4 */
    check_bit_identity(D2L, 128, 1);  /* 8 chunks; the last batch of 44 */
}
END_TEST

START_TEST(test_training_with_a_criterion_gathers_the_outputs_and_stays_bit_identical)
{
    lenet_criterion *c = lenet_criterion_cross_entropy();
    ck_assert_ptr_nonnull(c);
    criterion = c;
    check_bit_identity(D2L, 40, 1);
    check_bit_identity(BATCHNORM, 64, 1);
    criterion = NULL;
    lenet_criterion_free(c);
}
END_TEST

START_TEST(test_a_batchnorm_and_dropout_model_trains_bit_identically)
{
    check_bit_identity(BATCHNORM, 64, 2); /* the last batch of 44: a chunk of 12 */
    check_bit_identity(BATCHNORM, 50, 1); /* chunks of 16, 16, 16, 2 */
}
END_TEST

START_TEST(test_every_rank_resumes_from_rank_0s_checkpoint_as_one_process_would)
{
    /* One process: two epochs straight. */
    run_result ref = {0};
    train_run(D2L, 40, 1, false, NULL, &ref);

    /* Data-parallel: one epoch, a checkpoint written by rank 0, then every rank resumes from that one file. */
    char path[512];
    snprintf(path, sizeof path, "%s", idx_write("resume.ckpt", "", 0));
    MPI_Bcast(path, sizeof path, MPI_CHAR, 0, MPI_COMM_WORLD);
    lenet_metrics first, second, eval;
    {
        lenet_model *m = make_model(D2L);
        ck_assert_lenet_ok(lenet_model_set_comm(m, MPI_COMM_WORLD));
        lenet_optimizer *o = make_optimizer(D2L, m);
        lenet_iter *train = lenet_iter_create(train_set, 40, true, 42), *test = lenet_iter_create(test_set, 40, false, 0);
        ck_assert_lenet_ok(lenet_train_epoch(m, o, train, NULL, NULL, &first));
        ck_assert_lenet_ok(lenet_evaluate(m, test, &eval));
        ck_assert_lenet_ok(lenet_checkpoint_save(m, o, train, "after one epoch", path));
        lenet_iter_free(test);
        lenet_iter_free(train);
        lenet_optimizer_free(o);
        lenet_model_free(m);
    }
    lenet_model *m = make_model(D2L);
    ck_assert_lenet_ok(lenet_model_init(m, LENET_INIT_PYTORCH, 99)); /* anything: the checkpoint replaces it */
    ck_assert_lenet_ok(lenet_model_set_comm(m, MPI_COMM_WORLD));
    lenet_optimizer *o = make_optimizer(D2L, m);
    lenet_iter *train = lenet_iter_create(train_set, 40, true, 5);
    char note[64];
    ck_assert_lenet_ok(lenet_checkpoint_load(m, o, train, path, note, sizeof note));
    ck_assert_str_eq(note, "after one epoch");
    ck_assert_lenet_ok(lenet_train_epoch(m, o, train, NULL, NULL, &second));
    size_t n;
    float *params = lenet_test_copy_tensors(m, false, &n);
    ck_assert_everywhere(same_metrics(&first, &ref.train[0]) && same_metrics(&second, &ref.train[1]) &&
                             same_metrics(&eval, &ref.eval[0]),
                         "resumed metrics differ from one process's");
    ck_assert_everywhere(n == ref.n_params && memcmp(params, ref.params, n * sizeof *params) == 0,
                         "resumed parameters differ from one process's");
    free(params);
    lenet_iter_free(train);
    lenet_optimizer_free(o);
    lenet_model_free(m);
    result_free(&ref);
}
END_TEST

/* Every process holds rank 0's parameters, bit for bit. */
static void assert_same_params_everywhere(lenet_model *m)
{
    size_t n;
    float *params = lenet_test_copy_tensors(m, false, &n), *first = malloc(n * sizeof *first);
    ck_assert_ptr_nonnull(first);
    memcpy(first, params, n * sizeof *first);
    MPI_Bcast(first, (int)n, MPI_FLOAT, 0, MPI_COMM_WORLD);
    ck_assert_everywhere(memcmp(first, params, n * sizeof *params) == 0, "the ranks' parameters differ");
    free(first);
    free(params);
}

/* Every process holds the same message, and it names `failing`. */
static bool same_message_naming(int failing)
{
    char mine[512], first[512];
    snprintf(mine, sizeof mine, "%s", lenet_last_error());
    memcpy(first, mine, sizeof first);
    MPI_Bcast(first, sizeof first, MPI_CHAR, 0, MPI_COMM_WORLD);
    char prefix[64];
    snprintf(prefix, sizeof prefix, "rank %d of %d: ", failing, size);
    if (rank == 0)
        printf("agreed error: %s\n", mine);
    return strcmp(mine, first) == 0 && strncmp(mine, prefix, strlen(prefix)) == 0;
}

START_TEST(test_a_bad_checkpoint_on_one_rank_fails_every_rank_with_its_message_and_changes_nothing)
{
    /* Every rank saves a good checkpoint of its own (no communicator yet: each writes its file); the last rank's is
     * then cut short. */
    const int bad = size - 1;
    lenet_model *m = make_model(D2L);
    lenet_optimizer *o = make_optimizer(D2L, m);
    char path[512];
    snprintf(path, sizeof path, "%s", idx_write("own.ckpt", "", 0));
    ck_assert_lenet_ok(lenet_checkpoint_save(m, o, NULL, NULL, path));
    if (rank == bad) {
        idx_bytes bytes = idx_read_file(path);
        idx_write("own.ckpt", bytes.data, bytes.size / 2);
        idx_bytes_free(&bytes);
    }
    ck_assert_lenet_ok(lenet_model_init(m, LENET_INIT_PYTORCH, 3)); /* other values than the files' */
    size_t n;
    float *before = lenet_test_copy_tensors(m, false, &n);
    ck_assert_lenet_ok(lenet_model_set_comm(m, MPI_COMM_WORLD));
    lenet_status st = lenet_checkpoint_load(m, o, NULL, path, NULL, 0);
    ck_assert_everywhere(st == LENET_EFORMAT, "checkpoint_load did not fail with LENET_EFORMAT");
    ck_assert_everywhere(same_message_naming(bad), "the ranks report different messages, or not the bad rank's");
    float *after = lenet_test_copy_tensors(m, false, &n);
    ck_assert_everywhere(memcmp(before, after, n * sizeof *after) == 0, "a failed load changed the parameters");
    free(after);
    st = lenet_model_load_weights(m, path);
    ck_assert_everywhere(st == LENET_EFORMAT, "model_load_weights did not fail with LENET_EFORMAT");
    ck_assert_everywhere(same_message_naming(bad), "model_load_weights: different messages");
    after = lenet_test_copy_tensors(m, false, &n);
    ck_assert_everywhere(memcmp(before, after, n * sizeof *after) == 0, "a failed load_weights changed the parameters");
    free(after);

    /* Saving: rank 0 writes; a directory that does not exist fails every rank with rank 0's message. */
    st = lenet_checkpoint_save(m, o, NULL, NULL, "/nonexistent-lenet-dir/x.ckpt");
    ck_assert_everywhere(st == LENET_EIO, "a save into a missing directory did not fail with LENET_EIO");
    ck_assert_everywhere(same_message_naming(0), "a failed save: different messages, or not rank 0's");
    free(before);
    lenet_optimizer_free(o);
    lenet_model_free(m);
}
END_TEST

START_TEST(test_a_non_finite_forward_on_one_rank_fails_every_rank_naming_the_layer_and_keeps_the_parameters)
{
    /* The last rank's copy of the data is scaled to 3e38: its chunks overflow in the first convolution, the other
     * ranks' chunks stay finite, and every rank must report the last rank's fault. */
    const int bad = size - 1;
    lenet_dataset *d = blocks("poisoned", TRAIN, 11);
    if (rank == bad)
        ck_assert_lenet_ok(lenet_dataset_set_range(d, 0.0f, 3e38f));
    lenet_model *m = make_model(RELU);
    size_t n;
    float *before = lenet_test_copy_tensors(m, false, &n);
    ck_assert_lenet_ok(lenet_model_set_comm(m, MPI_COMM_WORLD));
    lenet_optimizer *o = make_optimizer(RELU, m);
    lenet_iter *it = lenet_iter_create(d, 16 * size, true, 1);
    lenet_status st = lenet_train_epoch(m, o, it, NULL, NULL, NULL);
    ck_assert_everywhere(st == LENET_ENUMERIC, "training on a poisoned rank did not fail with LENET_ENUMERIC");
    ck_assert_everywhere(same_message_naming(bad), "the ranks report different messages, or not the poisoned rank's");
    ck_assert_everywhere(strstr(lenet_last_error(), "layer 0 (Conv2d)") != NULL, "the message does not name the layer");
    float *after = lenet_test_copy_tensors(m, false, &n);
    ck_assert_everywhere(memcmp(before, after, n * sizeof *after) == 0, "a failed step changed the parameters");
    ck_assert_everywhere(lenet_optimizer_step_count(o) == 0, "a failed step counted");
    free(before);
    free(after);
    lenet_iter_free(it);
    lenet_optimizer_free(o);
    lenet_model_free(m);
    lenet_dataset_free(d);
}
END_TEST

/* After the first batch, the last rank changes its data set's padding: its iterator fails at the second batch, where
 * the processes do not agree before the forward. */
static void break_iterator(void *user, size_t done, size_t total, const lenet_metrics *so_far)
{
    (void)total;
    (void)so_far;
    if (done > 0 && rank == size - 1)
        lenet_dataset_set_padding(user, 2);
}

START_TEST(test_an_iterator_failing_on_one_rank_mid_pass_fails_every_rank_and_undoes_the_step)
{
    lenet_dataset *d = blocks("breaking", TRAIN, 3);
    lenet_model *m = make_model(D2L);
    ck_assert_lenet_ok(lenet_model_set_comm(m, MPI_COMM_WORLD));
    lenet_optimizer *o = make_optimizer(D2L, m);
    lenet_iter *it = lenet_iter_create(d, 64, true, 9);
    lenet_status st = lenet_train_epoch(m, o, it, break_iterator, d, NULL);
    ck_assert_everywhere(st == LENET_ESTATE, "a failing iterator on one rank did not fail every rank with LENET_ESTATE");
    ck_assert_everywhere(same_message_naming(size - 1) && strstr(lenet_last_error(), "padding") != NULL,
                         "the message is not the failing rank's");
    /* Every rank undid the second step: one step taken, the same parameters everywhere. */
    ck_assert_everywhere(lenet_optimizer_step_count(o) == 1, "the second step was kept somewhere");
    assert_same_params_everywhere(m);
    lenet_iter_free(it);
    lenet_optimizer_free(o);
    lenet_model_free(m);
    lenet_dataset_free(d);
}
END_TEST

START_TEST(test_ranks_with_other_batch_sizes_or_weights_are_refused_at_the_first_step)
{
    /* The last rank iterates batches of 32 where the others take 40. */
    lenet_model *m = make_model(D2L);
    size_t n;
    float *before = lenet_test_copy_tensors(m, false, &n);
    ck_assert_lenet_ok(lenet_model_set_comm(m, MPI_COMM_WORLD));
    lenet_optimizer *o = make_optimizer(D2L, m);
    lenet_iter *it = lenet_iter_create(train_set, rank == size - 1 ? 32 : 40, true, 42);
    lenet_status st = lenet_train_epoch(m, o, it, NULL, NULL, NULL);
    ck_assert_everywhere(st == LENET_ESTATE, "different batch sizes did not fail with LENET_ESTATE");
    ck_assert_everywhere(same_message_naming(size - 1) && strstr(lenet_last_error(), "batch size") != NULL,
                         "the message does not name the rank and the batch size");
    float *after = lenet_test_copy_tensors(m, false, &n);
    ck_assert_everywhere(memcmp(before, after, n * sizeof *after) == 0, "a refused pass changed the parameters");
    free(after);
    lenet_iter_free(it);

    /* Rank 1 initialised from another seed. */
    if (rank == 1)
        ck_assert_lenet_ok(lenet_model_init(m, LENET_INIT_XAVIER_UNIFORM, 8));
    it = lenet_iter_create(train_set, 40, true, 42);
    st = lenet_train_epoch(m, o, it, NULL, NULL, NULL);
    ck_assert_everywhere(st == LENET_ESTATE, "different weights did not fail with LENET_ESTATE");
    ck_assert_everywhere(same_message_naming(1) && strstr(lenet_last_error(), "parameter values") != NULL,
                         "the message does not name rank 1 and the parameter values");
    /* Evaluation checks too. */
    st = lenet_evaluate(m, it, NULL);
    ck_assert_everywhere(st == LENET_ESTATE, "evaluating different weights did not fail with LENET_ESTATE");
    free(before);
    lenet_iter_free(it);
    lenet_optimizer_free(o);
    lenet_model_free(m);
}
END_TEST

/* Progress of a pass: the examples done after each batch, and a hash of the batches this rank's iterator gave. */
typedef struct progress_log {
    size_t done[64];
    int calls;
} progress_log;

static void log_progress(void *user, size_t done, size_t total, const lenet_metrics *so_far)
{
    (void)total;
    (void)so_far;
    progress_log *log = user;
    if (log->calls < 64)
        log->done[log->calls] = done;
    log->calls++;
}

START_TEST(test_every_rank_sees_the_same_global_batches_and_runs_a_contiguous_share_of_their_chunks)
{
    /* The iterator: every rank produces the same global batches from the same seed, the last one short (300 = 2 x 128
     * + 44), and each rank's share of a batch is a contiguous block of its chunks, the blocks in rank order covering the
     * batch exactly once. */
    lenet_iter *it = lenet_iter_create(train_set, 128, true, 42);
    ck_assert_ptr_nonnull(it);
    int batches = 0, counts[4] = {0};
    bool cover = true;
    uint64_t hash = 1469598103934665603ULL;
    for (;;) {
        const lenet_tensor *images;
        const int32_t *labels;
        int count;
        lenet_status st = lenet_iter_next(it, &images, &labels, &count);
        if (st == LENET_DONE)
            break;
        ck_assert_lenet_ok(st);
        ck_assert_int_lt(batches, 4);
        counts[batches++] = count;
        const unsigned char *bytes = (const unsigned char *)lenet_tensor_cdata(images);
        for (size_t i = 0; i < lenet_tensor_numel(images) * sizeof(float); i++)
            hash = (hash ^ bytes[i]) * 1099511628211ULL;
        for (int i = 0; i < count; i++)
            hash = (hash ^ (uint64_t)labels[i]) * 1099511628211ULL;
        const int chunks = (count + LENET_CHUNK - 1) / LENET_CHUNK;
        int next = 0, samples = 0;
        for (int r = 0; r < size; r++) {
            int first, own;
            lenet__chunk_share(chunks, r, size, &first, &own);
            cover = cover && first == next && own >= chunks / size && own <= chunks / size + 1;
            next = first + own;
            const int begin = first * LENET_CHUNK, end = next * LENET_CHUNK < count ? next * LENET_CHUNK : count;
            samples += end > begin ? end - begin : 0;
        }
        cover = cover && next == chunks && samples == count;
    }
    lenet_iter_free(it);
    ck_assert_int_eq(batches, 3);
    ck_assert_int_eq(counts[2], 44);
    ck_assert_everywhere(cover, "the ranks' chunk blocks do not cover each batch exactly once");
    uint64_t first_hash = hash;
    MPI_Bcast(&first_hash, 1, MPI_UINT64_T, 0, MPI_COMM_WORLD);
    ck_assert_everywhere(first_hash == hash, "the ranks' iterators gave different batches");

    /* Training reports the global progress on every rank: 128, 256, 300. */
    lenet_model *m = make_model(D2L);
    ck_assert_lenet_ok(lenet_model_set_comm(m, MPI_COMM_WORLD));
    lenet_optimizer *o = make_optimizer(D2L, m);
    it = lenet_iter_create(train_set, 128, true, 42);
    progress_log log = {0};
    lenet_metrics metrics;
    ck_assert_lenet_ok(lenet_train_epoch(m, o, it, log_progress, &log, &metrics));
    ck_assert_everywhere(log.calls == 3 && log.done[0] == 128 && log.done[1] == 256 && log.done[2] == 300 &&
                             metrics.examples == TRAIN,
                         "progress is not the global count on every rank");
    lenet_iter_free(it);
    lenet_optimizer_free(o);
    lenet_model_free(m);
}
END_TEST

START_TEST(test_set_comm_is_collective_refuses_a_null_model_everywhere_and_detaches)
{
    /* A NULL model on the last rank fails the call on every rank. */
    lenet_model *m = make_model(D2L);
    lenet_status st = lenet_model_set_comm(rank == size - 1 ? NULL : m, MPI_COMM_WORLD);
    ck_assert_everywhere(st == LENET_EINVAL, "a NULL model on one rank did not fail every rank with LENET_EINVAL");
    ck_assert_everywhere(same_message_naming(size - 1), "set_comm: different messages");
    /* Attach, detach: training is in-process again, each rank on the whole batch, as one process. */
    run_result ref = {0};
    train_run(D2L, 40, 1, false, NULL, &ref);
    ck_assert_lenet_ok(lenet_model_set_comm(m, MPI_COMM_WORLD));
    ck_assert_lenet_ok(lenet_model_set_comm(m, MPI_COMM_WORLD)); /* replaces the first duplicate */
    ck_assert_lenet_ok(lenet_model_set_comm(m, MPI_COMM_NULL));
    lenet_optimizer *o = make_optimizer(D2L, m);
    lenet_iter *it = lenet_iter_create(train_set, 40, true, 42);
    lenet_metrics metrics;
    ck_assert_lenet_ok(lenet_train_epoch(m, o, it, NULL, NULL, &metrics));
    ck_assert_everywhere(same_metrics(&metrics, &ref.train[0]), "a detached model does not train as one process");
    ck_assert_int_eq(lenet_model_set_comm(NULL, MPI_COMM_NULL), LENET_EINVAL);
    lenet_iter_free(it);
    lenet_optimizer_free(o);
    lenet_model_free(m);
    result_free(&ref);
}
END_TEST

/* The last rank raises its stop flag after its second batch, as its own Ctrl-C handler would. */
static volatile sig_atomic_t stop_flag;

static void stop_on_last_rank(void *user, size_t done, size_t total, const lenet_metrics *so_far)
{
    (void)user, (void)total, (void)so_far;
    if (rank == size - 1 && done == 80)
        stop_flag = 1;
}

START_TEST(test_a_stop_on_one_rank_stops_every_rank_at_the_same_batch)
{
    lenet_model *m = make_model(D2L);
    ck_assert_lenet_ok(lenet_model_set_comm(m, MPI_COMM_WORLD));
    lenet_optimizer *o = make_optimizer(D2L, m);
    lenet_iter *it = lenet_iter_create(train_set, 40, true, 42);
    ck_assert_ptr_nonnull(it);

    /* A flag on one rank only is refused at the first batch, not left waiting. */
    stop_flag = 0;
    ck_assert_lenet_ok(lenet_model_set_stop_flag(m, rank == 0 ? &stop_flag : NULL));
    lenet_status st = lenet_train_epoch(m, o, it, NULL, NULL, NULL);
    ck_assert_everywhere(st == LENET_ESTATE && strstr(lenet_last_error(), "stop flag") != NULL,
                         "a stop flag on one rank only was not refused naming it");
    lenet_iter_free(it);
    it = lenet_iter_create(train_set, 40, true, 42);
    ck_assert_ptr_nonnull(it);

    ck_assert_lenet_ok(lenet_model_set_stop_flag(m, &stop_flag));
    lenet_metrics mt = {0};
    st = lenet_train_epoch(m, o, it, stop_on_last_rank, NULL, &mt);
    ck_assert_everywhere(st == LENET_STOPPED, "not every rank stopped");
    ck_assert_everywhere(lenet_iter_position(it) == 80 && mt.examples == 80 && lenet_optimizer_step_count(o) == 2,
                         "a rank stopped at another batch");
    assert_same_params_everywhere(m);

    /* Lowered everywhere: the pass ends. */
    stop_flag = 0;
    st = lenet_train_epoch(m, o, it, NULL, NULL, &mt);
    ck_assert_everywhere(st == LENET_OK && mt.examples == TRAIN - 80 && lenet_optimizer_epoch_count(o) == 1,
                         "the stopped pass did not continue to its end");
    lenet_iter_free(it);
    lenet_optimizer_free(o);
    lenet_model_free(m);
}
END_TEST

static void setup(void)
{
    idx_dir_create();
    train_set = blocks("train", TRAIN, 1);
    test_set = blocks("test", TEST, 2);
}

static void teardown(void)
{
    lenet_dataset_free(train_set);
    lenet_dataset_free(test_set);
    idx_dir_remove();
}

int main(int argc, char **argv)
{
    int provided;
    if (MPI_Init_thread(&argc, &argv, MPI_THREAD_FUNNELED, &provided) != MPI_SUCCESS) {
        fprintf(stderr, "test_mpi: MPI_Init_thread failed\n");
        return 1;
    }
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    /* Forking after MPI_Init is not allowed: the tests run in this process (meson sets CK_FORK=no as well). */
    setenv("CK_FORK", "no", 1);
    Suite *s = suite_create("mpi");
    TCase *tc = tcase_create("mpi");
    tcase_add_unchecked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 240);
    tcase_add_test(tc, test_the_d2l_lenet_trains_bit_identically_for_batches_of_one_to_eight_chunks);
    tcase_add_test(tc, test_a_batchnorm_and_dropout_model_trains_bit_identically);
    tcase_add_test(tc, test_training_with_a_criterion_gathers_the_outputs_and_stays_bit_identical);
    tcase_add_test(tc, test_every_rank_resumes_from_rank_0s_checkpoint_as_one_process_would);
    tcase_add_test(tc, test_a_bad_checkpoint_on_one_rank_fails_every_rank_with_its_message_and_changes_nothing);
    tcase_add_test(tc, test_a_non_finite_forward_on_one_rank_fails_every_rank_naming_the_layer_and_keeps_the_parameters);
    tcase_add_test(tc, test_an_iterator_failing_on_one_rank_mid_pass_fails_every_rank_and_undoes_the_step);
    tcase_add_test(tc, test_ranks_with_other_batch_sizes_or_weights_are_refused_at_the_first_step);
    tcase_add_test(tc, test_every_rank_sees_the_same_global_batches_and_runs_a_contiguous_share_of_their_chunks);
    tcase_add_test(tc, test_set_comm_is_collective_refuses_a_null_model_everywhere_and_detaches);
    tcase_add_test(tc, test_a_stop_on_one_rank_stops_every_rank_at_the_same_batch);
    suite_add_tcase(s, tc);
    int status = lenet_test_run(s);
    /* Every rank must pass: a failure on one fails the run. */
    int mine = status == 0, all = 0;
    MPI_Allreduce(&mine, &all, 1, MPI_INT, MPI_LAND, MPI_COMM_WORLD);
    MPI_Finalize();
    return all ? 0 : 1;
}

#else /* !LENET_WITH_MPI */

#include <stdio.h>

int main(void)
{
    printf("test_mpi: SKIPPED: liblenet was configured without MPI; `meson setup -Dmpi=enabled` builds the data-parallel "
           "backend and runs this suite under mpirun -np 2, 3 and 4\n");
    return 77;
}

#endif
