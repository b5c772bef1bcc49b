/* IDX data sets (raw and gzip, validation, transforms) and the batch iterator.  Every file is written by the
 * test itself into a private temporary directory (idxfixture.h). */
#define _POSIX_C_SOURCE 200809L /* alarm */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zlib.h>

#include "core/internal.h" /* lenet__last_status, lenet__alloc_fail_at */
#include "idxfixture.h"
#include "testutil.h"

/* Pixel y, x of example i in the pattern sets: every byte value occurs, neighbours differ. */
static uint8_t pattern_pixel(size_t i, uint32_t y, uint32_t x)
{
    return (uint8_t)((i * 37u + y * 11u + x * 5u + 3u) % 256u);
}

/* n images h x w of the pattern, labels 0, 1, ..., n - 1 (mod 256): the label names the example. */
static void pattern_files(uint32_t n, uint32_t h, uint32_t w, idx_bytes *images, idx_bytes *labels)
{
    uint8_t *pixels = malloc((size_t)n * h * w + 1);
    uint8_t *values = malloc((size_t)n + 1);
    ck_assert_ptr_nonnull(pixels);
    ck_assert_ptr_nonnull(values);
    for (uint32_t i = 0; i < n; i++) {
        values[i] = (uint8_t)i;
        for (uint32_t y = 0; y < h; y++)
            for (uint32_t x = 0; x < w; x++)
                pixels[((size_t)i * h + y) * w + x] = pattern_pixel(i, y, x);
    }
    *images = idx_images(n, h, w, pixels);
    *labels = idx_labels(n, values);
    free(pixels);
    free(values);
}

/* Writes a pattern set as <stem>-images / <stem>-labels and opens it; the paths stay valid for a few writes. */
static lenet_dataset *open_pattern(const char *stem, uint32_t n, uint32_t h, uint32_t w, bool gzip_images,
                                   bool gzip_labels)
{
    idx_bytes images, labels;
    pattern_files(n, h, w, &images, &labels);
    char name[64];
    snprintf(name, sizeof name, "%s-images", stem);
    const char *images_path = idx_write_bytes(name, &images, gzip_images);
    snprintf(name, sizeof name, "%s-labels", stem);
    const char *labels_path = idx_write_bytes(name, &labels, gzip_labels);
    idx_bytes_free(&images);
    idx_bytes_free(&labels);
    lenet_dataset *d = lenet_dataset_open_idx(images_path, labels_path);
    ck_assert_msg(d != NULL, "opening %s: %s", images_path, lenet_last_error());
    return d;
}

/* Asserts that opening fails with `want` and a message naming `named` and containing `what` (if not NULL). */
#define assert_open_fails(images, labels, want, named, what)                                                   \
    check_open_fails(images, labels, want, named, what, __LINE__)

static void check_open_fails(const char *images, const char *labels, lenet_status want, const char *named,
                             const char *what, int line)
{
    lenet_error_clear();
    lenet_dataset *d = lenet_dataset_open_idx(images, labels);
    if (d) {
        lenet_dataset_free(d);
        ck_abort_msg("line %d: opening %s and %s succeeded", line, images ? images : "NULL",
                     labels ? labels : "NULL");
    }
    const char *msg = lenet_last_error();
    ck_assert_msg(lenet__last_status() == want, "line %d: status %s, expected %s (%s)", line,
                  lenet_status_str(lenet__last_status()), lenet_status_str(want), msg);
    ck_assert_msg(named == NULL || strstr(msg, named) != NULL, "line %d: message does not name %s: %s", line, named,
                  msg);
    ck_assert_msg(what == NULL || strstr(msg, what) != NULL, "line %d: message does not say \"%s\": %s", line, what,
                  msg);
}

/* Copies a whole pass (or what is left of it) into labels[] and images[] (optional); returns the examples seen. */
static size_t drain(lenet_iter *it, int32_t *labels, float *images, size_t plane)
{
    const lenet_tensor *x;
    const int32_t *y;
    int count;
    size_t seen = 0;
    lenet_status st;
    while ((st = lenet_iter_next(it, &x, &y, &count)) == LENET_OK) {
        ck_assert_int_gt(count, 0);
        memcpy(labels + seen, y, (size_t)count * sizeof *y);
        if (images)
            memcpy(images + seen * plane, lenet_tensor_cdata(x), (size_t)count * plane * sizeof(float));
        seen += (size_t)count;
    }
    ck_assert_msg(st == LENET_DONE, "iter_next: %s (%s)", lenet_status_str(st), lenet_last_error());
    return seen;
}

static void assert_permutation(const int32_t *order, size_t n)
{
    bool seen[256] = {false};
    ck_assert_uint_le(n, 256);
    for (size_t i = 0; i < n; i++) {
        ck_assert_msg(order[i] >= 0 && (size_t)order[i] < n, "item %d outside [0, %zu)", (int)order[i], n);
        ck_assert_msg(!seen[order[i]], "item %d visited twice in one pass", (int)order[i]);
        seen[order[i]] = true;
    }
}

static void setup(void)
{
    idx_dir_create();
}

static void teardown(void)
{
    idx_dir_remove();
}

/* ---- opening ---- */

START_TEST(test_raw_and_gzip_files_give_the_same_batches)
{
    enum { N = 10, H = 5, W = 4, PLANE = H * W };
    lenet_dataset *sets[3] = {
        open_pattern("raw", N, H, W, false, false),
        open_pattern("gz", N, H, W, true, true),
        open_pattern("mixed", N, H, W, true, false),
    };
    int32_t labels[3][N];
    float images[3][N * PLANE];
    for (int s = 0; s < 3; s++) {
        ck_assert_uint_eq(lenet_dataset_size(sets[s]), N);
        ck_assert_int_eq(lenet_dataset_height(sets[s]), H);
        ck_assert_int_eq(lenet_dataset_width(sets[s]), W);
        lenet_iter *it = lenet_iter_create(sets[s], 4, false, 0);
        ck_assert_ptr_nonnull(it);
        ck_assert_uint_eq(drain(it, labels[s], images[s], PLANE), N);
        lenet_iter_free(it);
    }
    ck_assert_mem_eq(labels[0], labels[1], sizeof labels[0]);
    ck_assert_mem_eq(labels[0], labels[2], sizeof labels[0]);
    ck_assert_mem_eq(images[0], images[1], sizeof images[0]);
    ck_assert_mem_eq(images[0], images[2], sizeof images[0]);
    /* ... and that content is the files' content, row-major (H rows of W). */
    for (size_t i = 0; i < N; i++) {
        ck_assert_int_eq(labels[0][i], (int32_t)i);
        for (uint32_t y = 0; y < H; y++)
            for (uint32_t x = 0; x < W; x++) {
                float want = (float)pattern_pixel(i, y, x) / 255.0f;
                float got = images[0][i * PLANE + y * W + x];
                ck_assert_msg(fabsf(got - want) <= 1e-7f, "example %zu pixel (%u, %u): %.9g, expected %.9g", i, y,
                              x, (double)got, (double)want);
            }
    }
    for (int s = 0; s < 3; s++)
        lenet_dataset_free(sets[s]);
}
END_TEST

