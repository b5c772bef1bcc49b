/* Command-line helpers shared by the example programs (see cli.h). */
#define _POSIX_C_SOURCE 200809L
#include "cli.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

int cli_parse_int(const char *prog, const char *opt, const char *arg, long min, long max, int *out)
{
    char *end;
    errno = 0;
    long v = strtol(arg, &end, 10);
    if (end == arg || *end != '\0' || errno == ERANGE || v < min || v > max) {
        fprintf(stderr, "%s: %s: '%s' is not a whole number from %ld to %ld\n", prog, opt, arg, min, max);
        return -1;
    }
    *out = (int)v;
    return 0;
}

int cli_parse_float(const char *prog, const char *opt, const char *arg, double min, double max, float *out)
{
    char *end;
    errno = 0;
    double v = strtod(arg, &end);
    if (end == arg || *end != '\0' || errno == ERANGE || !isfinite(v) || v < min || v > max) {
        fprintf(stderr, "%s: %s: '%s' is not a number from %g to %g\n", prog, opt, arg, min, max);
        return -1;
    }
    *out = (float)v;
    return 0;
}

int cli_parse_u64(const char *prog, const char *opt, const char *arg, uint64_t *out)
{
    char *end;
    errno = 0;
    unsigned long long v = strtoull(arg, &end, 10);
    if (end == arg || *end != '\0' || errno == ERANGE || arg[0] == '-' || arg[0] == '+') {
        fprintf(stderr, "%s: %s: '%s' is not a non-negative whole number\n", prog, opt, arg);
        return -1;
    }
    *out = (uint64_t)v;
    return 0;
}

int cli_parse_choice(const char *prog, const char *opt, const char *arg, const char *const *names, int count, int *out)
{
    for (int i = 0; i < count; i++)
        if (strcmp(arg, names[i]) == 0) {
            *out = i;
            return 0;
        }
    fprintf(stderr, "%s: %s: '%s' is not ", prog, opt, arg);
    for (int i = 0; i < count; i++)
        fprintf(stderr, "%s%s", names[i], i + 2 < count ? ", " : i + 1 < count ? " or " : "\n");
    return -1;
}

/* dir/name.gz if it exists or the raw dir/name does not; else dir/name.  Returns a malloc'ed path or NULL. */
static char *idx_path(const char *dir, const char *name)
{
    size_t size = strlen(dir) + strlen(name) + 5;
    char *path = malloc(size);
    if (!path)
        return NULL;
    struct stat st;
    snprintf(path, size, "%s/%s", dir, name);
    bool raw_exists = stat(path, &st) == 0;
    snprintf(path, size, "%s/%s.gz", dir, name);
    if (raw_exists && stat(path, &st) != 0)
        snprintf(path, size, "%s/%s", dir, name);
    return path;
}

lenet_dataset *cli_open_idx(const char *prog, const char *dir, const char *prefix, const char *install_hint)
{
    char images_name[64], labels_name[64];
    snprintf(images_name, sizeof images_name, "%s-images-idx3-ubyte", prefix);
    snprintf(labels_name, sizeof labels_name, "%s-labels-idx1-ubyte", prefix);
    char *images = idx_path(dir, images_name), *labels = idx_path(dir, labels_name);
    lenet_dataset *d = NULL;
    if (!images || !labels) {
        fprintf(stderr, "%s: out of memory\n", prog);
        goto done;
    }
    d = lenet_dataset_open_idx(images, labels);
    if (!d) {
        const char *why = lenet_last_error();
        /* The library's message names the file; name both if it ever does not. */
        if (strstr(why, images) || strstr(why, labels))
            fprintf(stderr, "%s: %s", prog, why);
        else
            fprintf(stderr, "%s: %s, %s: %s", prog, images, labels, why);
        if (install_hint)
            fprintf(stderr, "; install it with: %s", install_hint);
        fputc('\n', stderr);
    }
done:
    free(images);
    free(labels);
    return d;
}

void cli_progress_init(cli_progress *p, FILE *out, bool quiet, int epochs, int batch_size)
{
    memset(p, 0, sizeof *p);
    p->out = out;
    p->quiet = quiet;
    p->tty = isatty(fileno(out));
    p->epochs = epochs;
    p->batch_size = batch_size;
}

void cli_progress_begin_epoch(cli_progress *p, int epoch, size_t examples)
{
    p->epoch = epoch;
    p->batches = (examples + (size_t)p->batch_size - 1) / (size_t)p->batch_size;
    p->next_line = 1;
    p->last_draw = -1.0;
    p->drawn = false;
}

static void format_duration(char *buf, size_t size, double seconds)
{
    long s = seconds > 0 ? (long)(seconds + 0.5) : 0;
    if (s >= 3600)
        snprintf(buf, size, "%ld:%02ld:%02ld", s / 3600, s / 60 % 60, s % 60);
    else
        snprintf(buf, size, "%ld:%02ld", s / 60, s % 60);
}

void cli_progress_update(cli_progress *p, size_t done, size_t total, const lenet_metrics *so_far)
{
    if (p->quiet || done == 0 || total == 0)
        return;
    size_t batch = (done + (size_t)p->batch_size - 1) / (size_t)p->batch_size;
    double left = so_far->seconds * (double)(total - done) / (double)done;
    char eta[32];
    format_duration(eta, sizeof eta, left);
    if (p->tty) {
        /* Redraw at most 10 times a second, and always at the end. */
        if (done < total && so_far->seconds - p->last_draw < 0.1)
            return;
        p->last_draw = so_far->seconds;
        enum { WIDTH = 24 };
        char bar[WIDTH + 1];
        int filled = (int)((double)WIDTH * (double)done / (double)total);
        for (int i = 0; i < WIDTH; i++)
            bar[i] = i < filled ? '=' : (i == filled ? '>' : ' ');
        bar[WIDTH] = '\0';
        fprintf(p->out, "\r\033[Kepoch %d/%d [%s] %zu/%zu  loss %.3f  acc %.3f  ETA %s", p->epoch, p->epochs, bar,
                batch, p->batches, so_far->loss, so_far->accuracy, eta);
        fflush(p->out);
        p->drawn = true;
        return;
    }
    /* Plain lines at the fifths of the epoch, the points d2l's Animator draws. */
    if (p->next_line > 5 || batch * 5 < (size_t)p->next_line * p->batches)
        return;
    while (p->next_line <= 5 && (size_t)p->next_line * p->batches <= batch * 5)
        p->next_line++;
    fprintf(p->out, "epoch %d/%d batch %zu/%zu: loss %.3f, train acc %.3f, %s left in the epoch\n", p->epoch,
            p->epochs, batch, p->batches, so_far->loss, so_far->accuracy, eta);
    fflush(p->out);
}

void cli_progress_end_epoch(cli_progress *p)
{
    if (p->drawn) {
        fputs("\r\033[K", p->out);
        fflush(p->out);
        p->drawn = false;
    }
}
