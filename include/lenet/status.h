/**
 * @file status.h
 * @brief Status codes, the thread-local error message and the library version.
 */
#ifndef LENET_STATUS_H
#define LENET_STATUS_H

#include "lenet/export.h"

#ifdef __cplusplus
extern "C" {
#endif

/**
 * Result of a fallible call.  Zero is success, positive values are conditions that are not errors
 * (LENET_DONE), negative values are errors; after an error lenet_last_error() says what went wrong.
 */
typedef enum lenet_status {
    LENET_OK = 0,               /**< Success. */
    LENET_DONE = 1,             /**< An iterator has no more batches: not an error. */
    LENET_STOPPED = 2,          /**< A training pass stopped early on request (lenet_model_set_stop_flag()). */
    LENET_EINVAL = -1,          /**< An argument is invalid (NULL handle, non-positive size, label out of range). */
    LENET_ENOMEM = -2,          /**< An allocation failed; nothing leaked and the objects are unchanged. */
    LENET_EIO = -3,             /**< A file could not be opened, read or written. */
    LENET_EFORMAT = -4,         /**< A file is corrupt, truncated or not of the expected format. */
    LENET_ESHAPE = -5,          /**< Tensor shapes do not fit together. */
    LENET_ESTATE = -6,          /**< The call is not allowed in the object's current state (e.g. add after build). */
    LENET_ENUMERIC = -7,        /**< A NaN or infinity appeared (e.g. a diverging loss). */
    LENET_EUNSUPPORTED = -8     /**< The operation or format variant is not supported. */
} lenet_status;

/**
 * Returns a short constant description of a status code ("invalid argument", ...).
 * Never NULL; unknown codes give "unknown status".  Thread-safe.
 */
LENET_API const char *lenet_status_str(lenet_status s);

/**
 * Returns the message of the calling thread's most recent failure, or "" if there was none.
 *
 * The string is owned by the library and stays valid until the next failing call on this thread.
 * Successful calls do not clear it.  Reporting out-of-memory never allocates.
 */
LENET_API const char *lenet_last_error(void);

/** Clears the calling thread's error message, so lenet_last_error() returns "". */
LENET_API void lenet_error_clear(void);

/**
 * Returns the version of the library the program runs with, "MAJOR.MINOR.PATCH".
 * Compare with LENET_VERSION_STRING from lenet/version.h, the headers it was compiled with.
 */
LENET_API const char *lenet_version_string(void);

#ifdef __cplusplus
}
#endif

#endif /* LENET_STATUS_H */