START_TEST(test_pixels_scale_to_the_unit_interval_exactly)
{
    uint8_t pixels[256];
    for (int i = 0; i < 256; i++)
        pixels[i] = (uint8_t)i;
    idx_bytes images = idx_images(1, 16, 16, pixels), labels = idx_labels(1, (const uint8_t[]){7});
    const char *ip = idx_write_bytes("images", &images, false), *lp = idx_write_bytes("labels", &labels, false);
    lenet_dataset *d = lenet_dataset_open_idx(ip, lp);
    ck_assert_msg(d != NULL, "%s", lenet_last_error());
    float out[256];
    ck_assert_lenet_ok(lenet_dataset_image(d, 0, out));
    ck_assert_msg(out[0] == 0.0f, "byte 0 became %.9g", (double)out[0]);
    ck_assert_msg(out[255] == 1.0f, "byte 255 became %.9g", (double)out[255]);
    for (int i = 1; i < 256; i++) {
        ck_assert_msg(out[i] > out[i - 1], "byte %d (%.9g) is not above byte %d (%.9g)", i, (double)out[i], i - 1,
                      (double)out[i - 1]);
        ck_assert_msg(fabs((double)out[i] - i / 255.0) <= 1.5e-7, "byte %d became %.9g", i, (double)out[i]);
    }
    /* The iterator renders the same floats. */
    lenet_iter *it = lenet_iter_create(d, 1, false, 0);
    ck_assert_ptr_nonnull(it);
    const lenet_tensor *x;
    const int32_t *y;
    int count;
    ck_assert_lenet_ok(lenet_iter_next(it, &x, &y, &count));
    ck_assert_int_eq(count, 1);
    ck_assert_int_eq(y[0], 7);
    ck_assert_mem_eq(lenet_tensor_cdata(x), out, sizeof out);
    lenet_iter_free(it);
    lenet_dataset_free(d);
    idx_bytes_free(&images);
    idx_bytes_free(&labels);
}
END_TEST

START_TEST(test_accessors_check_their_arguments)
{
    lenet_dataset *d = open_pattern("set", 3, 2, 2, false, false);
    ck_assert_int_eq(lenet_dataset_label(d, 2), 2);
    ck_assert_int_eq(lenet_dataset_label(d, 3), -1);
    ck_assert_int_eq(lenet_dataset_label(NULL, 0), -1);
    float out[4];
    ck_assert_int_eq(lenet_dataset_image(d, 3, out), LENET_EINVAL);
    ck_assert_msg(strstr(lenet_last_error(), "3") != NULL, "message: %s", lenet_last_error());
    ck_assert_int_eq(lenet_dataset_image(d, 0, NULL), LENET_EINVAL);
    ck_assert_int_eq(lenet_dataset_image(NULL, 0, out), LENET_EINVAL);
    ck_assert_uint_eq(lenet_dataset_size(NULL), 0);
    ck_assert_int_eq(lenet_dataset_height(NULL), 0);
    ck_assert_int_eq(lenet_dataset_width(NULL), 0);
    ck_assert_int_eq(lenet_dataset_set_padding(NULL, 2), LENET_EINVAL);
    ck_assert_int_eq(lenet_dataset_set_range(NULL, 0.0f, 1.0f), LENET_EINVAL);
    lenet_dataset_free(NULL);
    lenet_dataset_free(d);
}
END_TEST

START_TEST(test_null_paths_are_einval)
{
    idx_bytes images, labels;
    pattern_files(2, 3, 3, &images, &labels);
    const char *ip = idx_write_bytes("images", &images, false), *lp = idx_write_bytes("labels", &labels, false);
    assert_open_fails(NULL, lp, LENET_EINVAL, "images", NULL);
    assert_open_fails(ip, NULL, LENET_EINVAL, "labels", NULL);
    assert_open_fails(NULL, NULL, LENET_EINVAL, NULL, NULL);
    idx_bytes_free(&images);
    idx_bytes_free(&labels);
}
END_TEST

START_TEST(test_missing_files_are_eio_naming_the_file)
{
    idx_bytes images, labels;
    pattern_files(2, 3, 3, &images, &labels);
    const char *ip = idx_write_bytes("images", &images, false), *lp = idx_write_bytes("labels", &labels, false);
    const char *missing = idx_write("present", "", 0);
    char absent[600];
    snprintf(absent, sizeof absent, "%s-absent", missing);
    assert_open_fails(absent, lp, LENET_EIO, absent, "No such file");
    assert_open_fails(ip, absent, LENET_EIO, absent, "No such file");
    idx_bytes_free(&images);
    idx_bytes_free(&labels);
}
END_TEST

START_TEST(test_empty_files_are_eformat)
{
    idx_bytes images, labels;
    pattern_files(2, 3, 3, &images, &labels);
    const char *ip = idx_write_bytes("images", &images, false), *lp = idx_write_bytes("labels", &labels, false);
    const char *empty = idx_write("empty", "", 0);
    assert_open_fails(empty, lp, LENET_EFORMAT, empty, "truncated");
    assert_open_fails(ip, empty, LENET_EFORMAT, empty, "truncated");
    idx_bytes empty_bytes = {0};
    const char *empty_gz = idx_write_bytes("empty.gz", &empty_bytes, true);
    assert_open_fails(empty_gz, lp, LENET_EFORMAT, empty_gz, "truncated");
    idx_bytes_free(&images);
    idx_bytes_free(&labels);
}
END_TEST

START_TEST(test_swapped_files_are_rejected_by_their_magic)
{
    idx_bytes images, labels;
    pattern_files(2, 3, 3, &images, &labels);
    for (int gz = 0; gz < 2; gz++) {
        const char *ip = idx_write_bytes("images", &images, gz), *lp = idx_write_bytes("labels", &labels, gz);
        assert_open_fails(lp, lp, LENET_EFORMAT, lp, "magic 00000801");
        assert_open_fails(ip, ip, LENET_EFORMAT, ip, "magic 00000803");
        assert_open_fails(lp, ip, LENET_EFORMAT, lp, "not an IDX images file");
    }
    idx_bytes_free(&images);
    idx_bytes_free(&labels);
}
END_TEST

START_TEST(test_wrong_type_or_number_of_dimensions_is_eformat)
{
    idx_bytes images, labels;
    pattern_files(2, 3, 3, &images, &labels);
    const char *ip = idx_write_bytes("images", &images, false), *lp = idx_write_bytes("labels", &labels, false);
    const uint32_t dims[4] = {2, 3, 3, 1};
    static const struct {
        uint8_t type, ndims;
        bool as_images;
    } bad[] = {
        {0x08, 2, true}, {0x08, 4, true}, {0x08, 0, true}, {0x0D, 3, true}, /* float images */
        {0x08, 2, false}, {0x08, 0, false}, {0x09, 1, false},                 /* signed labels */
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        idx_bytes b = idx_raw_header(bad[i].type, bad[i].ndims, dims, 18);
        const char *path = idx_write_bytes("bad", &b, false);
        if (bad[i].as_images)
            assert_open_fails(path, lp, LENET_EFORMAT, path, "magic");
        else
            assert_open_fails(ip, path, LENET_EFORMAT, path, "magic");
        idx_bytes_free(&b);
    }
    /* A first magic byte that is not zero. */
    images.data[0] = 1;
    const char *path = idx_write_bytes("bad", &images, false);
    assert_open_fails(path, lp, LENET_EFORMAT, path, "magic");
    idx_bytes_free(&images);
    idx_bytes_free(&labels);
}
END_TEST

