/* Data augmentation: each transform's geometry on synthetic images, identity at zero strength, seeded and
 * thread-independent draws, resuming from a checkpoint, argument checks.  Data sets are IDX files the test writes
 * into a private temporary directory (idxfixture.h); single images go through lenet__augment_image directly, in
 * buffers of exactly their size, so an ASan build catches any read outside them.
 *
 * With LENET_AUGMENT_TIMING=<directory of Fashion-MNIST's IDX files>, one more test times a d2l LeNet training epoch
 * with and without each preset and prints the figures quoted in docs/augmentation.md. */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/internal.h" /* lenet__alloc_fail_at */
#include "data/internal.h" /* lenet__augment_image, lenet__augment_affine, iterator state */
#include "idxfixture.h"
#include "testutil.h"

static void setup(void)
{
    idx_dir_create();
}

static void teardown(void)
{
    idx_dir_remove();
}

/* Also after a failed test with CK_FORK=no. */
static void teardown_threads(void)
{
    lenet_threads_set(0);
}

typedef uint8_t (*pixel_fn)(size_t i, int y, int x);

/* Writes n images h x w of `pixel` (labels i mod 10) and opens them. */
static lenet_dataset *open_set(size_t n, int h, int w, pixel_fn pixel)
{
    static int serial;
    uint8_t *pixels = malloc(n * (size_t)h * (size_t)w), *labels = malloc(n);
    ck_assert_ptr_nonnull(pixels);
    ck_assert_ptr_nonnull(labels);
    for (size_t i = 0; i < n; i++) {
        labels[i] = (uint8_t)(i % 10);
        for (int y = 0; y < h; y++)
            for (int x = 0; x < w; x++)
                pixels[(i * (size_t)h + (size_t)y) * (size_t)w + (size_t)x] = pixel(i, y, x);
    }
    idx_bytes images = idx_images((uint32_t)n, (uint32_t)h, (uint32_t)w, pixels), label_bytes = idx_labels((uint32_t)n, labels);
    char name[2][64];
    snprintf(name[0], sizeof name[0], "images-%d", serial);
    snprintf(name[1], sizeof name[1], "labels-%d", serial++);
    const char *images_path = idx_write_bytes(name[0], &images, false);
    const char *labels_path = idx_write_bytes(name[1], &label_bytes, false);
    lenet_dataset *d = lenet_dataset_open_idx(images_path, labels_path);
    ck_assert_msg(d != NULL, "opening %s: %s", images_path, lenet_last_error());
    idx_bytes_free(&images);
    idx_bytes_free(&label_bytes);
    free(pixels);
    free(labels);
    return d;
}

/* Every byte value, neighbours differ, examples differ. */
static uint8_t pattern(size_t i, int y, int x)
{
    return (uint8_t)((i * 37u + (unsigned)y * 11u + (unsigned)x * 5u + 3u) % 256u);
}

/* One bright pixel at the centre of a 9 x 9 image. */
static uint8_t dot(size_t i, int y, int x)
{
    (void)i;
    return y == 4 && x == 4 ? 255 : 0;
}

/* Brightness growing to the right: a mirror image is told from the original. */
static uint8_t gradient(size_t i, int y, int x)
{
    (void)i;
    return (uint8_t)(x * 30 + y);
}

/* Drains the rest of a pass into `images` (optional) and returns the examples seen. */
static size_t drain(lenet_iter *it, float *images)
{
    const lenet_tensor *x;
    const int32_t *y;
    int count;
    size_t seen = 0;
    lenet_status st;
    while ((st = lenet_iter_next(it, &x, &y, &count)) == LENET_OK) {
        size_t floats = lenet_tensor_numel(x);
        if (images)
            memcpy(images + seen * (floats / (size_t)count), lenet_tensor_cdata(x), floats * sizeof(float));
        seen += (size_t)count;
    }
    ck_assert_msg(st == LENET_DONE, "iter_next: %s (%s)", lenet_status_str(st), lenet_last_error());
    return seen;
}

/* One pass of a new iterator over d (batch, shuffle, seed) with pipeline a (NULL: none) into images. */
static void one_pass(lenet_dataset *d, int batch, bool shuffle, uint64_t seed, const lenet_augment *a, float *images)
{
    lenet_iter *it = lenet_iter_create(d, batch, shuffle, seed);
    ck_assert_ptr_nonnull(it);
    ck_assert_lenet_ok(lenet_iter_set_augment(it, a));
    ck_assert_uint_eq(drain(it, images), lenet_dataset_size(d));
    lenet_iter_free(it);
}

static float *floats(size_t n)
{
    float *p = malloc((n ? n : 1) * sizeof *p);
    ck_assert_ptr_nonnull(p);
    return p;
}

/* An augmentation scratch of exactly the size it asks for. */
static float *scratch_for(int h, int w)
{
    return floats(lenet__augment_scratch_floats(h, w));
}

/* ---- identity ---- */

START_TEST(test_every_transform_at_zero_strength_is_the_identity_bit_for_bit)
{
    enum { N = 37, H = 11, W = 13 };
    lenet_dataset *d = open_set(N, H, W, pattern);
    ck_assert_lenet_ok(lenet_dataset_set_padding(d, 2));
    ck_assert_lenet_ok(lenet_dataset_set_range(d, -0.1f, 1.175f));
    const size_t plane = (size_t)(H + 4) * (W + 4);
    lenet_augment *a = lenet_augment_create();
    ck_assert_ptr_nonnull(a);
    ck_assert_lenet_ok(lenet_augment_add_crop(a, 0));
    ck_assert_lenet_ok(lenet_augment_add_flip(a, 0.0f));
    ck_assert_lenet_ok(lenet_augment_add_affine(a, 0.0f, 0.0f, 0.0f, 0.0f));
    ck_assert_lenet_ok(lenet_augment_add_elastic(a, 0.0f, 4.0f));
    ck_assert_lenet_ok(lenet_augment_add_affine(a, 0.0f, 0.0f, 0.0f, 0.0f)); /* alone, not fused with elastic */
    ck_assert_uint_eq(lenet_augment_count(a), 5);
    float *plain = floats(N * plane), *augmented = floats(N * plane);
    one_pass(d, 5, true, 3, NULL, plain);
    one_pass(d, 5, true, 3, a, augmented);
    ck_assert_msg(memcmp(plain, augmented, N * plane * sizeof(float)) == 0,
                  "zero-strength transforms changed an image");
    /* and an iterator not asked to augment gives the data set's own images */
    one_pass(d, 5, false, 0, NULL, plain);
    for (size_t i = 0; i < N; i++) {
        float image[(H + 4) * (W + 4)];
        ck_assert_lenet_ok(lenet_dataset_image(d, i, image));
        ck_assert_msg(memcmp(image, plain + i * plane, sizeof image) == 0, "image %zu differs", i);
    }
    free(plain);
    free(augmented);
    lenet_augment_free(a);
    lenet_dataset_free(d);
}
END_TEST

