/* Command-line helpers shared by the example programs: checked number parsing, opening an IDX data set pair
 * with one clear error line, and a training progress display on stderr (a bar on a terminal, plain lines
 * otherwise).  Not part of liblenet: the examples use only its public API. */
#ifndef LENET_EXAMPLES_CLI_H
#define LENET_EXAMPLES_CLI_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include <lenet/lenet.h>

/* Each parser stores the value of option `opt` (its name for messages, e.g. "--lr") and returns 0, or prints
 * "prog: --lr: 'x' is not a number ..." to stderr and returns -1.  Bounds are inclusive. */
int cli_parse_int(const char *prog, const char *opt, const char *arg, long min, long max, int *out);
int cli_parse_float(const char *prog, const char *opt, const char *arg, double min, double max, float *out);
int cli_parse_u64(const char *prog, const char *opt, const char *arg, uint64_t *out);
/* One of `count` names: *out = its index, or "prog: --opt: 'x' is not a, b or c" to stderr and -1. */
int cli_parse_choice(const char *prog, const char *opt, const char *arg, const char *const *names, int count, int *out);

/* Opens `dir`/`prefix`-images-idx3-ubyte.gz and the matching labels (the raw file when the .gz one does not
 * exist), prefix "train" or "t10k".  On failure prints ONE line to stderr: the program, the library's message
 * (which names the file and what is wrong), then "install it with: `install_hint`" unless install_hint is NULL
 * (a directory the user named: installing the default data set would not help), and returns NULL. */
lenet_dataset *cli_open_idx(const char *prog, const char *dir, const char *prefix, const char *install_hint);

/* Progress of the training passes on a stream (stderr): a redrawn bar with epoch, batch i/n, running loss
 * and accuracy and the time left when the stream is a terminal; otherwise a plain line at 1/5, 2/5, ... of
 * each epoch; nothing when quiet. */
typedef struct cli_progress {
    FILE *out;
    bool tty, quiet;
    int epoch, epochs, batch_size;
    size_t batches;       /* batches in the current epoch */
    int next_line;        /* next fifth of the epoch that gets a plain line, 1..5 */
    double last_draw;     /* seconds into the epoch of the last redraw */
    bool drawn;           /* a bar is on the terminal line */
} cli_progress;

void cli_progress_init(cli_progress *p, FILE *out, bool quiet, int epochs, int batch_size);
void cli_progress_begin_epoch(cli_progress *p, int epoch, size_t examples);
/* Call from a lenet_progress_fn with its arguments. */
void cli_progress_update(cli_progress *p, size_t done, size_t total, const lenet_metrics *so_far);
/* Clears the bar, so what follows starts on a clean line. */
void cli_progress_end_epoch(cli_progress *p);

#endif /* LENET_EXAMPLES_CLI_H */
