/* Helpers of the installed example programs (see tool.h). */
#define _POSIX_C_SOURCE 200809L
#include "tool.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <lenet/lenet.h>

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

FILE *tool_open_regular(const char *path, char *err, size_t err_size)
{
    /* O_NONBLOCK: opening a FIFO with no writer would wait for one; it is cleared again before reading. */
    int fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
    struct stat st;
    if (fd < 0 || fstat(fd, &st) != 0) {
        snprintf(err, err_size, "cannot open %s: %s", path, strerror(errno));
        goto fail;
    }
    if (!S_ISREG(st.st_mode)) {
        snprintf(err, err_size, "%s is %s, not a regular file", path, file_kind(st.st_mode));
        goto fail;
    }
    int flags = fcntl(fd, F_GETFL);
    FILE *f = NULL;
    if (flags < 0 || fcntl(fd, F_SETFL, flags & ~O_NONBLOCK) != 0 || !(f = fdopen(fd, "rb"))) {
        snprintf(err, err_size, "cannot read %s: %s", path, strerror(errno));
        goto fail;
    }
    return f;
fail:
    if (fd >= 0)
        close(fd);
    return NULL;
}

int tool_check_output(const char *prog, const char *option, const char *path)
{
    const char *slash = strrchr(path, '/');
    char dir[4096];
    struct stat st;
    if (!slash)
        snprintf(dir, sizeof dir, ".");
    else
        snprintf(dir, sizeof dir, "%.*s", slash == path ? 1 : (int)(slash - path), path);
    if (stat(path, &st) == 0 && S_ISDIR(st.st_mode)) {
        fprintf(stderr, "%s: %s %s: that is a directory; name a file\n", prog, option, path);
        return -1;
    }
    if (access(dir, W_OK | X_OK) != 0) {
        fprintf(stderr, "%s: %s %s: cannot write into %s: %s\n", prog, option, path, dir, strerror(errno));
        return -1;
    }
    return 0;
}

void tool_announce(bool quiet, const char *path, const char *what)
{
    if (quiet)
        return;
    if (what)
        fprintf(stderr, "wrote %s (%s)\n", path, what);
    else
        fprintf(stderr, "wrote %s\n", path);
}

static volatile sig_atomic_t interrupted;

static void on_interrupt(int sig)
{
    (void)sig;
    interrupted = 1;
}

void tool_catch_interrupt(void)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_interrupt;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = SA_RESETHAND | SA_RESTART; /* the second Ctrl-C takes the default action: the program ends */
    sigaction(SIGINT, &sa, NULL);
}

bool tool_interrupted(void)
{
    return interrupted != 0;
}

const volatile sig_atomic_t *tool_interrupt_flag(void)
{
    return &interrupted;
}

const char *tool_last_error(void)
{
    const char *msg = lenet_last_error();
    /* "name_with_underscores: rest": an internal function's name, not something the user can act on. */
    const char *p = msg;
    bool underscore = false;
    while (*p && (islower((unsigned char)*p) || isdigit((unsigned char)*p) || *p == '_')) {
        underscore = underscore || *p == '_';
        p++;
    }
    if (underscore && p[0] == ':' && p[1] == ' ')
        return p + 2;
    return msg;
}

int tool_save_checkpoint(const char *prog, const char *path, const lenet_model *m, const lenet_optimizer *o,
                         const lenet_iter *it, char *note)
{
    const int status = note && lenet_checkpoint_save(m, o, it, note, path) == LENET_OK ? 0 : -1;
    if (status != 0)
        fprintf(stderr, "%s: --save %s: %s\n", prog, path, note ? tool_last_error() : "out of memory");
    free(note);
    return status;
}