START_TEST(test_elastic_with_alpha_zero_is_the_identity)
{
    const int sizes[][2] = {{28, 28}, {1, 1}, {1, 9}, {9, 1}, {5, 40}};
    const float sigmas[] = {0.5f, 4.0f, 100.0f};
    for (size_t s = 0; s < sizeof sizes / sizeof *sizes; s++) {
        const int h = sizes[s][0], w = sizes[s][1];
        for (size_t k = 0; k < sizeof sigmas / sizeof *sigmas; k++) {
            lenet_augment *a = lenet_augment_create();
            ck_assert_lenet_ok(lenet_augment_add_elastic(a, 0.0f, sigmas[k]));
            float *image = floats((size_t)h * w), *original = floats((size_t)h * w), *scratch = scratch_for(h, w);
            for (int p = 0; p < h * w; p++)
                image[p] = original[p] = (float)((p * 7919) % 101) / 37.0f - 1.0f;
            lenet__augment_image(a, 1234 + k, image, h, w, -0.5f, scratch);
            ck_assert_msg(memcmp(image, original, (size_t)h * w * sizeof(float)) == 0,
                          "elastic(0, %g) changed a %d x %d image", (double)sigmas[k], h, w);
            free(image);
            free(original);
            free(scratch);
            lenet_augment_free(a);
        }
    }
}
END_TEST

/* ---- geometry ---- */

START_TEST(test_crop_moves_a_dot_by_whole_pixels_within_the_padding_and_reaches_every_offset)
{
    enum { N = 600, H = 9, W = 9, PAD = 2 };
    lenet_dataset *d = open_set(N, H, W, dot);
    lenet_augment *a = lenet_augment_create();
    ck_assert_lenet_ok(lenet_augment_add_crop(a, PAD));
    float *images = floats((size_t)N * H * W);
    one_pass(d, 64, true, 5, a, images);
    int seen[2 * PAD + 1][2 * PAD + 1] = {{0}};
    for (size_t i = 0; i < N; i++) {
        const float *image = images + i * H * W;
        int lit = 0, at = -1;
        for (int p = 0; p < H * W; p++) {
            ck_assert_msg(image[p] == 0.0f || image[p] == 1.0f, "image %zu pixel %d is %g: not moved whole", i, p,
                          (double)image[p]);
            if (image[p] == 1.0f) {
                lit++;
                at = p;
            }
        }
        ck_assert_msg(lit == 1, "image %zu has %d lit pixels", i, lit);
        const int dy = at / W - 4, dx = at % W - 4;
        ck_assert_msg(abs(dy) <= PAD && abs(dx) <= PAD, "image %zu: the dot moved by (%d, %d)", i, dx, dy);
        seen[dy + PAD][dx + PAD]++;
    }
    for (int dy = 0; dy <= 2 * PAD; dy++)
        for (int dx = 0; dx <= 2 * PAD; dx++)
            ck_assert_msg(seen[dy][dx] > 0, "no image moved by (%d, %d) in %d", dx - PAD, dy - PAD, N);
    free(images);
    lenet_augment_free(a);
    lenet_dataset_free(d);
}
END_TEST

START_TEST(test_translation_moves_a_dot_and_fills_with_the_background)
{
    enum { H = 9, W = 11 };
    float image[H * W], *scratch = scratch_for(H, W);
    const float bg = -0.25f;
    for (int p = 0; p < H * W; p++)
        image[p] = bg;
    image[4 * W + 5] = 3.0f;
    lenet__augment_affine(image, H, W, bg, 0.0, 1.0, 0.0, 2.0, -1.0, scratch);
    for (int y = 0; y < H; y++)
        for (int x = 0; x < W; x++) {
            const float want = (y == 3 && x == 7) ? 3.0f : bg;
            ck_assert_msg(image[y * W + x] == want, "pixel (%d, %d) is %g, expected %g", x, y,
                          (double)image[y * W + x], (double)want);
        }
    /* half a pixel: the dot splits evenly between two columns */
    for (int p = 0; p < H * W; p++)
        image[p] = 0.0f;
    image[4 * W + 5] = 1.0f;
    lenet__augment_affine(image, H, W, 0.0f, 0.0, 1.0, 0.0, 0.5, 0.0, scratch);
    ck_assert_float_eq(image[4 * W + 5], 0.5f);
    ck_assert_float_eq(image[4 * W + 6], 0.5f);
    free(scratch);
}
END_TEST

START_TEST(test_flip_mirrors_a_gradient_exactly)
{
    enum { N = 8, H = 6, W = 7 };
    lenet_dataset *d = open_set(N, H, W, gradient);
    lenet_augment *a = lenet_augment_create();
    ck_assert_lenet_ok(lenet_augment_add_flip(a, 1.0f));
    float *images = floats((size_t)N * H * W), original[H * W];
    one_pass(d, 3, false, 0, a, images);
    ck_assert_lenet_ok(lenet_dataset_image(d, 0, original));
    for (size_t i = 0; i < N; i++)
        for (int y = 0; y < H; y++)
            for (int x = 0; x < W; x++)
                ck_assert_msg(images[i * H * W + (size_t)(y * W + x)] == original[y * W + (W - 1 - x)],
                              "image %zu pixel (%d, %d) is not the mirror's", i, x, y);
    free(images);
    lenet_augment_free(a);
    lenet_dataset_free(d);
}
END_TEST