START_TEST(test_dimensions_of_size_zero_are_eformat)
{
    idx_bytes images, labels;
    pattern_files(2, 3, 3, &images, &labels);
    const char *ip = idx_write_bytes("images", &images, false), *lp = idx_write_bytes("labels", &labels, false);
    const uint32_t shapes[3][3] = {{0, 3, 3}, {2, 0, 3}, {2, 3, 0}};
    for (int i = 0; i < 3; i++) {
        idx_bytes b = idx_images(shapes[i][0], shapes[i][1], shapes[i][2], NULL);
        const char *path = idx_write_bytes("zero", &b, i == 1);
        char what[32];
        snprintf(what, sizeof what, "dimension %d has size 0", i);
        assert_open_fails(path, lp, LENET_EFORMAT, path, what);
        idx_bytes_free(&b);
    }
    idx_bytes none = idx_labels(0, NULL);
    const char *path = idx_write_bytes("nolabels", &none, false);
    assert_open_fails(ip, path, LENET_EFORMAT, path, "dimension 0 has size 0");
    idx_bytes_free(&none);
    /* Sides above the reader's limit are refused before anything is allocated for them. */
    idx_bytes huge = idx_raw_header(0x08, 3, (const uint32_t[]){1, 100000, 100000}, 0);
    path = idx_write_bytes("huge", &huge, false);
    assert_open_fails(path, lp, LENET_EFORMAT, path, "dimension 1");
    idx_bytes_free(&huge);
    idx_bytes_free(&images);
    idx_bytes_free(&labels);
}
END_TEST

START_TEST(test_count_mismatch_names_both_files_and_counts)
{
    idx_bytes images, labels;
    pattern_files(10, 3, 3, &images, &labels);
    idx_bytes fewer = idx_labels(9, labels.data + 8);
    const char *ip = idx_write_bytes("images", &images, false), *lp = idx_write_bytes("labels9", &fewer, true);
    lenet_error_clear();
    ck_assert_ptr_null(lenet_dataset_open_idx(ip, lp));
    const char *msg = lenet_last_error();
    ck_assert_int_eq(lenet__last_status(), LENET_EFORMAT);
    ck_assert_msg(strstr(msg, ip) && strstr(msg, lp), "message does not name both files: %s", msg);
    ck_assert_msg(strstr(msg, "10") && strstr(msg, "9"), "message does not give both counts: %s", msg);
    idx_bytes_free(&fewer);
    idx_bytes_free(&images);
    idx_bytes_free(&labels);
}
END_TEST

START_TEST(test_trailing_bytes_are_eformat)
{
    idx_bytes images, labels;
    pattern_files(4, 3, 3, &images, &labels);
    for (int gz = 0; gz < 2; gz++) {
        const char *ip = idx_write_bytes("images", &images, gz), *lp = idx_write_bytes("labels", &labels, gz);
        idx_bytes longer_images = idx_images(4, 3, 3, images.data + 16);
        idx_bytes longer_labels = idx_labels(4, labels.data + 8);
        idx_bytes_append(&longer_images, 0, 1);
        idx_bytes_append(&longer_labels, 0, 3);
        const char *lip = idx_write_bytes("images+1", &longer_images, gz);
        const char *llp = idx_write_bytes("labels+3", &longer_labels, gz);
        assert_open_fails(lip, lp, LENET_EFORMAT, lip, "trailing");
        assert_open_fails(ip, llp, LENET_EFORMAT, llp, "trailing");
        idx_bytes_free(&longer_images);
        idx_bytes_free(&longer_labels);
    }
    idx_bytes_free(&images);
    idx_bytes_free(&labels);
}
END_TEST

/* The prefixes of a valid file cut at [from, to) bytes are each refused with LENET_EFORMAT and a message naming
 * the file; the whole file is accepted. */
static void assert_prefixes_fail(const idx_bytes *file, size_t from, size_t to, bool file_is_images,
                                 const char *other)
{
    for (size_t cut = from; cut < to; cut++) {
        const char *path = idx_write("cut", file->data, cut);
        lenet_error_clear();
        lenet_dataset *d = file_is_images ? lenet_dataset_open_idx(path, other) : lenet_dataset_open_idx(other, path);
        if (d) {
            lenet_dataset_free(d);
            ck_abort_msg("the first %zu of %zu bytes were accepted", cut, file->size);
        }
        ck_assert_msg(lenet__last_status() == LENET_EFORMAT, "cut at %zu of %zu: %s (%s)", cut, file->size,
                      lenet_status_str(lenet__last_status()), lenet_last_error());
        ck_assert_msg(strstr(lenet_last_error(), path) != NULL, "cut at %zu: message does not name the file: %s", cut,
                      lenet_last_error());
    }
    const char *path = idx_write("whole", file->data, file->size);
    lenet_dataset *d = file_is_images ? lenet_dataset_open_idx(path, other) : lenet_dataset_open_idx(other, path);
    ck_assert_msg(d != NULL, "the whole file was refused: %s", lenet_last_error());
    lenet_dataset_free(d);
}

START_TEST(test_truncation_at_every_byte_of_a_raw_file_is_eformat)
{
    idx_bytes images, labels;
    pattern_files(3, 4, 5, &images, &labels);
    const char *ip = idx_write_bytes("images", &images, false), *lp = idx_write_bytes("labels", &labels, false);
    assert_prefixes_fail(&images, 0, images.size, true, lp);
    assert_prefixes_fail(&labels, 0, labels.size, false, ip);
    idx_bytes_free(&images);
    idx_bytes_free(&labels);
}
END_TEST

/* The shortest prefix of the gzip file `gz` from which zlib's inflate already recovers all `content_size`
 * bytes: cut from there on, only the end of the deflate stream and the CRC-32/length trailer are missing. */
static size_t gzip_content_complete_at(const idx_bytes *gz, size_t content_size)
{
    unsigned char *out = malloc(content_size + 1);
    ck_assert_ptr_nonnull(out);
    size_t cut = 0;
    for (; cut <= gz->size; cut++) {
        z_stream zs = {0};
        ck_assert_int_eq(inflateInit2(&zs, 15 + 16), Z_OK);
        zs.next_in = gz->data;
        zs.avail_in = (uInt)cut;
        zs.next_out = out;
        zs.avail_out = (uInt)content_size + 1;
        inflate(&zs, Z_SYNC_FLUSH);
        size_t got = zs.total_out;
        inflateEnd(&zs);
        if (got == content_size)
            break;
    }
    free(out);
    return cut;
}

/* Files cut anywhere before their content is complete. */
START_TEST(test_truncation_at_every_byte_of_a_gzip_file_is_eformat)
{
    idx_bytes images, labels;
    pattern_files(3, 4, 5, &images, &labels);
    const char *ip = idx_write_bytes("images", &images, false), *lp = idx_write_bytes("labels", &labels, false);
    idx_bytes gz_images = idx_gzip(&images), gz_labels = idx_gzip(&labels);
    ck_assert_int_eq(gz_images.data[0], 0x1f);
    ck_assert_int_eq(gz_images.data[1], 0x8b);
    size_t images_end = gzip_content_complete_at(&gz_images, images.size);
    size_t labels_end = gzip_content_complete_at(&gz_labels, labels.size);
    /* Only the 8-byte trailer and at most a few bytes of the stream's end come after. */
    ck_assert_uint_ge(images_end + 12, gz_images.size);
    ck_assert_uint_le(images_end + 8, gz_images.size);
    ck_assert_uint_ge(labels_end + 12, gz_labels.size);
    assert_prefixes_fail(&gz_images, 0, images_end, true, lp);
    assert_prefixes_fail(&gz_labels, 0, labels_end, false, ip);
    idx_bytes_free(&gz_images);
    idx_bytes_free(&gz_labels);
    idx_bytes_free(&images);
    idx_bytes_free(&labels);
}
END_TEST

/* Files cut after their content but inside the end of the deflate stream or
 * the CRC-32/length trailer, so the data is never verified.  gzip -t calls these "unexpected end of file". */
