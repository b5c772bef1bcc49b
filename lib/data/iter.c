/* Batches in a seeded permutation.  Each pass draws a new permutation from the same generator stream, so
 * a seed fixes the whole sequence of passes on every machine.
 *
 * Augmentation draws nothing from that stream.  Each image's draws are seeded by a key derived from the generator's
 * state once the pass's permutation is drawn (a function of the seed and the pass number, and what a checkpoint
 * saves) and the image's position in the pass: so the augmented images depend neither on the thread count nor on
 * the batch size, and a resumed iterator augments exactly as the saved one would have. */
#include <stdio.h>
#include <string.h>

#include "data/internal.h"

struct lenet_iter {
    lenet_dataset *d; /* borrowed */
    int batch_size;
    bool shuffle;
    lenet_rng rng;
    size_t *order;
    size_t pos;
    int h, w;         /* image size when the iterator was made */
    lenet_tensor *images;
    int32_t *labels;
    lenet_augment *augment;  /* owned copy, NULL for none */
    float *scratch;          /* augmentation scratch: scratch_workers slices of scratch_floats */
    size_t scratch_floats;
    int scratch_workers;
};

static void new_permutation(lenet_iter *it)
{
    size_t n = it->d->n;
    for (size_t i = 0; i < n; i++)
        it->order[i] = i;
    if (!it->shuffle || n < 2) {
        /* No permutation to draw, but every pass needs its own generator state: it keys the pass's augmentation.
         * (A shuffled pass of two or more examples always advances the generator.) */
        (void)lenet__rng_u64(&it->rng);
        return;
    }
    for (size_t i = n; i > 1; i--) {
        size_t j = (size_t)lenet__rng_below(&it->rng, i);
        size_t t = it->order[i - 1];
        it->order[i - 1] = it->order[j];
        it->order[j] = t;
    }
}

lenet_iter *lenet_iter_create(lenet_dataset *d, int batch_size, bool shuffle, uint64_t seed)
{
    if (!d)
        return lenet__fail_null(LENET_EINVAL, "iter_create: dataset is NULL");
    if (batch_size < 1)
        return lenet__fail_null(LENET_EINVAL, "iter_create: batch size %d must be >= 1", batch_size);
    if ((size_t)batch_size > d->n)
        batch_size = (int)d->n;
    lenet_iter *it = lenet__calloc(1, sizeof *it);
    if (!it)
        return lenet__oom("iterator"), NULL;
    it->d = d;
    it->batch_size = batch_size;
    it->shuffle = shuffle;
    it->h = lenet_dataset_height(d);
    it->w = lenet_dataset_width(d);
    lenet__rng_seed(&it->rng, seed);
    it->order = lenet__malloc(d->n * sizeof *it->order);
    it->labels = lenet__malloc((size_t)batch_size * sizeof *it->labels);
    it->images = lenet_tensor_create(4, (int[]){batch_size, 1, it->h, it->w});
    if (!it->order || !it->labels || !it->images) {
        lenet_iter_free(it);
        return lenet__oom("iterator"), NULL;
    }
    new_permutation(it);
    return it;
}

/* The augmentation key of the current pass: a hash of the generator's state after the pass's permutation. */
static uint64_t pass_key(const lenet_iter *it)
{
    uint64_t key = 0x6175676d656e74ULL; /* "augment": unrelated to the permutation's draws */
    for (int i = 0; i < 4; i++)
        key = lenet__rng_mix(key, it->rng.s[i]);
    return key;
}

/* Grows the augmentation scratch to `workers` slices. */
static lenet_status reserve_scratch(lenet_iter *it, int workers)
{
    if (workers <= it->scratch_workers)
        return LENET_OK;
    size_t floats = lenet__augment_scratch_floats(it->h, it->w), bytes;
    if (lenet__mul_overflows(floats, (size_t)workers, &bytes) || lenet__mul_overflows(bytes, sizeof(float), &bytes))
        return lenet__oom("augmentation scratch");
    float *scratch = lenet__malloc_aligned(bytes);
    if (!scratch)
        return lenet__oom("augmentation scratch");
    lenet__free_aligned(it->scratch);
    it->scratch = scratch;
    it->scratch_floats = floats;
    it->scratch_workers = workers;
    return LENET_OK;
}

/* One batch being rendered and augmented, sample by sample on the worker pool. */
typedef struct render_job {
    const lenet_iter *it;
    uint64_t key;
    size_t plane;
} render_job;

static void render_augment_one(void *ctx, int i, int worker)
{
    const render_job *job = ctx;
    const lenet_iter *it = job->it;
    const size_t position = it->pos + (size_t)i;
    float *image = it->images->data + (size_t)i * job->plane;
    lenet__dataset_render(it->d, it->order[position], image);
    lenet__augment_image(it->augment, lenet__rng_mix(job->key, position), image, it->h, it->w, it->d->background,
                         it->scratch + (size_t)worker * it->scratch_floats);
}

