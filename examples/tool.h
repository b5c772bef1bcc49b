/* Helpers of the installed example programs (lenet_predict, lenet5_mnist) beside cli.h: opening input files the
 * way liblenet does (regular files only, never blocking on a FIFO), checking output paths before a long run,
 * announcing what was written, and Ctrl-C.  Not part of liblenet: the examples use only its public API. */
#ifndef LENET_EXAMPLES_TOOL_H
#define LENET_EXAMPLES_TOOL_H

#include <signal.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

#include <lenet/lenet.h>

/* The exit status of a program stopped by Ctrl-C, as a shell reports it (128 + SIGINT). */
#define TOOL_EXIT_INTERRUPTED 130

/* Opens `path` for reading if it is a regular file, as lenet_dataset_open_idx does: a FIFO, a device or a
 * directory is refused at once instead of blocking.  Returns the stream, or NULL with a message naming the file
 * and the reason in `err` ("x.pgm is a directory, not a regular file"). */
FILE *tool_open_regular(const char *path, char *err, size_t err_size);

/* Checks before a long run that the directory of `path` exists and is writable, so a typo in an output option
 * does not waste the run.  On failure prints "prog: option path: cannot write into dir: reason" and returns -1. */
int tool_check_output(const char *prog, const char *option, const char *path);

/* Prints "wrote PATH" (and `what`, when not NULL: "wrote run.safetensors (checkpoint after pass 3)") to stderr,
 * as the example programs announce each file they write, unless quiet. */
void tool_announce(bool quiet, const char *path, const char *what);

/* Ctrl-C.  After tool_catch_interrupt(), the first SIGINT only sets a flag that tool_interrupted() returns, so
 * the program can stop at a safe point, save what it has and exit with TOOL_EXIT_INTERRUPTED; it also restores
 * the default action, so a second Ctrl-C ends the program at once. */
void tool_catch_interrupt(void);
bool tool_interrupted(void);
/* The flag itself, for lenet_model_set_stop_flag(): a training pass then stops after the batch under way. */
const volatile sig_atomic_t *tool_interrupt_flag(void);

/* Saves a training checkpoint of m, o and it with `note` (taken over and freed; NULL when making it ran out of
 * memory) to `path`.  On failure prints "prog: --save path: reason" and returns -1; 0 on success. */
int tool_save_checkpoint(const char *prog, const char *path, const lenet_model *m, const lenet_optimizer *o,
                         const lenet_iter *it, char *note);

/* Returns liblenet's message for the last failure without the name of the internal function some messages
 * start with ("checkpoint_input_shape: x: ..." becomes "x: ..."), for messages meant for a program's user. */
const char *tool_last_error(void);

#endif /* LENET_EXAMPLES_TOOL_H */