START_TEST(test_flip_at_one_half_mirrors_about_half_the_images)
{
    enum { N = 2000, H = 4, W = 5 };
    lenet_dataset *d = open_set(N, H, W, gradient);
    lenet_augment *a = lenet_augment_create();
    ck_assert_lenet_ok(lenet_augment_add_flip(a, 0.5f));
    float *images = floats((size_t)N * H * W), original[H * W];
    ck_assert_lenet_ok(lenet_dataset_image(d, 0, original));
    int flipped = 0;
    for (int pass = 0; pass < 2; pass++) {
        lenet_iter *it = lenet_iter_create(d, 128, pass == 1, 77);
        ck_assert_lenet_ok(lenet_iter_set_augment(it, a));
        drain(it, images);
        lenet_iter_free(it);
        for (size_t i = 0; i < N; i++) {
            const float *image = images + i * H * W;
            const bool same = memcmp(image, original, sizeof original) == 0;
            bool mirrored = true;
            for (int p = 0; p < H * W; p++)
                mirrored = mirrored && image[p] == original[(p / W) * W + (W - 1 - p % W)];
            ck_assert_msg(same != mirrored, "image %zu is neither the original nor its mirror", i);
            flipped += mirrored;
        }
    }
    /* 4000 fair coins: mean 2000, standard deviation 31.6; 5 deviations */
    ck_assert_msg(abs(flipped - N) < 160, "%d of %d images flipped at p = 0.5", flipped, 2 * N);
    free(images);
    lenet_augment_free(a);
    lenet_dataset_free(d);
}
END_TEST

/* A 9 x 9 image with a bar from the centre (4, 4) to the right edge. */
static void half_bar(float *image)
{
    for (int p = 0; p < 81; p++)
        image[p] = 0.0f;
    for (int x = 4; x < 9; x++)
        image[4 * 9 + x] = 1.0f;
}

START_TEST(test_a_90_degree_rotation_turns_a_bar_counter_clockwise)
{
    float image[81], *scratch = scratch_for(9, 9);
    half_bar(image);
    lenet__augment_affine(image, 9, 9, 0.0f, 90.0, 1.0, 0.0, 0.0, 0.0, scratch);
    /* counter-clockwise on screen: the bar now goes from the centre up */
    for (int y = 0; y < 9; y++)
        for (int x = 0; x < 9; x++) {
            const float want = (x == 4 && y <= 4) ? 1.0f : 0.0f;
            ck_assert_msg(image[y * 9 + x] == want, "after +90: pixel (%d, %d) is %g", x, y, (double)image[y * 9 + x]);
        }
    half_bar(image);
    lenet__augment_affine(image, 9, 9, 0.0f, -90.0, 1.0, 0.0, 0.0, 0.0, scratch);
    for (int y = 0; y < 9; y++)
        for (int x = 0; x < 9; x++) {
            const float want = (x == 4 && y >= 4) ? 1.0f : 0.0f;
            ck_assert_msg(image[y * 9 + x] == want, "after -90: pixel (%d, %d) is %g", x, y, (double)image[y * 9 + x]);
        }
    /* scale 0.5 about the centre halves the bar: source x = 4 + 2 (x - 4) */
    half_bar(image);
    lenet__augment_affine(image, 9, 9, 0.0f, 0.0, 0.5, 0.0, 0.0, 0.0, scratch);
    for (int x = 0; x < 9; x++)
        ck_assert_msg(image[4 * 9 + x] == (x >= 4 && x <= 6 ? 1.0f : 0.0f),
                      "after scale 0.5: pixel (%d, 4) is %g", x, (double)image[4 * 9 + x]);
    free(scratch);
}
END_TEST

START_TEST(test_shear_slants_a_vertical_bar)
{
    enum { S = 9 };
    float image[S * S], *scratch = scratch_for(S, S);
    for (int p = 0; p < S * S; p++)
        image[p] = (p % S == 4) ? 1.0f : 0.0f;
    /* 45 degrees: row y moves by (y - 4) pixels along x (rows grow downwards) */
    lenet__augment_affine(image, S, S, 0.0f, 0.0, 1.0, 45.0, 0.0, 0.0, scratch);
    for (int y = 0; y < S; y++)
        for (int x = 0; x < S; x++) {
            const float want = x == 4 + (y - 4) ? 1.0f : 0.0f;
            ck_assert_msg(fabsf(image[y * S + x] - want) < 1e-6f, "pixel (%d, %d) is %g, expected %g", x, y,
                          (double)image[y * S + x], (double)want);
        }
    free(scratch);
}
END_TEST

/* The RMS of Simard's field, alpha * sqrt(E[U^2] * sum of the 2-D kernel's squares) in the interior. */
static double expected_elastic_rms(double alpha, double sigma)
{
    const int radius = (int)(4.0 * sigma + 0.5);
    double sum = 0.0, squares = 0.0;
    for (int k = -radius; k <= radius; k++)
        sum += exp(-(double)k * k / (2.0 * sigma * sigma));
    for (int k = -radius; k <= radius; k++) {
        const double g = exp(-(double)k * k / (2.0 * sigma * sigma)) / sum;
        squares += g * g;
    }
    return alpha * sqrt(squares * squares / 3.0);
}

