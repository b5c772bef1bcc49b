/* Crash-safe file replacement: write a temporary file next to the target, flush it to disk, rename it over the
 * target, flush the directory.  A crash or a full disk at any point leaves the old file or the new one. */
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "io/internal.h"

const char *lenet__errno_str(int err, char *buf, size_t size)
{
    /* The XSI strerror_r (this file asks for POSIX, not GNU): fills buf, returns 0 on success. */
    if (strerror_r(err, buf, size) != 0)
        snprintf(buf, size, "error %d", err);
    return buf;
}

static atomic_uint temp_counter;

static lenet_status io_fail(const char *who, const char *what, const char *path, int err)
{
    char reason[128];
    return lenet__fail(LENET_EIO, "%s: %s %s: %s", who, what, path, lenet__errno_str(err, reason, sizeof reason));
}

static int write_all(int fd, const unsigned char *p, size_t n)
{
    while (n > 0) {
        ssize_t done = write(fd, p, n > (1u << 30) ? (1u << 30) : n);
        if (done < 0 && errno == EINTR)
            continue;
        if (done < 0)
            return errno;
        if (done == 0)
            return EIO;
        p += done;
        n -= (size_t)done;
    }
    return 0;
}

/* Flushes the directory holding `path` so the rename itself is durable.  File systems that cannot sync a
 * directory (EINVAL) are not an error. */
static int sync_directory(const char *path, char *dir, size_t size)
{
    const char *slash = strrchr(path, '/');
    if (!slash)
        snprintf(dir, size, ".");
    else if (slash == path)
        snprintf(dir, size, "/");
    else
        snprintf(dir, size, "%.*s", (int)(slash - path), path);
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return errno == EACCES ? 0 : errno;
    int err = fsync(fd) == 0 ? 0 : errno;
    close(fd);
    return (err == EINVAL || err == EROFS) ? 0 : err;
}

lenet_status lenet__write_atomic(const char *path, const void *const *buffers, const size_t *sizes, int count,
                                 const char *who)
{
    size_t path_len = strlen(path);
    char *temp = lenet__malloc(2 * path_len + 64);
    if (!temp)
        return lenet__oom("temporary file name");
    char *dir = temp + path_len + 48;
    lenet_status st = LENET_OK;
    int fd = -1;
    for (int attempt = 0; attempt < 100; attempt++) {
        snprintf(temp, path_len + 48, "%s.tmp-%ld-%u", path, (long)getpid(), atomic_fetch_add(&temp_counter, 1));
        fd = open(temp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
        if (fd >= 0 || errno != EEXIST)
            break;
    }
    if (fd < 0) {
        st = io_fail(who, "cannot create", temp, errno);
        lenet__free(temp);
        return st;
    }
    int err = 0;
    for (int i = 0; i < count && !err; i++)
        err = write_all(fd, buffers[i], sizes[i]);
    if (err) {
        st = io_fail(who, "cannot write", temp, err);
        goto fail;
    }
    if (fsync(fd) != 0) {
        st = io_fail(who, "cannot flush", temp, errno);
        goto fail;
    }
    err = close(fd) == 0 ? 0 : errno;
    fd = -1;
    if (err) {
        st = io_fail(who, "cannot close", temp, err);
        goto fail;
    }
    if (rename(temp, path) != 0) {
        st = io_fail(who, "cannot rename the new file to", path, errno);
        goto fail;
    }
    err = sync_directory(path, dir, path_len + 16);
    if (err)
        st = io_fail(who, "wrote the file but cannot flush its directory for", path, err);
    lenet__free(temp);
    return st;

fail:
    if (fd >= 0)
        close(fd);
    unlink(temp);
    lenet__free(temp);
    return st;
}