START_TEST(test_truncation_inside_the_gzip_trailer_is_eformat)
{
    idx_bytes images, labels;
    pattern_files(3, 4, 5, &images, &labels);
    const char *ip = idx_write_bytes("images", &images, false), *lp = idx_write_bytes("labels", &labels, false);
    idx_bytes gz_images = idx_gzip(&images), gz_labels = idx_gzip(&labels);
    assert_prefixes_fail(&gz_images, gzip_content_complete_at(&gz_images, images.size), gz_images.size, true, lp);
    assert_prefixes_fail(&gz_labels, gzip_content_complete_at(&gz_labels, labels.size), gz_labels.size, false, ip);
    idx_bytes_free(&gz_images);
    idx_bytes_free(&gz_labels);
    idx_bytes_free(&images);
    idx_bytes_free(&labels);
}
END_TEST

/* A path that opens but cannot be read (a directory: EISDIR) is a read error,
 * LENET_EIO, not "corrupt compressed data" (LENET_EFORMAT). */
START_TEST(test_a_directory_given_as_a_file_is_eio)
{
    idx_bytes images, labels;
    pattern_files(2, 3, 3, &images, &labels);
    const char *ip = idx_write_bytes("images", &images, false);
    char dir[512];
    snprintf(dir, sizeof dir, "%s", ip);
    *strrchr(dir, '/') = '\0';
    assert_open_fails(dir, ip, LENET_EIO, dir, "is a directory, not a regular file");
    assert_open_fails(ip, dir, LENET_EIO, dir, "is a directory, not a regular file");
    idx_bytes_free(&images);
    idx_bytes_free(&labels);
}
END_TEST


/* Opening a FIFO for reading waits for a writer, and reading one waits for data: the reader must refuse it
 * without doing either.  The alarm turns a regression into a failure (the test dies of SIGALRM) instead of a
 * hang. */
START_TEST(test_a_fifo_is_refused_at_once_as_not_a_regular_file)
{
    idx_bytes images, labels;
    pattern_files(2, 3, 3, &images, &labels);
    const char *ip = idx_write_bytes("images", &images, false), *lp = idx_write_bytes("labels", &labels, true);
    const char *fifo = idx_make_fifo("fifo");
    alarm(5);
    assert_open_fails(fifo, lp, LENET_EIO, fifo, "is a FIFO, not a regular file");
    assert_open_fails(ip, fifo, LENET_EIO, fifo, "is a FIFO, not a regular file");
    alarm(0);
    idx_bytes_free(&images);
    idx_bytes_free(&labels);
}
END_TEST

/* An empty gzip member, as `gzip < /dev/null` writes it: header, an empty deflate block, CRC-32 0, length 0. */
static const unsigned char empty_gzip_member[] = {0x1f, 0x8b, 0x08, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x03,
                                                  0x03, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00};

/* zlib's gzread skips whatever follows a gzip member and reads a further member as more data; the reader must
 * accept exactly one member and nothing after it, as it accepts nothing after the data of a raw file. */
START_TEST(test_bytes_after_the_gzip_stream_are_eformat)
{
    idx_bytes images, labels;
    pattern_files(4, 3, 3, &images, &labels);
    const idx_bytes *files[2] = {&images, &labels};
    for (int which = 0; which < 2; which++) {
        idx_bytes gz = idx_gzip(files[which]);
        const char *ip = idx_write_bytes("images", &images, which == 1);
        const char *lp = idx_write_bytes("labels", &labels, which == 0);
        const struct {
            const char *name;
            const unsigned char *bytes;
            size_t size;
            const char *what;
        } tails[] = {
            {"one zero byte", (const unsigned char[]){0}, 1, "not gzip data"},
            {"five zero bytes", (const unsigned char[]){0, 0, 0, 0, 0}, 5, "not gzip data"},
            {"random bytes", (const unsigned char[]){0x5e, 0xc3, 0x17, 0xa9, 0x42, 0x8d, 0xf0}, 7, "not gzip data"},
            {"a lone gzip magic", (const unsigned char[]){0x1f, 0x8b}, 2, "second gzip stream"},
            {"an empty gzip member", empty_gzip_member, sizeof empty_gzip_member, "second gzip stream"},
        };
        for (size_t t = 0; t < sizeof tails / sizeof tails[0]; t++) {
            idx_bytes longer = {0};
            idx_bytes_append(&longer, 0, gz.size + tails[t].size);
            memcpy(longer.data, gz.data, gz.size);
            memcpy(longer.data + gz.size, tails[t].bytes, tails[t].size);
            const char *path = idx_write_bytes("tail.gz", &longer, false);
            lenet_error_clear();
            lenet_dataset *d = which == 0 ? lenet_dataset_open_idx(path, lp) : lenet_dataset_open_idx(ip, path);
            if (d) {
                lenet_dataset_free(d);
                ck_abort_msg("a gzip %s file followed by %s was accepted", which == 0 ? "images" : "labels",
                             tails[t].name);
            }
            const char *msg = lenet_last_error();
            ck_assert_msg(lenet__last_status() == LENET_EFORMAT, "%s: %s (%s)", tails[t].name,
                          lenet_status_str(lenet__last_status()), msg);
            char where[64];
            snprintf(where, sizeof where, "the first %zu bytes", gz.size);
            ck_assert_msg(strstr(msg, path) && strstr(msg, "trailing data after the gzip stream") &&
                              strstr(msg, where) && strstr(msg, tails[t].what),
                          "%s: message: %s", tails[t].name, msg);
            idx_bytes_free(&longer);
        }
        /* A second member holding the rest of the data: the first one alone is cut short. */
        idx_bytes head = {0}, rest = {0};
        idx_bytes_append(&head, 0, files[which]->size - 3);
        memcpy(head.data, files[which]->data, head.size);
        idx_bytes_append(&rest, 0, 3);
        memcpy(rest.data, files[which]->data + head.size, 3);
        idx_bytes gz_head = idx_gzip(&head), gz_rest = idx_gzip(&rest);
        idx_bytes joined = {0};
        idx_bytes_append(&joined, 0, gz_head.size + gz_rest.size);
        memcpy(joined.data, gz_head.data, gz_head.size);
        memcpy(joined.data + gz_head.size, gz_rest.data, gz_rest.size);
        const char *path = idx_write_bytes("joined.gz", &joined, false);
        if (which == 0)
            assert_open_fails(path, lp, LENET_EFORMAT, path, "one gzip stream, not several");
        else
            assert_open_fails(ip, path, LENET_EFORMAT, path, "one gzip stream, not several");
        /* ... while the one member alone, the raw file, and a raw file with the gzip trailer's zeros after its
         * data are what they were: accepted, accepted, trailing data. */
        path = idx_write_bytes("single.gz", &gz, false);
        lenet_dataset *d = which == 0 ? lenet_dataset_open_idx(path, lp) : lenet_dataset_open_idx(ip, path);
        ck_assert_msg(d != NULL, "the single member was refused: %s", lenet_last_error());
        lenet_dataset_free(d);
        idx_bytes_free(&joined);
        idx_bytes_free(&gz_head);
        idx_bytes_free(&gz_rest);
        idx_bytes_free(&head);
        idx_bytes_free(&rest);
        idx_bytes_free(&gz);
    }
    idx_bytes_free(&images);
    idx_bytes_free(&labels);
}
END_TEST

/* A gzip file of several times the reader's input buffer (incompressible pixels) opens whole, and a byte after
 * it is still seen. */