START_TEST(test_elastic_displacements_are_smooth_with_the_size_alpha_and_sigma_give)
{
    /* On the ramp f(x, y) = x, bilinear sampling returns the sampled coordinate: out - x is the field's dx. */
    enum { S = 64, LO = 20, HI = 44, KEYS = 24 };
    float *ramp_x = floats(S * S), *ramp_y = floats(S * S), *scratch = scratch_for(S, S);
    lenet_augment *a = lenet_augment_create();
    ck_assert_lenet_ok(lenet_augment_add_elastic(a, 34.0f, 4.0f));
    double squares = 0.0, step_squares = 0.0;
    size_t count = 0, steps = 0;
    for (uint64_t key = 0; key < KEYS; key++) {
        for (int y = 0; y < S; y++)
            for (int x = 0; x < S; x++) {
                ramp_x[y * S + x] = (float)x;
                ramp_y[y * S + x] = (float)y;
            }
        lenet__augment_image(a, key, ramp_x, S, S, 0.0f, scratch);
        lenet__augment_image(a, key, ramp_y, S, S, 0.0f, scratch);
        for (int y = LO; y < HI; y++)
            for (int x = LO; x < HI; x++) {
                const double dx = ramp_x[y * S + x] - x, dy = ramp_y[y * S + x] - y;
                squares += dx * dx + dy * dy;
                count += 2;
                if (x > LO) {
                    const double sx = dx - (ramp_x[y * S + x - 1] - (x - 1));
                    step_squares += sx * sx;
                    steps++;
                }
            }
    }
    const double rms = sqrt(squares / (double)count), want = expected_elastic_rms(34.0, 4.0);
    const double step_rms = sqrt(step_squares / (double)steps);
    ck_assert_msg(fabs(rms - want) < 0.15 * want, "elastic(34, 4): displacement RMS %.3f px, expected %.3f", rms,
                  want);
    /* smooth: neighbouring displacements differ by much less than the displacements themselves */
    ck_assert_msg(step_rms < 0.35 * rms, "elastic(34, 4): neighbour difference RMS %.3f vs RMS %.3f", step_rms, rms);
    free(ramp_x);
    free(ramp_y);
    free(scratch);
    lenet_augment_free(a);
}
END_TEST

/* ---- reproducibility ---- */

START_TEST(test_same_seed_repeats_the_augmented_passes_and_each_pass_draws_anew)
{
    enum { N = 50, H = 12, W = 12, PLANE = H * W };
    lenet_dataset *d = open_set(N, H, W, pattern);
    lenet_augment *a = lenet_augment_mnist();
    ck_assert_ptr_nonnull(a);
    for (int shuffle = 0; shuffle < 2; shuffle++) {
        float *passes[2][2];
        lenet_iter *its[2] = {lenet_iter_create(d, 8, shuffle, 21), lenet_iter_create(d, 8, shuffle, 21)};
        for (int k = 0; k < 2; k++) {
            ck_assert_lenet_ok(lenet_iter_set_augment(its[k], a));
            for (int p = 0; p < 2; p++) {
                passes[k][p] = floats(N * PLANE);
                if (p)
                    ck_assert_lenet_ok(lenet_iter_reset(its[k]));
                drain(its[k], passes[k][p]);
            }
        }
        for (int p = 0; p < 2; p++)
            ck_assert_msg(memcmp(passes[0][p], passes[1][p], N * PLANE * sizeof(float)) == 0,
                          "shuffle %d pass %d differs between two iterators of the same seed", shuffle, p);
        if (!shuffle) /* same order, so the same image in the same place: the transforms must differ */
            ck_assert_msg(memcmp(passes[0][0], passes[0][1], N * PLANE * sizeof(float)) != 0,
                          "the second unshuffled pass repeated the first pass's augmentation");
        float *other = floats(N * PLANE);
        one_pass(d, 8, shuffle, 22, a, other);
        ck_assert_msg(memcmp(passes[0][0], other, N * PLANE * sizeof(float)) != 0, "seed 22 gave seed 21's pass");
        free(other);
        for (int k = 0; k < 2; k++) {
            lenet_iter_free(its[k]);
            for (int p = 0; p < 2; p++)
                free(passes[k][p]);
        }
    }
    lenet_augment_free(a);
    lenet_dataset_free(d);
}
END_TEST

START_TEST(test_augmented_batches_are_bit_identical_for_1_2_4_threads_and_any_batch_size)
{
    enum { N = 90, H = 28, W = 28, PLANE = H * W };
    lenet_dataset *d = open_set(N, H, W, pattern);
    lenet_augment *a = lenet_augment_mnist();
    ck_assert_lenet_ok(lenet_augment_add_crop(a, 3));
    ck_assert_lenet_ok(lenet_augment_add_flip(a, 0.5f));
    float *reference = floats(N * PLANE), *other = floats(N * PLANE);
    lenet_threads_set(1);
    one_pass(d, 32, true, 9, a, reference);
    const int threads[] = {1, 2, 4, 4}, batches[] = {7, 32, 90, 1};
    for (size_t k = 0; k < 4; k++) {
        lenet_threads_set(threads[k]);
        one_pass(d, batches[k], true, 9, a, other);
        ck_assert_msg(memcmp(reference, other, N * PLANE * sizeof(float)) == 0,
                      "%d threads, batch %d: the augmented pass differs", threads[k], batches[k]);
    }
    free(reference);
    free(other);
    lenet_augment_free(a);
    lenet_dataset_free(d);
}
END_TEST

/* Copies an iterator's state with its own copy of the order. */
static lenet_iter_state save_state(const lenet_iter *it, size_t **order)
{
    lenet_iter_state s;
    lenet__iter_get_state(it, &s);
    *order = malloc(s.size * sizeof **order);
    ck_assert_ptr_nonnull(*order);
    memcpy(*order, s.order, s.size * sizeof **order);
    s.order = *order;
    return s;
}