lenet_status lenet_iter_next(lenet_iter *it, const lenet_tensor **images, const int32_t **labels, int *count)
{
    if (!it || !images || !labels || !count)
        return lenet__fail(LENET_EINVAL, "iter_next: %s is NULL", !it ? "iterator" : "an output pointer");
    if (it->pos >= it->d->n)
        return LENET_DONE;
    if (lenet_dataset_height(it->d) != it->h || lenet_dataset_width(it->d) != it->w)
        return lenet__fail(LENET_ESTATE, "iter_next: the data set's padding changed after the iterator was made");
    size_t left = it->d->n - it->pos;
    int n = left < (size_t)it->batch_size ? (int)left : it->batch_size;
    size_t plane = (size_t)it->h * it->w;
    int threads = 1;
    if (it->augment) {
        threads = lenet__threads();
        if (threads > n)
            threads = n;
        lenet_status st = reserve_scratch(it, threads);
        if (st != LENET_OK) {
            lenet__error_prefix("iter_next: ");
            return st;
        }
    }
    lenet__tensor_reshape(it->images, 4, (int[]){n, 1, it->h, it->w});
    if (it->augment) {
        render_job job = {it, pass_key(it), plane};
        lenet__parallel_for(n, threads, render_augment_one, &job);
    } else {
        for (int i = 0; i < n; i++)
            lenet__dataset_render(it->d, it->order[it->pos + (size_t)i], it->images->data + (size_t)i * plane);
    }
    for (int i = 0; i < n; i++)
        it->labels[i] = it->d->labels[it->order[it->pos + (size_t)i]];
    it->pos += (size_t)n;
    *images = it->images;
    *labels = it->labels;
    *count = n;
    return LENET_OK;
}

lenet_status lenet_iter_reset(lenet_iter *it)
{
    if (!it)
        return lenet__fail(LENET_EINVAL, "iter_reset: iterator is NULL");
    it->pos = 0;
    new_permutation(it);
    return LENET_OK;
}

lenet_status lenet_iter_set_augment(lenet_iter *it, const lenet_augment *a)
{
    if (!it)
        return lenet__fail(LENET_EINVAL, "iter_set_augment: iterator is NULL");
    lenet_augment *copy = NULL;
    if (a && lenet_augment_count(a) > 0 && !(copy = lenet__augment_copy(a))) {
        lenet__error_prefix("iter_set_augment: ");
        return LENET_ENOMEM;
    }
    lenet_augment_free(it->augment);
    it->augment = copy;
    return LENET_OK;
}

size_t lenet_iter_total(const lenet_iter *it)
{
    return it ? it->d->n : 0;
}

size_t lenet_iter_position(const lenet_iter *it)
{
    return it ? it->pos : 0;
}

void lenet_iter_free(lenet_iter *it)
{
    if (!it)
        return;
    lenet__free(it->order);
    lenet__free(it->labels);
    lenet_tensor_free(it->images);
    lenet_augment_free(it->augment);
    lenet__free_aligned(it->scratch);
    lenet__free(it);
}

/* ---- state for checkpoints (lib/io) ---- */

void lenet__iter_get_state(const lenet_iter *it, lenet_iter_state *s)
{
    s->size = it->d->n;
    s->batch_size = it->batch_size;
    s->shuffle = it->shuffle;
    s->position = it->pos;
    s->order = it->order;
    for (int i = 0; i < 4; i++)
        s->rng[i] = it->rng.s[i];
    s->has_augment = true;
    s->augment = lenet__augment_fingerprint(it->augment);
}

lenet_status lenet__iter_check_state(const lenet_iter *it, const lenet_iter_state *s)
{
    if (s->size != it->d->n)
        return lenet__fail(LENET_ESTATE, "the saved iterator went over %zu examples, this one over %zu", s->size,
                           it->d->n);
    if (s->batch_size != it->batch_size || s->shuffle != it->shuffle)
        return lenet__fail(LENET_ESTATE, "the saved iterator had batch size %d%s, this one %d%s", s->batch_size,
                           s->shuffle ? " with shuffling" : " without shuffling", it->batch_size,
                           it->shuffle ? " with shuffling" : " without shuffling");
    if (s->has_augment && s->augment != lenet__augment_fingerprint(it->augment)) {
        char mine[256];
        lenet__augment_describe(it->augment, mine, sizeof mine);
        return lenet__fail(LENET_ESTATE, "the saved iterator %s; this one has %s",
                           s->augment ? "was augmented with other transforms" : "had no augmentation", mine);
    }
    if (s->position > s->size)
        return lenet__fail(LENET_EFORMAT, "iterator position %zu beyond its %zu examples", s->position, s->size);
    if (s->rng[0] == 0 && s->rng[1] == 0 && s->rng[2] == 0 && s->rng[3] == 0)
        return lenet__fail(LENET_EFORMAT, "iterator generator state is all zero");
    if (s->size > 0 && !s->order)
        return lenet__fail(LENET_EFORMAT, "iterator order is missing");
    unsigned char *seen = lenet__calloc(s->size ? s->size : 1, 1);
    if (!seen)
        return lenet__oom("iterator order check");
    lenet_status st = LENET_OK;
    for (size_t i = 0; i < s->size; i++) {
        size_t k = s->order[i];
        if (k >= s->size || seen[k]) {
            st = lenet__fail(LENET_EFORMAT, "iterator order is not a permutation: entry %zu is %zu", i, k);
            break;
        }
        seen[k] = 1;
    }
    lenet__free(seen);
    return st;
}

void lenet__iter_set_state(lenet_iter *it, const lenet_iter_state *s)
{
    if (s->size > 0)
        memcpy(it->order, s->order, s->size * sizeof *it->order);
    it->pos = s->position;
    for (int i = 0; i < 4; i++)
        it->rng.s[i] = s->rng[i];
}