START_TEST(test_a_large_gzip_file_opens_and_a_byte_after_it_is_eformat)
{
    enum { N = 5, SIDE = 256 };
    uint8_t *pixels = malloc((size_t)N * SIDE * SIDE);
    ck_assert_ptr_nonnull(pixels);
    uint64_t x = 0x9e3779b97f4a7c15u;
    for (size_t i = 0; i < (size_t)N * SIDE * SIDE; i++) {
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        pixels[i] = (uint8_t)(x >> 32);
    }
    idx_bytes images = idx_images(N, SIDE, SIDE, pixels), labels = idx_labels(N, (const uint8_t[]){1, 2, 3, 4, 5});
    idx_bytes gz = idx_gzip(&images);
    ck_assert_uint_gt(gz.size, 4 * 65536);
    const char *ip = idx_write("large.gz", gz.data, gz.size), *lp = idx_write_bytes("labels", &labels, false);
    lenet_dataset *d = lenet_dataset_open_idx(ip, lp);
    ck_assert_msg(d != NULL, "%s", lenet_last_error());
    float *out = malloc(sizeof(float) * SIDE * SIDE);
    ck_assert_ptr_nonnull(out);
    ck_assert_lenet_ok(lenet_dataset_image(d, N - 1, out));
    const uint8_t *last = pixels + (size_t)(N - 1) * SIDE * SIDE;
    for (size_t i = 0; i < (size_t)SIDE * SIDE; i++)
        ck_assert_msg(fabsf(out[i] - last[i] / 255.0f) <= 1e-7f, "pixel %zu of the last image differs", i);
    lenet_dataset_free(d);
    idx_bytes_append(&gz, 0, 1);
    ip = idx_write("large.gz", gz.data, gz.size);
    assert_open_fails(ip, lp, LENET_EFORMAT, ip, "trailing data after the gzip stream");
    free(out);
    free(pixels);
    idx_bytes_free(&gz);
    idx_bytes_free(&images);
    idx_bytes_free(&labels);
}
END_TEST

/* ---- the data limit ---- */

static void restore_data_limit(void)
{
    lenet_dataset_set_max_bytes(LENET_DATASET_DEFAULT_MAX_BYTES);
}

START_TEST(test_the_data_limit_is_1_gib_by_default_and_0_is_einval)
{
    ck_assert_uint_eq(LENET_DATASET_DEFAULT_MAX_BYTES, (size_t)1 << 30);
    ck_assert_uint_eq(lenet_dataset_max_bytes(), LENET_DATASET_DEFAULT_MAX_BYTES);
    lenet_error_clear();
    ck_assert_int_eq(lenet_dataset_set_max_bytes(0), LENET_EINVAL);
    ck_assert_msg(strstr(lenet_last_error(), "set_max_bytes") != NULL, "message: %s", lenet_last_error());
    ck_assert_uint_eq(lenet_dataset_max_bytes(), LENET_DATASET_DEFAULT_MAX_BYTES);
    ck_assert_lenet_ok(lenet_dataset_set_max_bytes((size_t)1 << 34));
    ck_assert_uint_eq(lenet_dataset_max_bytes(), (size_t)1 << 34);
    ck_assert_lenet_ok(lenet_dataset_set_max_bytes(SIZE_MAX));
    ck_assert_uint_eq(lenet_dataset_max_bytes(), SIZE_MAX);
}
END_TEST

/* A header declaring 2^20 images of 64x64 (4 GiB) followed by a mebibyte of zeros: gzip makes that a 1 KiB file
 * that would inflate to whatever the header promises.  It must be refused from the header, before any pixel is
 * read: reading first would end in "truncated" instead.  So must 2^30 images (4 TiB). */
START_TEST(test_a_header_over_the_data_limit_is_refused_before_the_data_is_read)
{
    idx_bytes labels = idx_labels(2, (const uint8_t[]){0, 1});
    const char *lp = idx_write_bytes("labels", &labels, false);
    const struct {
        uint32_t count;
        const char *declares;
    } bombs[] = {
        {1u << 20, "1048576 images of 64x64 (4294967296 bytes)"},
        {1u << 30, "1073741824 images of 64x64 (4398046511104 bytes)"},
    };
    for (size_t b = 0; b < sizeof bombs / sizeof bombs[0]; b++) {
        idx_bytes bomb = idx_raw_header(0x08, 3, (const uint32_t[]){bombs[b].count, 64, 64}, 0);
        idx_bytes_append(&bomb, 0, (size_t)1 << 20);
        for (int gz = 0; gz < 2; gz++) {
            const char *path = idx_write_bytes("bomb", &bomb, gz);
            char want[512];
            snprintf(want, sizeof want, "%s: the header declares %s, over the data limit of 1073741824 bytes; raise "
                                        "it with lenet_dataset_set_max_bytes()", path, bombs[b].declares);
            lenet_error_clear();
            ck_assert_ptr_null(lenet_dataset_open_idx(path, lp));
            ck_assert_int_eq(lenet__last_status(), LENET_EFORMAT);
            ck_assert_str_eq(lenet_last_error(), want);
        }
        idx_bytes_free(&bomb);
    }
    idx_bytes_free(&labels);
}
END_TEST

START_TEST(test_the_data_limit_bounds_pixel_bytes_and_label_count_and_can_be_raised)
{
    idx_bytes images, labels;
    pattern_files(2, 7, 7, &images, &labels); /* 98 pixel bytes, 2 labels */
    for (int gz = 0; gz < 2; gz++) {
        const char *ip = idx_write_bytes("images", &images, gz), *lp = idx_write_bytes("labels", &labels, gz);
        ck_assert_lenet_ok(lenet_dataset_set_max_bytes(97));
        assert_open_fails(ip, lp, LENET_EFORMAT, ip, "2 images of 7x7 (98 bytes), over the data limit of 97 bytes");
        ck_assert_lenet_ok(lenet_dataset_set_max_bytes(98));
        lenet_dataset *d = lenet_dataset_open_idx(ip, lp);
        ck_assert_msg(d != NULL, "98 bytes under a limit of 98: %s", lenet_last_error());
        ck_assert_uint_eq(lenet_dataset_size(d), 2);
        lenet_dataset_free(d);
        /* A labels file declaring more labels than the limit is refused by its header too. */
        idx_bytes many = idx_raw_header(0x08, 1, (const uint32_t[]){99}, 0);
        const char *mp = idx_write_bytes("many-labels", &many, gz);
        assert_open_fails(ip, mp, LENET_EFORMAT, mp,
                          "the header declares 99 labels (99 bytes), over the data limit of 98 bytes; raise it with "
                          "lenet_dataset_set_max_bytes()");
        idx_bytes_free(&many);
    }
    idx_bytes_free(&images);
    idx_bytes_free(&labels);
}
END_TEST


START_TEST(test_corrupt_gzip_stream_is_eformat)
{
    idx_bytes images, labels;
    pattern_files(3, 4, 5, &images, &labels);
    const char *lp = idx_write_bytes("labels", &labels, false);
    idx_bytes gz = idx_gzip(&images);
    /* Flip every byte in turn, except the gzip header's MTIME, XFL and OS fields (bytes 4 to 9), which are
     * informational: any other change breaks the header, the deflate stream, its CRC-32 or its length. */
    for (size_t i = 0; i < gz.size; i++) {
        if (i >= 4 && i <= 9)
            continue;
        gz.data[i] ^= 0xff;
        const char *path = idx_write("corrupt.gz", gz.data, gz.size);
        gz.data[i] ^= 0xff;
        lenet_error_clear();
        lenet_dataset *d = lenet_dataset_open_idx(path, lp);
        if (d) {
            lenet_dataset_free(d);
            ck_abort_msg("a gzip file with byte %zu of %zu flipped was accepted", i, gz.size);
        }
        ck_assert_msg(lenet__last_status() == LENET_EFORMAT, "byte %zu flipped: %s (%s)", i,
                      lenet_status_str(lenet__last_status()), lenet_last_error());
        ck_assert_msg(strstr(lenet_last_error(), path) != NULL, "message does not name the file: %s",
                      lenet_last_error());
    }
    idx_bytes_free(&gz);
    idx_bytes_free(&images);
    idx_bytes_free(&labels);
}
END_TEST

