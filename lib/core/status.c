/* Thread-local error messages.  The buffer is static storage so that reporting LENET_ENOMEM never allocates. */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "core/internal.h"
#include "lenet/version.h"

#define MESSAGE_SIZE 512

static _Thread_local char message[MESSAGE_SIZE];
static _Thread_local lenet_status last_status = LENET_OK;

const char *lenet_status_str(lenet_status s)
{
    switch (s) {
    case LENET_OK: return "ok";
    case LENET_DONE: return "done";
    case LENET_STOPPED: return "stopped on request";
    case LENET_EINVAL: return "invalid argument";
    case LENET_ENOMEM: return "out of memory";
    case LENET_EIO: return "input/output error";
    case LENET_EFORMAT: return "bad file format";
    case LENET_ESHAPE: return "shape mismatch";
    case LENET_ESTATE: return "invalid state";
    case LENET_ENUMERIC: return "numerical error";
    case LENET_EUNSUPPORTED: return "unsupported";
    }
    return "unknown status";
}

const char *lenet_last_error(void)
{
    return message;
}

void lenet_error_clear(void)
{
    message[0] = '\0';
    last_status = LENET_OK;
}

const char *lenet_version_string(void)
{
    return LENET_VERSION_STRING;
}

static void record(lenet_status status, const char *fmt, va_list ap)
{
    last_status = status;
    vsnprintf(message, sizeof message, fmt, ap);
}

lenet_status lenet__fail(lenet_status status, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    record(status, fmt, ap);
    va_end(ap);
    return status;
}

void *lenet__fail_null(lenet_status status, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    record(status, fmt, ap);
    va_end(ap);
    return NULL;
}

void lenet__error_prefix(const char *fmt, ...)
{
    char prefix[160];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(prefix, sizeof prefix, fmt, ap);
    va_end(ap);
    if (n <= 0)
        return;
    size_t plen = strlen(prefix);
    size_t mlen = 0;
    while (mlen < MESSAGE_SIZE - 1 && message[mlen])
        mlen++;
    if (plen + mlen >= MESSAGE_SIZE)
        mlen = MESSAGE_SIZE - 1 - plen;
    memmove(message + plen, message, mlen);
    memcpy(message, prefix, plen);
    message[plen + mlen] = '\0';
}

lenet_status lenet__last_status(void)
{
    return last_status;
}

lenet_status lenet__oom(const char *what)
{
    return lenet__fail(LENET_ENOMEM, "out of memory allocating %s", what);
}
