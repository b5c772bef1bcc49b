/* Opening input files safely: a path that names a FIFO, a device or a directory must fail at once rather than
 * block forever in open() or read(), so the file is opened non-blocking and checked before it is read. */
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/internal.h"

static const char *file_kind(mode_t mode)
{
    if (S_ISDIR(mode))
        return "a directory";
    if (S_ISFIFO(mode))
        return "a FIFO";
    if (S_ISCHR(mode))
        return "a character device";
    if (S_ISBLK(mode))
        return "a block device";
    if (S_ISSOCK(mode))
        return "a socket";
    return "not a regular file";
}

/* strerror is not thread-safe; this file asks for POSIX, so strerror_r is the XSI one that fills buf. */
static lenet_status fail_errno(const char *what, const char *path, int err)
{
    char reason[128];
    if (strerror_r(err, reason, sizeof reason) != 0)
        snprintf(reason, sizeof reason, "error %d", err);
    return lenet__fail(LENET_EIO, "cannot %s %s: %s", what, path, reason);
}

lenet_status lenet__open_regular(const char *path, int *fd)
{
    *fd = -1;
    /* O_NONBLOCK: opening a FIFO for reading with no writer would otherwise wait for one. */
    int f = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
    if (f < 0)
        return fail_errno("open", path, errno);
    struct stat sb;
    if (fstat(f, &sb) != 0) {
        int err = errno;
        close(f);
        return fail_errno("stat", path, err);
    }
    if (!S_ISREG(sb.st_mode)) {
        close(f);
        return lenet__fail(LENET_EIO, "%s is %s, not a regular file", path, file_kind(sb.st_mode));
    }
    int flags = fcntl(f, F_GETFL);
    if (flags < 0 || fcntl(f, F_SETFL, flags & ~O_NONBLOCK) != 0) {
        int err = errno;
        close(f);
        return fail_errno("read", path, err);
    }
    *fd = f;
    return LENET_OK;
}