START_TEST(test_allocation_failures_are_enomem_and_leak_nothing)
{
    idx_bytes images, labels;
    pattern_files(5, 4, 4, &images, &labels);
    const char *ip = idx_write_bytes("images", &images, true), *lp = idx_write_bytes("labels", &labels, false);
    size_t failures = 0;
    for (size_t k = 1;; k++) {
        lenet__alloc_fail_at(k);
        lenet_dataset *d = lenet_dataset_open_idx(ip, lp);
        lenet_iter *it = d ? lenet_iter_create(d, 2, true, 1) : NULL;
        lenet_status st = lenet__last_status();
        lenet__alloc_fail_at(0);
        if (d && it) {
            lenet_iter_free(it);
            lenet_dataset_free(d);
            break;
        }
        failures++;
        ck_assert_msg(st == LENET_ENOMEM, "allocation %zu failed: %s (%s)", k, lenet_status_str(st),
                      lenet_last_error());
        lenet_dataset_free(d);
        ck_assert_uint_lt(k, 100);
    }
    ck_assert_uint_ge(failures, 4); /* the data set, its pixels, its labels, the iterator at least */
    idx_bytes_free(&images);
    idx_bytes_free(&labels);
}
END_TEST

/* ---- transforms ---- */

START_TEST(test_padding_puts_the_background_in_the_border)
{
    lenet_dataset *d = open_pattern("set", 2, 28, 28, true, false);
    ck_assert_lenet_ok(lenet_dataset_set_padding(d, 2));
    ck_assert_int_eq(lenet_dataset_height(d), 32);
    ck_assert_int_eq(lenet_dataset_width(d), 32);
    for (int ranged = 0; ranged < 2; ranged++) {
        const float bg = ranged ? -0.1f : 0.0f, fg = ranged ? 1.175f : 1.0f;
        if (ranged)
            ck_assert_lenet_ok(lenet_dataset_set_range(d, -0.1f, 1.175f));
        float out[32 * 32];
        ck_assert_lenet_ok(lenet_dataset_image(d, 1, out));
        for (int y = 0; y < 32; y++)
            for (int x = 0; x < 32; x++) {
                float got = out[y * 32 + x];
                if (y < 2 || y >= 30 || x < 2 || x >= 30) {
                    ck_assert_msg(got == bg, "border (%d, %d) is %.9g, expected %.9g", y, x, (double)got, (double)bg);
                    continue;
                }
                double want = bg + (fg - bg) * pattern_pixel(1, (uint32_t)(y - 2), (uint32_t)(x - 2)) / 255.0;
                ck_assert_msg(fabs(got - want) <= 1e-6, "pixel (%d, %d) is %.9g, expected %.9g", y, x, (double)got,
                              want);
            }
        /* The iterator made now produces the same 32x32 images. */
        lenet_iter *it = lenet_iter_create(d, 2, false, 0);
        ck_assert_ptr_nonnull(it);
        const lenet_tensor *t;
        const int32_t *labels;
        int count;
        ck_assert_lenet_ok(lenet_iter_next(it, &t, &labels, &count));
        ck_assert_int_eq(count, 2);
        ck_assert_int_eq(lenet_tensor_ndim(t), 4);
        ck_assert_int_eq(lenet_tensor_dim(t, 0), 2);
        ck_assert_int_eq(lenet_tensor_dim(t, 1), 1);
        ck_assert_int_eq(lenet_tensor_dim(t, 2), 32);
        ck_assert_int_eq(lenet_tensor_dim(t, 3), 32);
        ck_assert_mem_eq(lenet_tensor_cdata(t) + 32 * 32, out, sizeof out);
        lenet_iter_free(it);
    }
    lenet_dataset_free(d);
}
END_TEST

START_TEST(test_range_maps_0_and_255_to_background_and_foreground)
{
    uint8_t pixels[4] = {0, 255, 0, 255};
    idx_bytes images = idx_images(1, 2, 2, pixels), labels = idx_labels(1, (const uint8_t[]){1});
    lenet_dataset *d =
        lenet_dataset_open_idx(idx_write_bytes("images", &images, false), idx_write_bytes("labels", &labels, false));
    ck_assert_ptr_nonnull(d);
    ck_assert_lenet_ok(lenet_dataset_set_range(d, -0.1f, 1.175f));
    float out[4];
    ck_assert_lenet_ok(lenet_dataset_image(d, 0, out));
    ck_assert_msg(out[0] == -0.1f, "byte 0 became %.9g", (double)out[0]);
    ck_assert_msg(fabsf(out[1] - 1.175f) <= 2e-7f, "byte 255 became %.9g", (double)out[1]);
    /* Reversed ranges are allowed (white background). */
    ck_assert_lenet_ok(lenet_dataset_set_range(d, 1.0f, 0.0f));
    ck_assert_lenet_ok(lenet_dataset_image(d, 0, out));
    ck_assert_msg(out[2] == 1.0f && fabsf(out[3]) <= 1e-7f, "reversed: %.9g %.9g", (double)out[2], (double)out[3]);
    ck_assert_int_eq(lenet_dataset_set_range(d, NAN, 1.0f), LENET_EINVAL);
    ck_assert_int_eq(lenet_dataset_set_range(d, 0.0f, INFINITY), LENET_EINVAL);
    /* Both finite but their difference overflows: every pixel would become NaN. */
    ck_assert_int_eq(lenet_dataset_set_range(d, -3e38f, 3e38f), LENET_EINVAL);
    ck_assert_msg(strstr(lenet_last_error(), "difference") != NULL, "message: %s", lenet_last_error());
    ck_assert_int_eq(lenet_dataset_set_padding(d, -1), LENET_EINVAL);
    ck_assert_int_eq(lenet_dataset_set_padding(d, 65), LENET_EINVAL);
    ck_assert_int_eq(lenet_dataset_height(d), 2);
    ck_assert_lenet_ok(lenet_dataset_set_padding(d, 64));
    ck_assert_int_eq(lenet_dataset_height(d), 130);
    ck_assert_int_eq(lenet_dataset_width(d), 130);
    lenet_dataset_free(d);
    idx_bytes_free(&images);
    idx_bytes_free(&labels);
}
END_TEST

/* ---- the iterator ---- */

START_TEST(test_iterator_gives_full_batches_then_a_short_one_then_done)
{
    enum { N = 10, H = 3, W = 2 };
    lenet_dataset *d = open_pattern("set", N, H, W, false, false);
    lenet_iter *it = lenet_iter_create(d, 4, false, 0);
    ck_assert_ptr_nonnull(it);
    ck_assert_uint_eq(lenet_iter_total(it), N);
    ck_assert_uint_eq(lenet_iter_position(it), 0);
    const int sizes[] = {4, 4, 2};
    size_t next_item = 0;
    for (int b = 0; b < 3; b++) {
        const lenet_tensor *t = NULL;
        const int32_t *labels = NULL;
        int count = -1;
        ck_assert_lenet_ok(lenet_iter_next(it, &t, &labels, &count));
        ck_assert_int_eq(count, sizes[b]);
        ck_assert_int_eq(lenet_tensor_ndim(t), 4);
        ck_assert_int_eq(lenet_tensor_dim(t, 0), count);
        ck_assert_int_eq(lenet_tensor_dim(t, 1), 1);
        ck_assert_int_eq(lenet_tensor_dim(t, 2), H);
        ck_assert_int_eq(lenet_tensor_dim(t, 3), W);
        ck_assert_uint_eq(lenet_tensor_numel(t), (size_t)count * H * W);
        for (int i = 0; i < count; i++, next_item++) {
            ck_assert_int_eq(labels[i], (int32_t)next_item);
            float want[H * W];
            ck_assert_lenet_ok(lenet_dataset_image(d, next_item, want));
            ck_assert_mem_eq(lenet_tensor_cdata(t) + (size_t)i * H * W, want, sizeof want);
        }
        ck_assert_uint_eq(lenet_iter_position(it), next_item);
    }
    /* DONE, and DONE again, leaving the outputs untouched. */
    for (int again = 0; again < 2; again++) {
        const lenet_tensor *t = (const lenet_tensor *)&again;
        const int32_t *labels = (const int32_t *)&again;
        int count = -7;
        ck_assert_int_eq(lenet_iter_next(it, &t, &labels, &count), LENET_DONE);
        ck_assert_ptr_eq(t, (const lenet_tensor *)&again);
        ck_assert_ptr_eq(labels, (const int32_t *)&again);
        ck_assert_int_eq(count, -7);
        ck_assert_uint_eq(lenet_iter_position(it), N);
    }
    lenet_iter_free(it);
    lenet_dataset_free(d);
}
END_TEST

