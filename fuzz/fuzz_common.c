#define _POSIX_C_SOURCE 200809L
#include "fuzz_common.h"

#include <lenet/status.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static char paths[4][256];

void fuzz_fail(const char *file, int line, const char *what)
{
    fprintf(stderr, "%s:%d: check failed: %s (lenet_last_error: \"%s\")\n", file, line, what, lenet_last_error());
    abort();
}

static void remove_files(void)
{
    for (int i = 0; i < 4; i++)
        if (paths[i][0])
            unlink(paths[i]);
}

const char *fuzz_write_file(int slot, const void *data, size_t size)
{
    if (slot < 0 || slot >= 4)
        return NULL;
    if (!paths[slot][0]) {
        struct stat st;
        const char *dir = getenv("LENET_FUZZ_TMPDIR"); /* run-long.sh: a directory it removes afterwards */
        if (!dir || !*dir)
            dir = stat("/dev/shm", &st) == 0 && S_ISDIR(st.st_mode) ? "/dev/shm" : getenv("TMPDIR");
        if (!dir || !*dir)
            dir = "/tmp";
        static int registered;
        if (!registered) {
            atexit(remove_files);
            registered = 1;
        }
        snprintf(paths[slot], sizeof paths[slot], "%s/lenet-fuzz-%ld-%d", dir, (long)getpid(), slot);
    }
    FILE *f = fopen(paths[slot], "wb");
    if (!f)
        return NULL;
    size_t wrote = size ? fwrite(data, 1, size, f) : 0;
    if (fclose(f) != 0 || wrote != size)
        return NULL;
    return paths[slot];
}

size_t fuzz_idx(unsigned char *out, int ndims, const uint32_t *dims, size_t payload, unsigned char fill)
{
    out[0] = 0;
    out[1] = 0;
    out[2] = 0x08;
    out[3] = (unsigned char)ndims;
    for (int i = 0; i < ndims; i++) {
        out[4 + 4 * i] = (unsigned char)(dims[i] >> 24);
        out[5 + 4 * i] = (unsigned char)(dims[i] >> 16);
        out[6 + 4 * i] = (unsigned char)(dims[i] >> 8);
        out[7 + 4 * i] = (unsigned char)dims[i];
    }
    memset(out + 4 + 4 * ndims, fill, payload);
    return 4 + 4 * (size_t)ndims + payload;
}

uint32_t fuzz_idx_count(const uint8_t *data, size_t size, uint32_t fallback)
{
    if (size < 8 || data[0] != 0 || data[1] != 0)
        return fallback;
    return (uint32_t)data[4] << 24 | (uint32_t)data[5] << 16 | (uint32_t)data[6] << 8 | data[7];
}
