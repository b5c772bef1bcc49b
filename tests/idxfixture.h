/* Small IDX files written by the tests themselves: images and labels as bytes, raw or gzip, whole, cut short
 * or corrupted, in a private temporary directory that is removed afterwards. */
#ifndef LENET_IDXFIXTURE_H
#define LENET_IDXFIXTURE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* The bytes of one file, built in memory; free with idx_bytes_free. */
typedef struct idx_bytes {
    unsigned char *data;
    size_t size;
} idx_bytes;

/* An IDX images file: magic 0x00000803, then n, h, w big-endian, then n * h * w pixels (NULL: all zero). */
idx_bytes idx_images(uint32_t n, uint32_t h, uint32_t w, const uint8_t *pixels);

/* An IDX labels file: magic 0x00000801, then n big-endian, then n labels. */
idx_bytes idx_labels(uint32_t n, const uint8_t *labels);

/* Any IDX-like header: 00 00 type ndims, then ndims big-endian sizes, then `payload` bytes of 0x2a. */
idx_bytes idx_raw_header(uint8_t type, uint8_t ndims, const uint32_t *dims, size_t payload);

/* Appends `count` bytes of `value`. */
void idx_bytes_append(idx_bytes *b, unsigned char value, size_t count);

/* The gzip (zlib's gzwrite) compression of `b`. */
idx_bytes idx_gzip(const idx_bytes *b);

void idx_bytes_free(idx_bytes *b);

/* Creates a private temporary directory for the current test and returns its path (static storage).
 * Only one at a time; idx_dir_remove deletes it with every file in it. */
const char *idx_dir_create(void);
void idx_dir_remove(void);

/* Writes the first `size` bytes of `data` to <dir>/<name> as they are and returns the path, which stays valid
 * until idx_dir_remove (writing the same name again returns the same path). */
const char *idx_write(const char *name, const void *data, size_t size);

/* Writes `b` to <dir>/<name>, gzip-compressed with gzopen/gzwrite when `gzip`; returns the path as idx_write. */
const char *idx_write_bytes(const char *name, const idx_bytes *b, bool gzip);

/* Creates a FIFO (named pipe) <dir>/<name> and returns its path as idx_write; aborts the test on failure. */
const char *idx_make_fifo(const char *name);

/* Reads a whole file into memory (for checking what was written); aborts the test on failure. */
idx_bytes idx_read_file(const char *path);

#endif /* LENET_IDXFIXTURE_H */