START_TEST(test_iterator_without_shuffle_visits_in_file_order_every_pass)
{
    lenet_dataset *d = open_pattern("set", 11, 2, 2, false, false);
    lenet_iter *it = lenet_iter_create(d, 3, false, 99);
    ck_assert_ptr_nonnull(it);
    int32_t order[11];
    for (int pass = 0; pass < 3; pass++) {
        ck_assert_uint_eq(drain(it, order, NULL, 0), 11);
        for (int i = 0; i < 11; i++)
            ck_assert_int_eq(order[i], i);
        ck_assert_lenet_ok(lenet_iter_reset(it));
        ck_assert_uint_eq(lenet_iter_position(it), 0);
    }
    lenet_iter_free(it);
    lenet_dataset_free(d);
}
END_TEST

START_TEST(test_batch_larger_than_the_data_set_gives_one_batch)
{
    lenet_dataset *d = open_pattern("set", 10, 2, 2, false, false);
    lenet_iter *it = lenet_iter_create(d, 100, false, 0);
    ck_assert_ptr_nonnull(it);
    const lenet_tensor *t;
    const int32_t *labels;
    int count;
    ck_assert_lenet_ok(lenet_iter_next(it, &t, &labels, &count));
    ck_assert_int_eq(count, 10);
    ck_assert_int_eq(lenet_tensor_dim(t, 0), 10);
    ck_assert_int_eq(lenet_iter_next(it, &t, &labels, &count), LENET_DONE);
    lenet_iter_free(it);
    lenet_dataset_free(d);
}
END_TEST

START_TEST(test_shuffled_passes_are_permutations_matching_their_images)
{
    enum { N = 37, H = 3, W = 3, PLANE = H * W };
    lenet_dataset *d = open_pattern("set", N, H, W, true, true);
    lenet_iter *it = lenet_iter_create(d, 5, true, 12345);
    ck_assert_ptr_nonnull(it);
    int32_t passes[4][N];
    float images[N * PLANE];
    for (int p = 0; p < 4; p++) {
        ck_assert_uint_eq(drain(it, passes[p], images, PLANE), N);
        assert_permutation(passes[p], N);
        /* Each image travels with its own label. */
        for (size_t i = 0; i < N; i++) {
            float want[PLANE];
            ck_assert_lenet_ok(lenet_dataset_image(d, (size_t)passes[p][i], want));
            ck_assert_mem_eq(images + i * PLANE, want, sizeof want);
        }
        bool identity = true;
        for (int i = 0; i < N; i++)
            identity = identity && passes[p][i] == i;
        ck_assert_msg(!identity, "pass %d is not shuffled", p);
        for (int q = 0; q < p; q++)
            ck_assert_msg(memcmp(passes[p], passes[q], sizeof passes[p]) != 0, "passes %d and %d are equal", q, p);
        ck_assert_lenet_ok(lenet_iter_reset(it));
    }
    lenet_iter_free(it);
    lenet_dataset_free(d);
}
END_TEST

START_TEST(test_same_seed_gives_the_same_passes_and_another_seed_differs)
{
    enum { N = 23 };
    lenet_dataset *d = open_pattern("set", N, 2, 2, false, false);
    lenet_iter *a = lenet_iter_create(d, 4, true, 7), *b = lenet_iter_create(d, 6, true, 7);
    lenet_iter *c = lenet_iter_create(d, 4, true, 8);
    ck_assert_ptr_nonnull(a);
    ck_assert_ptr_nonnull(b);
    ck_assert_ptr_nonnull(c);
    int32_t pa[N], pb[N], pc[N];
    bool all_equal_to_c = true;
    for (int pass = 0; pass < 3; pass++) {
        /* The batch size does not change the order. */
        ck_assert_uint_eq(drain(a, pa, NULL, 0), N);
        ck_assert_uint_eq(drain(b, pb, NULL, 0), N);
        ck_assert_uint_eq(drain(c, pc, NULL, 0), N);
        ck_assert_mem_eq(pa, pb, sizeof pa);
        all_equal_to_c = all_equal_to_c && memcmp(pa, pc, sizeof pa) == 0;
        ck_assert_lenet_ok(lenet_iter_reset(a));
        ck_assert_lenet_ok(lenet_iter_reset(b));
        ck_assert_lenet_ok(lenet_iter_reset(c));
    }
    ck_assert_msg(!all_equal_to_c, "seeds 7 and 8 give the same passes");
    lenet_iter_free(a);
    lenet_iter_free(b);
    lenet_iter_free(c);
    lenet_dataset_free(d);
}
END_TEST

START_TEST(test_seed_42_gives_a_fixed_order_on_every_machine)
{
    /* xoshiro256** seeded by splitmix64(42), Fisher-Yates from the end with unbiased rejection: computed once by
     * an independent implementation (Python).  A change of generator, seeding or shuffle breaks this. */
    static const int32_t first[10] = {7, 3, 8, 9, 5, 6, 4, 1, 0, 2};
    static const int32_t second[10] = {8, 7, 0, 6, 3, 4, 2, 9, 1, 5};
    lenet_dataset *d = open_pattern("set", 10, 2, 2, false, false);
    lenet_iter *it = lenet_iter_create(d, 3, true, 42);
    ck_assert_ptr_nonnull(it);
    int32_t order[10];
    ck_assert_uint_eq(drain(it, order, NULL, 0), 10);
    for (int i = 0; i < 10; i++)
        ck_assert_msg(order[i] == first[i], "seed 42, first pass, position %d: %d, expected %d", i, (int)order[i],
                      (int)first[i]);
    ck_assert_lenet_ok(lenet_iter_reset(it));
    ck_assert_uint_eq(drain(it, order, NULL, 0), 10);
    for (int i = 0; i < 10; i++)
        ck_assert_msg(order[i] == second[i], "seed 42, second pass, position %d: %d, expected %d", i, (int)order[i],
                      (int)second[i]);
    lenet_iter_free(it);
    lenet_dataset_free(d);
}
END_TEST

START_TEST(test_reset_mid_pass_starts_a_new_permutation)
{
    enum { N = 10 };
    lenet_dataset *d = open_pattern("set", N, 2, 2, false, false);
    lenet_iter *it = lenet_iter_create(d, 4, true, 42);
    ck_assert_ptr_nonnull(it);
    const lenet_tensor *t;
    const int32_t *labels;
    int count;
    ck_assert_lenet_ok(lenet_iter_next(it, &t, &labels, &count));
    int32_t head[4];
    memcpy(head, labels, sizeof head);
    ck_assert_uint_eq(lenet_iter_position(it), 4);
    ck_assert_lenet_ok(lenet_iter_reset(it));
    ck_assert_uint_eq(lenet_iter_position(it), 0);
    int32_t order[N];
    ck_assert_uint_eq(drain(it, order, NULL, 0), N);
    assert_permutation(order, N);
    ck_assert_msg(memcmp(order, head, sizeof head) != 0, "the pass after reset starts as the abandoned one");
    ck_assert_uint_eq(lenet_iter_position(it), N);
    lenet_iter_free(it);
    lenet_dataset_free(d);
}
END_TEST