START_TEST(test_an_iterator_resumed_from_its_state_augments_as_the_saved_one)
{
    enum { N = 40, H = 10, W = 10, PLANE = H * W, BATCH = 6 };
    lenet_dataset *d = open_set(N, H, W, pattern);
    lenet_augment *a = lenet_augment_mnist();
    float *want = floats(2 * N * PLANE), *got = floats(2 * N * PLANE);
    lenet_iter *saved = lenet_iter_create(d, BATCH, true, 31);
    ck_assert_lenet_ok(lenet_iter_set_augment(saved, a));
    const lenet_tensor *x;
    const int32_t *y;
    int count;
    for (int b = 0; b < 3; b++) /* 18 examples into the first pass */
        ck_assert_lenet_ok(lenet_iter_next(saved, &x, &y, &count));
    size_t *order;
    lenet_iter_state s = save_state(saved, &order);
    size_t rest = drain(saved, want);
    ck_assert_lenet_ok(lenet_iter_reset(saved));
    drain(saved, want + rest * PLANE);

    lenet_iter *resumed = lenet_iter_create(d, BATCH, true, 999); /* the state replaces the seed */
    ck_assert_lenet_ok(lenet_iter_set_augment(resumed, a));
    ck_assert_lenet_ok(lenet__iter_check_state(resumed, &s));
    lenet__iter_set_state(resumed, &s);
    ck_assert_uint_eq(drain(resumed, got), rest);
    ck_assert_lenet_ok(lenet_iter_reset(resumed));
    drain(resumed, got + rest * PLANE);
    ck_assert_msg(memcmp(want, got, (rest + N) * PLANE * sizeof(float)) == 0,
                  "the resumed iterator's images differ from the saved one's");

    /* a state that records another pipeline is refused, naming this one's; one that records none is not compared */
    lenet_augment *fashion = lenet_augment_fashion();
    ck_assert_lenet_ok(lenet_iter_set_augment(resumed, fashion));
    ck_assert_int_eq(lenet__iter_check_state(resumed, &s), LENET_ESTATE);
    ck_assert_msg(strstr(lenet_last_error(), "crop(2), flip(0.5)") != NULL, "message: %s", lenet_last_error());
    ck_assert_lenet_ok(lenet_iter_set_augment(resumed, NULL));
    ck_assert_int_eq(lenet__iter_check_state(resumed, &s), LENET_ESTATE);
    ck_assert_msg(strstr(lenet_last_error(), "no augmentation") != NULL, "message: %s", lenet_last_error());
    s.has_augment = false;
    ck_assert_lenet_ok(lenet__iter_check_state(resumed, &s));

    free(order);
    free(want);
    free(got);
    lenet_augment_free(fashion);
    lenet_augment_free(a);
    lenet_iter_free(saved);
    lenet_iter_free(resumed);
    lenet_dataset_free(d);
}
END_TEST

START_TEST(test_a_checkpoint_resumes_the_augmented_pass_bit_identically)
{
    enum { N = 30, H = 8, W = 8, PLANE = H * W, BATCH = 4 };
    lenet_dataset *d = open_set(N, H, W, pattern);
    lenet_augment *a = lenet_augment_fashion();
    ck_assert_lenet_ok(lenet_augment_add_affine(a, 15.0f, 0.1f, 5.0f, 1.0f));
    lenet_model *m = lenet_model_create();
    ck_assert_lenet_ok(lenet_model_add(m, lenet_flatten()));
    ck_assert_lenet_ok(lenet_model_add(m, lenet_linear(10)));
    ck_assert_lenet_ok(lenet_model_build(m, 1, H, W));
    lenet_iter *saved = lenet_iter_create(d, BATCH, false, 5), *resumed = lenet_iter_create(d, BATCH, false, 6);
    ck_assert_lenet_ok(lenet_iter_set_augment(saved, a));
    ck_assert_lenet_ok(lenet_iter_set_augment(resumed, a));
    drain(saved, NULL); /* a second pass: its augmentation is keyed by a generator state the first pass moved */
    ck_assert_lenet_ok(lenet_iter_reset(saved));
    const lenet_tensor *x;
    const int32_t *y;
    int count;
    ck_assert_lenet_ok(lenet_iter_next(saved, &x, &y, &count));
    const char *path = idx_write("checkpoint", "", 0);
    ck_assert_lenet_ok(lenet_checkpoint_save(m, NULL, saved, NULL, path));
    ck_assert_lenet_ok(lenet_checkpoint_load(m, NULL, resumed, path, NULL, 0));
    float *want = floats(N * PLANE), *got = floats(N * PLANE);
    size_t rest = drain(saved, want);
    ck_assert_uint_eq(drain(resumed, got), rest);
    ck_assert_msg(memcmp(want, got, rest * PLANE * sizeof(float)) == 0, "the resumed pass differs");
    ck_assert_lenet_ok(lenet_iter_reset(saved));
    ck_assert_lenet_ok(lenet_iter_reset(resumed));
    drain(saved, want);
    drain(resumed, got);
    ck_assert_msg(memcmp(want, got, N * PLANE * sizeof(float)) == 0, "the pass after the resumed one differs");
    free(want);
    free(got);
    lenet_iter_free(saved);
    lenet_iter_free(resumed);
    lenet_model_free(m);
    lenet_augment_free(a);
    lenet_dataset_free(d);
}
END_TEST

/* ---- memory ---- */

