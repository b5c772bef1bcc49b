/* Shared by the fuzz targets: lenet reads files by path, so each input is written to a private file (under
 * LENET_FUZZ_TMPDIR if set, else /dev/shm when it exists, else TMPDIR or /tmp) that lives as long as the process.
 * libFuzzer ends with _Exit, which skips the atexit cleanup: run-long.sh gives each run a directory it removes. */
#ifndef LENET_FUZZ_COMMON_H
#define LENET_FUZZ_COMMON_H

#include <stddef.h>
#include <stdint.h>

/* Crashes (so the fuzzer reports it) when the library breaks its contract, after printing which check failed and
 * the library's last error message. */
#define FUZZ_CHECK(cond)                                                                                     \
    do {                                                                                                     \
        if (!(cond))                                                                                         \
            fuzz_fail(__FILE__, __LINE__, #cond);                                                            \
    } while (0)

_Noreturn void fuzz_fail(const char *file, int line, const char *what);

/* The entry point every target defines (libFuzzer's name), also called by fuzz/replay.c. */
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Writes `size` bytes to the process's file number `slot` (0..3) and returns its path (static storage),
 * or NULL if the file cannot be written. */
const char *fuzz_write_file(int slot, const void *data, size_t size);

/* Makes a raw IDX file in memory: 00 00 08 ndims, the dims big-endian, then `payload` bytes of `fill`.
 * Returns its size; `out` must hold 4 + 4 * ndims + payload bytes. */
size_t fuzz_idx(unsigned char *out, int ndims, const uint32_t *dims, size_t payload, unsigned char fill);

/* The item count an IDX header declares if `data` starts like a raw IDX file, else `fallback`. */
uint32_t fuzz_idx_count(const uint8_t *data, size_t size, uint32_t fallback);

/* Inputs are at most this large in the corpora and in run-long.sh (-max_len): reading one must never need
 * gigabytes, so LENET_ENOMEM after such an input is a bug (a size believed before it was checked). */
#define FUZZ_MAX_INPUT (1u << 20)

#endif /* LENET_FUZZ_COMMON_H */