START_TEST(test_iterator_rejects_bad_arguments)
{
    lenet_dataset *d = open_pattern("set", 4, 2, 2, false, false);
    lenet_error_clear();
    ck_assert_ptr_null(lenet_iter_create(d, 0, false, 0));
    ck_assert_int_eq(lenet__last_status(), LENET_EINVAL);
    ck_assert_msg(strstr(lenet_last_error(), "batch") != NULL, "message: %s", lenet_last_error());
    ck_assert_ptr_null(lenet_iter_create(d, -3, true, 0));
    ck_assert_int_eq(lenet__last_status(), LENET_EINVAL);
    ck_assert_ptr_null(lenet_iter_create(NULL, 4, false, 0));
    ck_assert_int_eq(lenet__last_status(), LENET_EINVAL);
    lenet_iter *it = lenet_iter_create(d, 1, false, 0);
    ck_assert_ptr_nonnull(it);
    const lenet_tensor *t;
    const int32_t *labels;
    int count;
    ck_assert_int_eq(lenet_iter_next(NULL, &t, &labels, &count), LENET_EINVAL);
    ck_assert_int_eq(lenet_iter_next(it, NULL, &labels, &count), LENET_EINVAL);
    ck_assert_int_eq(lenet_iter_next(it, &t, NULL, &count), LENET_EINVAL);
    ck_assert_int_eq(lenet_iter_next(it, &t, &labels, NULL), LENET_EINVAL);
    ck_assert_uint_eq(lenet_iter_position(it), 0);
    ck_assert_int_eq(lenet_iter_reset(NULL), LENET_EINVAL);
    ck_assert_uint_eq(lenet_iter_total(NULL), 0);
    ck_assert_uint_eq(lenet_iter_position(NULL), 0);
    lenet_iter_free(NULL);
    lenet_iter_free(it);
    lenet_dataset_free(d);
}
END_TEST

START_TEST(test_padding_changed_after_the_iterator_was_made_is_estate)
{
    lenet_dataset *d = open_pattern("set", 6, 4, 4, false, false);
    lenet_iter *it = lenet_iter_create(d, 2, false, 0);
    ck_assert_ptr_nonnull(it);
    const lenet_tensor *t;
    const int32_t *labels;
    int count;
    ck_assert_lenet_ok(lenet_iter_next(it, &t, &labels, &count));
    ck_assert_lenet_ok(lenet_dataset_set_padding(d, 2));
    ck_assert_int_eq(lenet_iter_next(it, &t, &labels, &count), LENET_ESTATE);
    ck_assert_msg(strstr(lenet_last_error(), "padding") != NULL, "message: %s", lenet_last_error());
    ck_assert_uint_eq(lenet_iter_position(it), 2);
    /* Back to the size it was made for, it carries on where it stopped. */
    ck_assert_lenet_ok(lenet_dataset_set_padding(d, 0));
    ck_assert_lenet_ok(lenet_iter_next(it, &t, &labels, &count));
    ck_assert_int_eq(labels[0], 2);
    lenet_iter_free(it);
    lenet_dataset_free(d);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("data");
    TCase *open = tcase_create("open");
    tcase_add_unchecked_fixture(open, setup, teardown);
    tcase_add_test(open, test_raw_and_gzip_files_give_the_same_batches);
    tcase_add_test(open, test_pixels_scale_to_the_unit_interval_exactly);
    tcase_add_test(open, test_accessors_check_their_arguments);
    tcase_add_test(open, test_null_paths_are_einval);
    tcase_add_test(open, test_missing_files_are_eio_naming_the_file);
    tcase_add_test(open, test_empty_files_are_eformat);
    tcase_add_test(open, test_swapped_files_are_rejected_by_their_magic);
    tcase_add_test(open, test_wrong_type_or_number_of_dimensions_is_eformat);
    tcase_add_test(open, test_dimensions_of_size_zero_are_eformat);
    tcase_add_test(open, test_count_mismatch_names_both_files_and_counts);
    tcase_add_test(open, test_trailing_bytes_are_eformat);
    tcase_add_test(open, test_truncation_at_every_byte_of_a_raw_file_is_eformat);
    tcase_add_test(open, test_truncation_at_every_byte_of_a_gzip_file_is_eformat);
    tcase_add_test(open, test_corrupt_gzip_stream_is_eformat);
    tcase_add_test(open, test_allocation_failures_are_enomem_and_leak_nothing);
    suite_add_tcase(s, open);

    TCase *transforms = tcase_create("transforms");
    tcase_add_unchecked_fixture(transforms, setup, teardown);
    tcase_add_test(transforms, test_padding_puts_the_background_in_the_border);
    tcase_add_test(transforms, test_range_maps_0_and_255_to_background_and_foreground);
    suite_add_tcase(s, transforms);

    TCase *iter = tcase_create("iterator");
    tcase_add_unchecked_fixture(iter, setup, teardown);
    tcase_add_test(iter, test_iterator_gives_full_batches_then_a_short_one_then_done);
    tcase_add_test(iter, test_iterator_without_shuffle_visits_in_file_order_every_pass);
    tcase_add_test(iter, test_batch_larger_than_the_data_set_gives_one_batch);
    tcase_add_test(iter, test_shuffled_passes_are_permutations_matching_their_images);
    tcase_add_test(iter, test_same_seed_gives_the_same_passes_and_another_seed_differs);
    tcase_add_test(iter, test_seed_42_gives_a_fixed_order_on_every_machine);
    tcase_add_test(iter, test_reset_mid_pass_starts_a_new_permutation);
    tcase_add_test(iter, test_iterator_rejects_bad_arguments);
    tcase_add_test(iter, test_padding_changed_after_the_iterator_was_made_is_estate);
    suite_add_tcase(s, iter);

    TCase *gzip_edges = tcase_create("gzip-edges");
    tcase_add_unchecked_fixture(gzip_edges, setup, teardown);
    tcase_add_test(gzip_edges, test_truncation_inside_the_gzip_trailer_is_eformat);
    tcase_add_test(gzip_edges, test_a_directory_given_as_a_file_is_eio);
    tcase_add_test(gzip_edges, test_a_fifo_is_refused_at_once_as_not_a_regular_file);
    tcase_add_test(gzip_edges, test_bytes_after_the_gzip_stream_are_eformat);
    tcase_add_test(gzip_edges, test_a_large_gzip_file_opens_and_a_byte_after_it_is_eformat);
    suite_add_tcase(s, gzip_edges);

    TCase *limit = tcase_create("limit");
    tcase_add_unchecked_fixture(limit, setup, teardown);
    tcase_add_checked_fixture(limit, NULL, restore_data_limit); /* also after a failed test, with CK_FORK=no */
    tcase_add_test(limit, test_the_data_limit_is_1_gib_by_default_and_0_is_einval);
    tcase_add_test(limit, test_a_header_over_the_data_limit_is_refused_before_the_data_is_read);
    tcase_add_test(limit, test_the_data_limit_bounds_pixel_bytes_and_label_count_and_can_be_raised);
    suite_add_tcase(s, limit);
    return lenet_test_run(s);
}