START_TEST(test_extreme_parameters_on_odd_sizes_read_only_inside_the_image)
{
    /* Exactly sized buffers: under ASan any read past an image or its scratch is an error. */
    const int sizes[][2] = {{1, 1}, {1, 7}, {7, 1}, {2, 3}, {5, 5}, {3, 31}};
    lenet_augment *a = lenet_augment_create();
    ck_assert_lenet_ok(lenet_augment_add_crop(a, 64));
    ck_assert_lenet_ok(lenet_augment_add_flip(a, 0.5f));
    ck_assert_lenet_ok(lenet_augment_add_affine(a, 180.0f, 0.99f, 60.0f, 1024.0f));
    ck_assert_lenet_ok(lenet_augment_add_elastic(a, 1000.0f, 100.0f));
    ck_assert_lenet_ok(lenet_augment_add_affine(a, 180.0f, 0.5f, 60.0f, 3.0f));
    ck_assert_lenet_ok(lenet_augment_add_elastic(a, 1000.0f, 0.01f));
    ck_assert_lenet_ok(lenet_augment_add_flip(a, 1.0f));
    lenet_augment *presets[3] = {a, lenet_augment_mnist(), lenet_augment_fashion()};
    for (size_t s = 0; s < sizeof sizes / sizeof *sizes; s++) {
        const int h = sizes[s][0], w = sizes[s][1];
        for (int p = 0; p < 3; p++)
            for (uint64_t key = 0; key < 20; key++) {
                float *image = floats((size_t)h * w), *scratch = scratch_for(h, w);
                for (int k = 0; k < h * w; k++)
                    image[k] = (float)k;
                lenet__augment_image(presets[p], key, image, h, w, -1.0f, scratch);
                for (int k = 0; k < h * w; k++)
                    ck_assert_msg(isfinite(image[k]) && image[k] >= -1.0f && image[k] <= (float)(h * w),
                                  "%d x %d, pipeline %d: pixel %d is %g, outside the input's range", h, w, p, k,
                                  (double)image[k]);
                free(image);
                free(scratch);
            }
    }
    for (int p = 0; p < 3; p++)
        lenet_augment_free(presets[p]);
}
END_TEST

START_TEST(test_set_augment_copies_the_pipeline_and_null_turns_it_off)
{
    enum { N = 20, H = 7, W = 7, PLANE = H * W };
    lenet_dataset *d = open_set(N, H, W, pattern);
    float *plain = floats(N * PLANE), *want = floats(N * PLANE), *got = floats(N * PLANE);
    one_pass(d, 3, true, 4, NULL, plain);
    lenet_augment *a = lenet_augment_fashion();
    one_pass(d, 3, true, 4, a, want);
    ck_assert_msg(memcmp(plain, want, N * PLANE * sizeof(float)) != 0, "the fashion preset changed nothing");
    lenet_iter *it = lenet_iter_create(d, 3, true, 4);
    ck_assert_lenet_ok(lenet_iter_set_augment(it, a));
    ck_assert_lenet_ok(lenet_augment_add_elastic(a, 30.0f, 3.0f)); /* changes the caller's, not the iterator's */
    lenet_augment_free(a);
    drain(it, got);
    ck_assert_msg(memcmp(want, got, N * PLANE * sizeof(float)) == 0, "the iterator did not keep its own copy");
    for (int off = 0; off < 2; off++) {
        lenet_iter *again = lenet_iter_create(d, 3, true, 4);
        lenet_augment *empty = lenet_augment_create();
        ck_assert_lenet_ok(lenet_iter_set_augment(again, a = lenet_augment_mnist()));
        lenet_augment_free(a);
        ck_assert_lenet_ok(lenet_iter_set_augment(again, off ? empty : NULL));
        drain(again, got);
        ck_assert_msg(memcmp(plain, got, N * PLANE * sizeof(float)) == 0, "%s did not turn augmentation off",
                      off ? "an empty pipeline" : "NULL");
        lenet_augment_free(empty);
        lenet_iter_free(again);
    }
    free(plain);
    free(want);
    free(got);
    lenet_iter_free(it);
    lenet_dataset_free(d);
}
END_TEST

START_TEST(test_out_of_memory_is_enomem_and_leaves_the_iterator_as_it_was)
{
    enum { N = 12, H = 6, W = 6 };
    lenet_dataset *d = open_set(N, H, W, pattern);
    lenet_augment *mnist = lenet_augment_mnist(), *fashion = lenet_augment_fashion();
    lenet_iter *it = lenet_iter_create(d, 4, true, 1);
    ck_assert_lenet_ok(lenet_iter_set_augment(it, mnist));
    lenet_iter_state s;
    lenet_status st = LENET_ENOMEM;
    for (size_t n = 1; st == LENET_ENOMEM; n++) { /* set_augment's copy: fail each allocation in turn */
        lenet__alloc_fail_at(n);
        st = lenet_iter_set_augment(it, fashion);
        lenet__alloc_fail_at(0);
        lenet__iter_get_state(it, &s);
        if (st == LENET_ENOMEM)
            ck_assert_msg(s.augment == lenet__augment_fingerprint(mnist), "a failed set_augment changed the pipeline");
        else
            ck_assert_lenet_ok(st);
    }
    ck_assert_uint_eq(s.augment, lenet__augment_fingerprint(fashion));
    /* iter_next's scratch, allocated at the first augmented batch */
    lenet_iter *fresh = lenet_iter_create(d, 4, true, 1);
    ck_assert_lenet_ok(lenet_iter_set_augment(fresh, mnist));
    const lenet_tensor *x;
    const int32_t *y;
    int count;
    lenet__alloc_fail_at(1);
    st = lenet_iter_next(fresh, &x, &y, &count);
    lenet__alloc_fail_at(0);
    ck_assert_int_eq(st, LENET_ENOMEM);
    ck_assert_msg(strstr(lenet_last_error(), "iter_next") != NULL, "message: %s", lenet_last_error());
    ck_assert_uint_eq(lenet_iter_position(fresh), 0);
    ck_assert_lenet_ok(lenet_iter_next(fresh, &x, &y, &count));
    ck_assert_int_eq(count, 4);
    lenet_iter_free(fresh);
    lenet_iter_free(it);
    lenet_augment_free(mnist);
    lenet_augment_free(fashion);
    lenet_dataset_free(d);
}
END_TEST

/* ---- presets and arguments ---- */

START_TEST(test_presets_hold_their_documented_transforms)
{
    char text[128];
    lenet_augment *mnist = lenet_augment_mnist(), *fashion = lenet_augment_fashion();
    ck_assert_ptr_nonnull(mnist);
    ck_assert_ptr_nonnull(fashion);
    lenet__augment_describe(mnist, text, sizeof text);
    ck_assert_str_eq(text, "affine(10, 0.1, 10, 2), elastic(34, 4)");
    lenet__augment_describe(fashion, text, sizeof text);
    ck_assert_str_eq(text, "crop(2), flip(0.5)");
    ck_assert_uint_ne(lenet__augment_fingerprint(mnist), lenet__augment_fingerprint(fashion));
    ck_assert_uint_eq(lenet__augment_fingerprint(NULL), 0);
    lenet_augment_free(mnist);
    lenet_augment_free(fashion);
}
END_TEST

