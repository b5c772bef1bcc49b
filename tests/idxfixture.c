#define _POSIX_C_SOURCE 200809L
#include "idxfixture.h"

#include <check.h>
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

static char dir_path[256];
/* One stable buffer per file name: a path stays valid until idx_dir_remove, however often it is rewritten. */
static char paths[64][512];
static size_t path_count;


static void reserve(idx_bytes *b, size_t more)
{
    unsigned char *grown = realloc(b->data, b->size + more + 1);
    ck_assert_msg(grown != NULL, "idxfixture: out of memory");
    b->data = grown;
}

void idx_bytes_append(idx_bytes *b, unsigned char value, size_t count)
{
    reserve(b, count);
    memset(b->data + b->size, value, count);
    b->size += count;
}

static void append_be32(idx_bytes *b, uint32_t v)
{
    reserve(b, 4);
    unsigned char *p = b->data + b->size;
    p[0] = (unsigned char)(v >> 24);
    p[1] = (unsigned char)(v >> 16);
    p[2] = (unsigned char)(v >> 8);
    p[3] = (unsigned char)v;
    b->size += 4;
}

static void append_data(idx_bytes *b, const void *data, size_t size)
{
    reserve(b, size);
    if (size)
        memcpy(b->data + b->size, data, size);
    b->size += size;
}

idx_bytes idx_raw_header(uint8_t type, uint8_t ndims, const uint32_t *dims, size_t payload)
{
    idx_bytes b = {0};
    const unsigned char magic[4] = {0, 0, type, ndims};
    append_data(&b, magic, 4);
    for (int i = 0; i < ndims; i++)
        append_be32(&b, dims[i]);
    idx_bytes_append(&b, 0x2a, payload);
    return b;
}

idx_bytes idx_images(uint32_t n, uint32_t h, uint32_t w, const uint8_t *pixels)
{
    idx_bytes b = idx_raw_header(0x08, 3, (const uint32_t[]){n, h, w}, 0);
    size_t size = (size_t)n * h * w;
    if (pixels)
        append_data(&b, pixels, size);
    else
        idx_bytes_append(&b, 0, size);
    return b;
}

idx_bytes idx_labels(uint32_t n, const uint8_t *labels)
{
    idx_bytes b = idx_raw_header(0x08, 1, (const uint32_t[]){n}, 0);
    append_data(&b, labels, n);
    return b;
}

void idx_bytes_free(idx_bytes *b)
{
    free(b->data);
    b->data = NULL;
    b->size = 0;
}

const char *idx_dir_create(void)
{
    ck_assert_msg(dir_path[0] == '\0', "idxfixture: a directory already exists: %s", dir_path);
    const char *tmp = getenv("TMPDIR");
    snprintf(dir_path, sizeof dir_path, "%s/lenet-idx-XXXXXX", tmp && *tmp ? tmp : "/tmp");
    ck_assert_msg(mkdtemp(dir_path) != NULL, "idxfixture: mkdtemp(%s): %s", dir_path, strerror(errno));
    return dir_path;
}

void idx_dir_remove(void)
{
    if (dir_path[0] == '\0')
        return;
    DIR *dir = opendir(dir_path);
    if (dir) {
        struct dirent *e;
        char path[512];
        while ((e = readdir(dir)) != NULL) {
            if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
                continue;
            snprintf(path, sizeof path, "%s/%s", dir_path, e->d_name);
            unlink(path);
        }
        closedir(dir);
    }
    rmdir(dir_path);
    dir_path[0] = '\0';
    path_count = 0;
}

static char *path_of(const char *name)
{
    ck_assert_msg(dir_path[0] != '\0', "idxfixture: idx_dir_create was not called");
    char path[512];
    snprintf(path, sizeof path, "%s/%s", dir_path, name);
    for (size_t i = 0; i < path_count; i++)
        if (strcmp(paths[i], path) == 0)
            return paths[i];
    ck_assert_msg(path_count < sizeof paths / sizeof paths[0], "idxfixture: too many file names");
    memcpy(paths[path_count], path, sizeof path);
    return paths[path_count++];
}

const char *idx_write(const char *name, const void *data, size_t size)
{
    char *path = path_of(name);
    FILE *f = fopen(path, "wb");
    ck_assert_msg(f != NULL, "idxfixture: cannot create %s: %s", path, strerror(errno));
    size_t wrote = size ? fwrite(data, 1, size, f) : 0;
    int closed = fclose(f);
    ck_assert_msg(wrote == size && closed == 0, "idxfixture: cannot write %s", path);
    return path;
}

const char *idx_write_bytes(const char *name, const idx_bytes *b, bool gzip)
{
    if (!gzip)
        return idx_write(name, b->data, b->size);
    char *path = path_of(name);
    gzFile f = gzopen(path, "wb9");
    ck_assert_msg(f != NULL, "idxfixture: gzopen(%s) failed", path);
    int wrote = b->size ? gzwrite(f, b->data, (unsigned)b->size) : 0;
    int closed = gzclose(f);
    ck_assert_msg(wrote == (int)b->size && closed == Z_OK, "idxfixture: cannot gzip into %s", path);
    return path;
}

const char *idx_make_fifo(const char *name)
{
    char *path = path_of(name);
    unlink(path);
    ck_assert_msg(mkfifo(path, 0600) == 0, "idxfixture: mkfifo(%s): %s", path, strerror(errno));
    return path;
}

idx_bytes idx_read_file(const char *path)
{
    idx_bytes b = {0};
    FILE *f = fopen(path, "rb");
    ck_assert_msg(f != NULL, "idxfixture: cannot open %s: %s", path, strerror(errno));
    unsigned char chunk[4096];
    size_t got;
    while ((got = fread(chunk, 1, sizeof chunk, f)) > 0)
        append_data(&b, chunk, got);
    fclose(f);
    return b;
}

idx_bytes idx_gzip(const idx_bytes *b)
{
    const char *path = idx_write_bytes(".idx_gzip_scratch", b, true);
    idx_bytes out = idx_read_file(path);
    unlink(path);
    return out;
}
