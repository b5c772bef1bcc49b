/* Batches in a seeded permutation.  Each pass draws a new permutation from the same generator stream, so
 * a seed fixes the whole sequence of passes on every machine. */
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
};

static void new_permutation(lenet_iter *it)
{
    size_t n = it->d->n;
    for (size_t i = 0; i < n; i++)
        it->order[i] = i;
    if (!it->shuffle)
        return;
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
    lenet__tensor_reshape(it->images, 4, (int[]){n, 1, it->h, it->w});
    size_t plane = (size_t)it->h * it->w;
    for (int i = 0; i < n; i++) {
        size_t idx = it->order[it->pos + (size_t)i];
        lenet__dataset_render(it->d, idx, it->images->data + (size_t)i * plane);
        it->labels[i] = it->d->labels[idx];
    }
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