#define assert_einval(expr, ...)                                                                              \
    do {                                                                                                     \
        lenet_error_clear();                                                                                 \
        lenet_status st_ = (expr);                                                                           \
        ck_assert_msg(st_ == LENET_EINVAL, "%s returned %s", #expr, lenet_status_str(st_));                  \
        const char *words_[] = {__VA_ARGS__};                                                                \
        for (size_t w_ = 0; w_ < sizeof words_ / sizeof *words_; w_++)                                       \
            ck_assert_msg(strstr(lenet_last_error(), words_[w_]) != NULL, "%s: message \"%s\" lacks \"%s\"", \
                          #expr, lenet_last_error(), words_[w_]);                                            \
    } while (0)

START_TEST(test_bad_arguments_are_einval_with_messages_and_change_nothing)
{
    lenet_augment *a = lenet_augment_create();
    assert_einval(lenet_augment_add_crop(NULL, 2), "augment_add_crop", "NULL");
    assert_einval(lenet_augment_add_crop(a, -1), "padding -1");
    assert_einval(lenet_augment_add_crop(a, 65), "padding 65", "[0, 64]");
    assert_einval(lenet_augment_add_flip(NULL, 0.5f), "augment_add_flip", "NULL");
    assert_einval(lenet_augment_add_flip(a, 1.5f), "probability 1.5", "[0, 1]");
    assert_einval(lenet_augment_add_flip(a, NAN), "probability nan");
    assert_einval(lenet_augment_add_affine(NULL, 1, 0, 0, 0), "augment_add_affine", "NULL");
    assert_einval(lenet_augment_add_affine(a, -1, 0, 0, 0), "max_degrees -1");
    assert_einval(lenet_augment_add_affine(a, 181, 0, 0, 0), "max_degrees 181");
    assert_einval(lenet_augment_add_affine(a, 0, 1, 0, 0), "max_scale 1", "[0, 1)");
    assert_einval(lenet_augment_add_affine(a, 0, -0.1f, 0, 0), "max_scale -0.1");
    assert_einval(lenet_augment_add_affine(a, 0, 0, 61, 0), "max_shear_degrees 61");
    assert_einval(lenet_augment_add_affine(a, 0, 0, 0, -2), "max_translate -2");
    assert_einval(lenet_augment_add_affine(a, 0, 0, 0, INFINITY), "max_translate inf");
    assert_einval(lenet_augment_add_affine(a, NAN, 0, 0, 0), "max_degrees nan");
    assert_einval(lenet_augment_add_elastic(NULL, 34, 4), "augment_add_elastic", "NULL");
    assert_einval(lenet_augment_add_elastic(a, -1, 4), "alpha -1");
    assert_einval(lenet_augment_add_elastic(a, 1001, 4), "alpha 1001");
    assert_einval(lenet_augment_add_elastic(a, 34, 0), "sigma 0", "(0, 100]");
    assert_einval(lenet_augment_add_elastic(a, 34, NAN), "sigma nan");
    assert_einval(lenet_iter_set_augment(NULL, a), "iter_set_augment", "NULL");
    ck_assert_uint_eq(lenet_augment_count(a), 0);
    ck_assert_uint_eq(lenet_augment_count(NULL), 0);
    lenet_augment_free(NULL);
    lenet_augment_free(a);
}
END_TEST

/* ---- cost (only with LENET_AUGMENT_TIMING=<Fashion-MNIST directory>) ----
 * Wall-clock times on a shared machine swing by tens of percent from run to run, so the test asserts on processor
 * time on one thread (which other processes barely change): the extra time a pass of batches takes with a pipeline,
 * against a d2l epoch without one.  It also prints the wall-clock epochs on the default thread count. */

static double seconds_of(clockid_t clock)
{
    struct timespec ts;
    clock_gettime(clock, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* Seconds (of `clock`) of one d2l LeNet epoch (xavier, SGD lr 0.9, batch 128, shuffled) over d with pipeline a. */
static double d2l_epoch_seconds(lenet_dataset *d, const lenet_augment *a, clockid_t clock)
{
    lenet_model *m = lenet_test_d2l_model();
    ck_assert_lenet_ok(lenet_model_build(m, 1, 28, 28));
    ck_assert_lenet_ok(lenet_model_init(m, LENET_INIT_XAVIER_UNIFORM, 0));
    lenet_optimizer *o = lenet_sgd_create(m, 0.9f, 0.0f, 0.0f);
    lenet_iter *it = lenet_iter_create(d, 128, true, 0);
    ck_assert_lenet_ok(lenet_iter_set_augment(it, a));
    lenet_metrics metrics;
    const double start = seconds_of(clock);
    ck_assert_lenet_ok(lenet_train_epoch(m, o, it, NULL, NULL, &metrics));
    const double seconds = seconds_of(clock) - start;
    lenet_iter_free(it);
    lenet_optimizer_free(o);
    lenet_model_free(m);
    return seconds;
}

/* Seconds (of `clock`) to produce every batch of one pass: rendering and augmenting, no training. */
static double pass_seconds(lenet_dataset *d, const lenet_augment *a, clockid_t clock)
{
    lenet_iter *it = lenet_iter_create(d, 128, true, 0);
    ck_assert_lenet_ok(lenet_iter_set_augment(it, a));
    const double start = seconds_of(clock);
    drain(it, NULL);
    const double seconds = seconds_of(clock) - start;
    lenet_iter_free(it);
    return seconds;
}

START_TEST(test_augmentation_costs_at_most_a_quarter_of_a_d2l_epoch)
{
    const char *dir = getenv("LENET_AUGMENT_TIMING");
    char images[1024], labels[1024];
    snprintf(images, sizeof images, "%s/train-images-idx3-ubyte.gz", dir);
    snprintf(labels, sizeof labels, "%s/train-labels-idx1-ubyte.gz", dir);
    lenet_dataset *d = lenet_dataset_open_idx(images, labels);
    ck_assert_msg(d != NULL, "%s", lenet_last_error());
    lenet_augment *mnist = lenet_augment_mnist(), *fashion = lenet_augment_fashion();
    lenet_augment *elastic = lenet_augment_create();
    ck_assert_lenet_ok(lenet_augment_add_elastic(elastic, 34.0f, 4.0f));
    enum { PIPELINES = 4 };
    const lenet_augment *pipelines[PIPELINES] = {NULL, fashion, mnist, elastic};
    const char *names[PIPELINES] = {"none", "fashion preset", "mnist preset", "elastic(34, 4) alone"};
    const int threads = lenet_threads_get();

    ck_assert_lenet_ok(lenet_threads_set(1));
    const double epoch_cpu = d2l_epoch_seconds(d, NULL, CLOCK_PROCESS_CPUTIME_ID);
    double pass_cpu[PIPELINES];
    for (int p = 0; p < PIPELINES; p++)
        pass_cpu[p] = pass_seconds(d, pipelines[p], CLOCK_PROCESS_CPUTIME_ID);
    printf("d2l LeNet, %zu training images; on 1 thread, processor time: epoch without augmentation %.2f s\n",
           lenet_dataset_size(d), epoch_cpu);
    for (int p = 0; p < PIPELINES; p++) {
        const double extra = pass_cpu[p] - pass_cpu[0];
        printf("  %-22s batches %5.2f s: %+5.2f s, %5.1f%% of the epoch (%.1f us per image)\n", names[p], pass_cpu[p],
               extra, 100.0 * extra / epoch_cpu, 1e6 * extra / (double)lenet_dataset_size(d));
        ck_assert_msg(extra <= 0.25 * epoch_cpu, "%s: %.2f s more per pass, against a %.2f s epoch", names[p], extra,
                      epoch_cpu);
    }

    ck_assert_lenet_ok(lenet_threads_set(threads));
    const double epoch_wall = d2l_epoch_seconds(d, NULL, CLOCK_MONOTONIC);
    printf("on %d threads, wall clock: epoch without augmentation %.2f s\n", threads, epoch_wall);
    for (int p = 1; p < PIPELINES; p++) {
        const double epoch = d2l_epoch_seconds(d, pipelines[p], CLOCK_MONOTONIC);
        printf("  %-22s epoch %6.2f s (%+5.1f%%)\n", names[p], epoch, 100.0 * (epoch / epoch_wall - 1.0));
    }
    lenet_augment_free(mnist);
    lenet_augment_free(fashion);
    lenet_augment_free(elastic);
    lenet_dataset_free(d);
}
END_TEST

static Suite *augment_suite(void)
{
    Suite *s = suite_create("augment");
    TCase *identity = tcase_create("identity");
    tcase_add_unchecked_fixture(identity, setup, teardown);
    tcase_add_test(identity, test_every_transform_at_zero_strength_is_the_identity_bit_for_bit);
    tcase_add_test(identity, test_elastic_with_alpha_zero_is_the_identity);
    suite_add_tcase(s, identity);

    TCase *geometry = tcase_create("geometry");
    tcase_add_unchecked_fixture(geometry, setup, teardown);
    tcase_add_test(geometry, test_crop_moves_a_dot_by_whole_pixels_within_the_padding_and_reaches_every_offset);
    tcase_add_test(geometry, test_translation_moves_a_dot_and_fills_with_the_background);
    tcase_add_test(geometry, test_flip_mirrors_a_gradient_exactly);
    tcase_add_test(geometry, test_flip_at_one_half_mirrors_about_half_the_images);
    tcase_add_test(geometry, test_a_90_degree_rotation_turns_a_bar_counter_clockwise);
    tcase_add_test(geometry, test_shear_slants_a_vertical_bar);
    tcase_add_test(geometry, test_elastic_displacements_are_smooth_with_the_size_alpha_and_sigma_give);
    suite_add_tcase(s, geometry);

    TCase *determinism = tcase_create("determinism");
    tcase_add_unchecked_fixture(determinism, setup, teardown);
    tcase_add_checked_fixture(determinism, NULL, teardown_threads);
    tcase_add_test(determinism, test_same_seed_repeats_the_augmented_passes_and_each_pass_draws_anew);
    tcase_add_test(determinism, test_augmented_batches_are_bit_identical_for_1_2_4_threads_and_any_batch_size);
    tcase_add_test(determinism, test_an_iterator_resumed_from_its_state_augments_as_the_saved_one);
    tcase_add_test(determinism, test_a_checkpoint_resumes_the_augmented_pass_bit_identically);
    suite_add_tcase(s, determinism);

    TCase *api = tcase_create("api");
    tcase_add_unchecked_fixture(api, setup, teardown);
    tcase_add_test(api, test_extreme_parameters_on_odd_sizes_read_only_inside_the_image);
    tcase_add_test(api, test_set_augment_copies_the_pipeline_and_null_turns_it_off);
    tcase_add_test(api, test_out_of_memory_is_enomem_and_leaves_the_iterator_as_it_was);
    tcase_add_test(api, test_presets_hold_their_documented_transforms);
    tcase_add_test(api, test_bad_arguments_are_einval_with_messages_and_change_nothing);
    suite_add_tcase(s, api);

    if (getenv("LENET_AUGMENT_TIMING")) {
        TCase *cost = tcase_create("cost");
        tcase_set_timeout(cost, 600);
        tcase_add_checked_fixture(cost, NULL, teardown_threads);
        tcase_add_test(cost, test_augmentation_costs_at_most_a_quarter_of_a_d2l_epoch);
        suite_add_tcase(s, cost);
    }
    return s;
}

int main(void)
{
    return lenet_test_run(augment_suite());
}
