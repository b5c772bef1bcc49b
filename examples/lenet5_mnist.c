/* LeNet-5 exactly as LeCun, Bottou, Bengio and Haffner published it in 1998 ("Gradient-Based Learning Applied
 * to Document Recognition"), trained on MNIST with stochastic diagonal Levenberg-Marquardt (SDLM).
 *
 *   lenet5_mnist [--data DIR] [--passes N] [--optimizer sdlm|sgd] [--distortions] [--seed S] [--quiet] ...
 *                [--csv FILE] [--plot FILE] [--save FILE] [--resume FILE]
 *
 * Prints the network (60,000 trainable parameters, 340,908 connections), then the train and test error after
 * every pass, the test confusion matrix and the time; shows the progress of each pass on stderr.  Fetch MNIST
 * with scripts/fetch-mnist.sh.  The defaults (0.88% test error after 20 passes) depart from the paper in three
 * settings that make its recipe train: Xavier-uniform weights, mu = 0.5 and the MAP constant j = 3;
 * `--init lecun --mu 0.02` is the paper's recipe, which diverges (docs/lenet5.md says why and shows every run).
 *
 * --save writes a training checkpoint after every pass, and when Ctrl-C stops a pass; --resume continues it
 * bit-identically: the checkpoint holds the weights, SDLM's Hessian estimate, the step size and the order of the
 * patterns (and so the distortions drawn for them), and its note the run's settings, the position in the pass
 * and the curves so far. */
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include <lenet/lenet.h>

#include "cli.h"
#include "tool.h"
#ifdef LENET_HAVE_CAIRO
#include "plot.h"
#endif

#define PROG "lenet5_mnist"
#define MAX_PASSES 1000
#define POINTS_PER_PASS 5 /* the running train error is recorded at the fifths of a pass */
#define NOTE_MAGIC "lenet5_mnist checkpoint 1"

/* The settings a run is defined by: a resumed run takes them from its checkpoint. */
typedef struct settings {
    int passes;
    bool sgd;
    float lr;           /* SGD: learning rate of the first passes, then the shape of the paper's schedule */
    float mu;
    float map_j;
    lenet_rbf_loss_kind criterion;
    int batch;
    int hessian_samples;
    float running;      /* SDLM: > 0 also blends each pattern's curvature into h with this weight */
    lenet_init init;
    int limit;          /* training patterns per pass, 0 = all */
    bool distort;
    uint64_t seed;
} settings;

typedef struct options {
    settings run;
    const char *data, *csv, *plot, *save, *resume;
    int train_eval;     /* training patterns the train error is measured on, 0 = all */
    bool quiet, passes_given;
    const char *given[16]; /* settings given on the command line, by name, for --resume's warnings */
    int n_given;
} options;

static void usage(FILE *out)
{
    fprintf(out,
            "usage: " PROG " [options]\n"
            "Trains the LeNet-5 of LeCun et al. 1998 on MNIST with SDLM and prints the train and test error after\n"
            "every pass, then the test confusion matrix.\n"
            "\n"
            "  --data DIR            MNIST IDX files, raw or .gz (default: $XDG_CACHE_HOME/liblenet/mnist or\n"
            "                        ~/.cache/liblenet/mnist; fetch them with scripts/fetch-mnist.sh)\n"
            "  --passes N            training passes (default 20)\n"
            "  --optimizer sdlm|sgd  SDLM as in the paper (default), or plain SGD for comparison\n"
            "  --lr X                SGD: learning rate of the first two passes, then decreasing as the paper's\n"
            "                        epsilon schedule (default 0.001)\n"
            "  --mu X                SDLM's mu (default 0.5; the paper's 0.02 diverges here, see docs/lenet5.md)\n"
            "  --criterion map|mse   the paper's MAP criterion (default) or the plain mean-squared one\n"
            "  --map-j X             the MAP constant j (default %g)\n"
            "  --batch N             patterns per update (default 1, as the paper)\n"
            "  --hessian-samples N   patterns for each Hessian estimate (default 500)\n"
            "  --running GAMMA       SDLM: also update the Hessian estimate after every pattern,\n"
            "                        h <- (1 - GAMMA) h + GAMMA h_pattern (default 0: only before each pass)\n"
            "  --init lecun|xavier|pytorch  initialisation (default xavier; lecun is the paper's +-2.4 / fan-in)\n"
            "  --limit N             train on only the first N patterns of each pass (for quick tries)\n"
            "  --train-eval N        measure the train error on the first N training patterns (default all)\n"
            "  --distortions         random planar affine distortions of the training patterns, new ones every\n"
            "                        pass (paper section III.C): scale 0.85 to 1.15, shear up to 11.3 degrees,\n"
            "                        translation up to 2 pixels (--distort is the same)\n"
            "  --seed S              initialisation, order and distortion seed (default 0)\n"
            "  --csv FILE            write pass, step size, loss and error rates, one row a pass\n"
            "  --plot FILE           draw the train and test error against the pass into FILE.png or FILE.svg\n"
            "  --save FILE           save a training checkpoint to FILE after each pass, and on Ctrl-C\n"
            "  --resume FILE         continue the run saved in FILE, with its settings (--passes may add passes)\n"
            "  --quiet               only the final results\n"
            "  --version             print liblenet's version\n"
            "  --help                show this help\n"
            "\n"
            "Ctrl-C stops after the current pattern, saves the checkpoint (with --save) and the plot so far, and\n"
            "exits with status 130; a second Ctrl-C ends the program at once.\n",
            (double)LENET_MAP_J_DEFAULT);
}

static const char *init_name(lenet_init init)
{
    return init == LENET_INIT_LECUN ? "lecun" : init == LENET_INIT_PYTORCH ? "pytorch" : "xavier";
}

/* A positive float option: "x" must parse and be > 0 (and at most max). */
static int parse_positive(const char *opt, const char *arg, double max, float *out)
{
    char *end;
    errno = 0;
    double v = strtod(arg, &end);
    if (end == arg || *end != '\0' || errno == ERANGE || !isfinite(v) || !(v > 0.0) || v > max) {
        fprintf(stderr, PROG ": %s: '%s' is not a number greater than 0 and at most %g\n", opt, arg, max);
        return -1;
    }
    *out = (float)v;
    return 0;
}

/* Parses the command line; returns 0 to go on, 1 to exit 0 (--help, --version), 2 after printing one line that
 * says what is wrong. */
static int parse_options(int argc, char **argv, options *o)
{
    *o = (options){.run = {.passes = 20, .mu = 0.5f, .map_j = LENET_MAP_J_DEFAULT, .batch = 1,
                           .hessian_samples = 500, .init = LENET_INIT_XAVIER_UNIFORM, .lr = 0.001f}};
    enum { DATA = 256, PASSES, OPTIMIZER, LR, MU, CRITERION, MAP_J, BATCH, HESSIAN_SAMPLES, RUNNING, INIT, LIMIT,
           TRAIN_EVAL, DISTORT, SEED, CSV, PLOT, SAVE, RESUME, QUIET, VERSION, HELP };
    static const struct option longopts[] = {
        {"data", required_argument, NULL, DATA},
        {"passes", required_argument, NULL, PASSES},
        {"optimizer", required_argument, NULL, OPTIMIZER},
        {"lr", required_argument, NULL, LR},
        {"mu", required_argument, NULL, MU},
        {"criterion", required_argument, NULL, CRITERION},
        {"map-j", required_argument, NULL, MAP_J},
        {"batch", required_argument, NULL, BATCH},
        {"hessian-samples", required_argument, NULL, HESSIAN_SAMPLES},
        {"running", required_argument, NULL, RUNNING},
        {"init", required_argument, NULL, INIT},
        {"limit", required_argument, NULL, LIMIT},
        {"train-eval", required_argument, NULL, TRAIN_EVAL},
        {"distortions", no_argument, NULL, DISTORT},
        {"distort", no_argument, NULL, DISTORT},
        {"seed", required_argument, NULL, SEED},
        {"csv", required_argument, NULL, CSV},
        {"plot", required_argument, NULL, PLOT},
        {"save", required_argument, NULL, SAVE},
        {"resume", required_argument, NULL, RESUME},
        {"quiet", no_argument, NULL, QUIET},
        {"version", no_argument, NULL, VERSION},
        {"help", no_argument, NULL, HELP},
        {NULL, 0, NULL, 0},
    };
    settings *r = &o->run;
    opterr = 0;
    int c, index = -1;
    while ((c = getopt_long(argc, argv, ":h", longopts, &index)) != -1) {
        int bad = 0;
        const char *name = index >= 0 ? longopts[index].name : NULL;
        char opt[32];
        snprintf(opt, sizeof opt, "--%s", name ? name : "");
        index = -1;
        switch (c) {
        case DATA: o->data = optarg; break;
        case PASSES:
            bad = cli_parse_int(PROG, opt, optarg, 1, MAX_PASSES, &r->passes);
            o->passes_given = true;
            break;
        case OPTIMIZER:
            if (strcmp(optarg, "sdlm") != 0 && strcmp(optarg, "sgd") != 0) {
                fprintf(stderr, PROG ": --optimizer: '%s' is neither sdlm nor sgd\n", optarg);
                bad = -1;
            }
            r->sgd = strcmp(optarg, "sgd") == 0;
            break;
        case LR: bad = parse_positive(opt, optarg, 1000.0, &r->lr); break;
        case MU: bad = parse_positive(opt, optarg, 1e6, &r->mu); break;
        case CRITERION:
            if (strcmp(optarg, "map") != 0 && strcmp(optarg, "mse") != 0) {
                fprintf(stderr, PROG ": --criterion: '%s' is neither map nor mse\n", optarg);
                bad = -1;
            }
            r->criterion = strcmp(optarg, "mse") == 0 ? LENET_RBF_LOSS_MSE : LENET_RBF_LOSS_MAP;
            break;
        case MAP_J: bad = cli_parse_float(PROG, opt, optarg, 0.0, 1000.0, &r->map_j); break;
        case BATCH: bad = cli_parse_int(PROG, opt, optarg, 1, 60000, &r->batch); break;
        case HESSIAN_SAMPLES: bad = cli_parse_int(PROG, opt, optarg, 1, 60000, &r->hessian_samples); break;
        case RUNNING: bad = cli_parse_float(PROG, opt, optarg, 0.0, 1.0, &r->running); break;
        case INIT:
            if (strcmp(optarg, "lecun") == 0)
                r->init = LENET_INIT_LECUN;
            else if (strcmp(optarg, "xavier") == 0)
                r->init = LENET_INIT_XAVIER_UNIFORM;
            else if (strcmp(optarg, "pytorch") == 0)
                r->init = LENET_INIT_PYTORCH;
            else {
                fprintf(stderr, PROG ": --init: '%s' is not lecun, xavier or pytorch\n", optarg);
                bad = -1;
            }
            break;
        case LIMIT: bad = cli_parse_int(PROG, opt, optarg, 0, 1 << 30, &r->limit); break;
        case TRAIN_EVAL: bad = cli_parse_int(PROG, opt, optarg, 0, 1 << 30, &o->train_eval); break;
        case DISTORT: r->distort = true; break;
        case SEED: bad = cli_parse_u64(PROG, opt, optarg, &r->seed); break;
        case CSV: o->csv = optarg; break;
        case PLOT: o->plot = optarg; break;
        case SAVE: o->save = optarg; break;
        case RESUME: o->resume = optarg; break;
        case QUIET: o->quiet = true; break;
        case VERSION: printf(PROG " (liblenet %s)\n", lenet_version_string()); return 1;
        case 'h':
        case HELP: usage(stdout); return 1;
        case ':':
            fprintf(stderr, PROG ": %s needs a value\n", argv[optind - 1]);
            return 2;
        default:
            fprintf(stderr, PROG ": unknown option '%s' (" PROG " --help lists the options)\n", argv[optind - 1]);
            return 2;
        }
        if (bad)
            return 2;
        /* What a resumed run takes from its checkpoint instead. */
        if (c != DATA && c != PASSES && c != TRAIN_EVAL && c != CSV && c != PLOT && c != SAVE && c != RESUME &&
            c != QUIET && o->n_given < (int)(sizeof o->given / sizeof o->given[0]))
            o->given[o->n_given++] = name;
    }
    if (optind < argc) {
        fprintf(stderr, PROG ": unexpected argument '%s' (" PROG " takes only options; --help lists them)\n",
                argv[optind]);
        return 2;
    }
#ifdef LENET_HAVE_CAIRO
    if (o->plot && !plot_path_supported(o->plot)) {
        fprintf(stderr, PROG ": --plot %s: the name must end in .png or .svg\n", o->plot);
        return 2;
    }
#else
    if (o->plot) {
        fprintf(stderr, PROG ": --plot needs cairo, and this build has none (install libcairo2-dev and rebuild)\n");
        return 2;
    }
#endif
    return 0;
}

static double now_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* DIR/name.gz if it exists or the raw DIR/name does not; else DIR/name. */
static void idx_path(char *path, size_t size, const char *dir, const char *name)
{
    struct stat st;
    snprintf(path, size, "%s/%s", dir, name);
    bool raw_exists = stat(path, &st) == 0;
    snprintf(path, size, "%s/%s.gz", dir, name);
    if (raw_exists && stat(path, &st) != 0)
        snprintf(path, size, "%s/%s", dir, name);
}

/* Opens the images and labels of one split ("train", "t10k") in LeNet-5's input form; on failure prints one line:
 * liblenet's message (it names the file) and, for the default directory, how to fetch MNIST. */
static lenet_dataset *open_split(const char *dir, bool dir_given, const char *split)
{
    char images[4096], labels[4096], name[64];
    snprintf(name, sizeof name, "%s-images-idx3-ubyte", split);
    idx_path(images, sizeof images, dir, name);
    snprintf(name, sizeof name, "%s-labels-idx1-ubyte", split);
    idx_path(labels, sizeof labels, dir, name);
    lenet_dataset *d = lenet_dataset_open_idx(images, labels);
    if (!d) {
        fprintf(stderr, PROG ": %s%s\n", tool_last_error(),
                dir_given ? "" : "; fetch MNIST with scripts/fetch-mnist.sh, or pass --data DIR");
        return NULL;
    }
    if (lenet_dataset_height(d) != 28 || lenet_dataset_width(d) != 28) {
        fprintf(stderr, PROG ": %s: the images are %dx%d, not MNIST's 28x28\n", images, lenet_dataset_height(d),
                lenet_dataset_width(d));
        lenet_dataset_free(d);
        return NULL;
    }
    /* LeNet-5's input: the 28x28 digits centred in 32x32, background -0.1, ink 1.175 (mean ~0, variance ~1). */
    if (lenet_dataset_set_padding(d, 2) != LENET_OK || lenet_dataset_set_range(d, -0.1f, 1.175f) != LENET_OK) {
        fprintf(stderr, PROG ": %s\n", tool_last_error());
        lenet_dataset_free(d);
        return NULL;
    }
    return d;
}

/* C1 S2 C3 S4 C5 F6 RBF, each weighted layer followed by the squashing function. */
static lenet_status build_lenet5(lenet_model *m)
{
    lenet_layer *layers[] = {
        lenet_conv2d(6, 5, 1, 0),   lenet_scaled_tanh(), /* C1: 6@28x28 */
        lenet_subsampling(2, 2),    lenet_scaled_tanh(), /* S2: 6@14x14 */
        lenet_lenet5_c3(),          lenet_scaled_tanh(), /* C3: 16@10x10, Table I */
        lenet_subsampling(2, 2),    lenet_scaled_tanh(), /* S4: 16@5x5 */
        lenet_conv2d(120, 5, 1, 0), lenet_scaled_tanh(), /* C5: 120@1x1 */
        lenet_flatten(),
        lenet_linear(84),           lenet_scaled_tanh(), /* F6 */
        lenet_lenet5_rbf(),                              /* output: 10 Euclidean RBF units */
    };
    lenet_status st = LENET_OK;
    for (size_t i = 0; i < sizeof layers / sizeof layers[0]; i++) {
        lenet_status added = lenet_model_add(m, layers[i]);
        if (added != LENET_OK && st == LENET_OK)
            st = added;
    }
    return st;
}

/* Section III.C's distortions: "planar affine transformations (translation, scaling, squeezing, shearing)",
 * drawn anew for every pattern of every pass by the iterator (the Hessian's sampler sees the plain patterns).
 * Translation up to 2 pixels, scale 0.85 to 1.15 and a horizontal shear of tan(11.3 degrees) = 0.2; the library's
 * scaling is the same along both axes, so squeezing is not modelled. */
static lenet_status set_distortions(lenet_iter *train_it)
{
    lenet_augment *aug = lenet_augment_create();
    lenet_status st = aug ? lenet_augment_add_affine(aug, 0.0f, 0.15f, 11.3f, 2.0f) : LENET_ENOMEM;
    if (st == LENET_OK)
        st = lenet_iter_set_augment(train_it, aug);
    lenet_augment_free(aug);
    return st;
}

/* Index of the smallest penalty: the RBF unit the input is closest to. */
static int closest(const float *y, int k)
{
    int best = 0;
    for (int i = 1; i < k; i++)
        if (y[i] < y[best])
            best = i;
    return best;
}

/* Error rate over the first `limit` examples of a data set (0: all); fills confusion[true][predicted] when not
 * NULL.  Ctrl-C abandons it: it then returns LENET_OK with tool_interrupted() true. */
static lenet_status evaluate(lenet_model *m, lenet_dataset *d, size_t limit, double *error, long confusion[10][10])
{
    lenet_iter *it = lenet_iter_create(d, limit && limit < 1000 ? (int)limit : 1000, false, 0);
    lenet_tensor *y = NULL;
    if (!it)
        return LENET_ENOMEM;
    size_t wrong = 0, seen = 0;
    lenet_status st;
    for (;;) {
        const lenet_tensor *images;
        const int32_t *labels;
        int count;
        st = (limit && seen >= limit) || tool_interrupted() ? LENET_DONE
                                                            : lenet_iter_next(it, &images, &labels, &count);
        if (st != LENET_OK)
            break;
        if (!y || lenet_tensor_dim(y, 0) != count) {
            lenet_tensor_free(y);
            y = lenet_tensor_create(2, (int[]){count, 10});
            if (!y) {
                st = LENET_ENOMEM;
                break;
            }
        }
        st = lenet_model_predict(m, images, y);
        if (st != LENET_OK)
            break;
        if (limit && (size_t)count > limit - seen)
            count = (int)(limit - seen); /* only the first `limit` patterns count */
        for (int i = 0; i < count; i++) {
            int guess = closest(lenet_tensor_cdata(y) + (size_t)i * 10, 10);
            wrong += guess != labels[i];
            if (confusion)
                confusion[labels[i]][guess]++;
        }
        seen += (size_t)count;
    }
    if (st == LENET_DONE)
        st = LENET_OK;
    *error = seen ? (double)wrong / (double)seen : 0.0;
    lenet_tensor_free(y);
    lenet_iter_free(it);
    return st;
}

/* ---- the state of a run: what a checkpoint's note holds besides the settings ---- */

typedef struct pass_result {
    double step, loss, running_error, train_error, test_error, seconds;
} pass_result;

typedef struct run_state {
    int pass;              /* the pass under way or next, from 1 */
    size_t seen;           /* its patterns trained so far */
    double loss_sum;       /* their summed loss */
    size_t wrong;          /* and how many of them were misclassified as they were trained */
    int estimates;         /* Hessian estimates drawn so far (SDLM: one at the start of each pass) */
    uint64_t rng;          /* unused: notes keep the field, which held the distortions' generator before the
                            * library drew them */
    pass_result *results;  /* passes done: results[0 .. pass - 2] */
    double *point_x, *point_error; /* the running train error at the fifths of each pass */
    size_t points;
} run_state;

static int state_init(run_state *s, int passes, uint64_t seed)
{
    *s = (run_state){.pass = 1, .rng = seed * 0x9e3779b97f4a7c15ULL + 7};
    s->results = calloc((size_t)passes, sizeof *s->results);
    s->point_x = calloc((size_t)passes * POINTS_PER_PASS, sizeof *s->point_x);
    s->point_error = calloc((size_t)passes * POINTS_PER_PASS, sizeof *s->point_error);
    return s->results && s->point_x && s->point_error ? 0 : -1;
}

static void state_free(run_state *s)
{
    free(s->results);
    free(s->point_x);
    free(s->point_error);
}

/* The note: a first line naming the format, then one "key value" a line (settings, then the state), then
 * "result ..." a finished pass and "point x error" a fifth of a pass. */
static char *note_write(const settings *r, const run_state *s)
{
    size_t size = 2048 + (size_t)(s->pass) * 200 + s->points * 60;
    char *note = malloc(size);
    if (!note)
        return NULL;
    size_t len = (size_t)snprintf(
        note, size,
        NOTE_MAGIC "\npasses %d\noptimizer %s\nlr %.9g\nmu %.9g\nmap_j %.9g\ncriterion %s\nbatch %d\n"
                   "hessian_samples %d\nrunning %.9g\ninit %s\nlimit %d\ndistort %d\nseed %" PRIu64 "\n"
                   "pass %d\nseen %zu\nloss_sum %.17g\nwrong %zu\nestimates %d\nrng %" PRIu64 "\n",
        r->passes, r->sgd ? "sgd" : "sdlm", (double)r->lr, (double)r->mu, (double)r->map_j,
        r->criterion == LENET_RBF_LOSS_MSE ? "mse" : "map", r->batch, r->hessian_samples, (double)r->running,
        init_name(r->init), r->limit, r->distort, r->seed, s->pass, s->seen, s->loss_sum, s->wrong, s->estimates,
        s->rng);
    for (int p = 0; p + 1 < s->pass && len < size; p++) {
        const pass_result *q = &s->results[p];
        len += (size_t)snprintf(note + len, size - len, "result %.17g %.17g %.17g %.17g %.17g %.17g\n", q->step,
                                q->loss, q->running_error, q->train_error, q->test_error, q->seconds);
    }
    for (size_t i = 0; i < s->points && len < size; i++)
        len += (size_t)snprintf(note + len, size - len, "point %.17g %.17g\n", s->point_x[i], s->point_error[i]);
    if (len >= size) {
        free(note);
        return NULL;
    }
    return note;
}

/* Reads the settings of a note; returns -1 if it is not a note of this program. */
static int note_settings(const char *note, settings *r)
{
    char optimizer[8], criterion[8], init[16];
    int distort, n = 0;
    if (strncmp(note, NOTE_MAGIC "\n", sizeof NOTE_MAGIC) != 0)
        return -1;
    n = sscanf(note + sizeof NOTE_MAGIC,
               "passes %d optimizer %7s lr %f mu %f map_j %f criterion %7s batch %d hessian_samples %d running %f "
               "init %15s limit %d distort %d seed %" SCNu64,
               &r->passes, optimizer, &r->lr, &r->mu, &r->map_j, criterion, &r->batch, &r->hessian_samples,
               &r->running, init, &r->limit, &distort, &r->seed);
    if (n != 13 || r->passes < 1 || r->passes > MAX_PASSES || r->batch < 1 || r->hessian_samples < 1 ||
        r->limit < 0)
        return -1;
    r->sgd = strcmp(optimizer, "sgd") == 0;
    r->criterion = strcmp(criterion, "mse") == 0 ? LENET_RBF_LOSS_MSE : LENET_RBF_LOSS_MAP;
    r->init = strcmp(init, "lecun") == 0     ? LENET_INIT_LECUN
              : strcmp(init, "pytorch") == 0 ? LENET_INIT_PYTORCH
                                             : LENET_INIT_XAVIER_UNIFORM;
    r->distort = distort != 0;
    return 0;
}

/* Reads the state of a note into s (made by state_init for MAX_PASSES); -1 if it is malformed. */
static int note_state(const char *note, run_state *s)
{
    const char *p = strstr(note, "\npass ");
    if (!p || sscanf(p, " pass %d seen %zu loss_sum %lf wrong %zu estimates %d rng %" SCNu64, &s->pass, &s->seen,
                     &s->loss_sum, &s->wrong, &s->estimates, &s->rng) != 6 ||
        s->pass < 1 || s->pass > MAX_PASSES + 1 || s->estimates < 0 || s->estimates > s->pass)
        return -1;
    int results = 0;
    s->points = 0;
    for (p = strchr(p + 1, '\n'); p; p = strchr(p + 1, '\n')) {
        pass_result q;
        double x, error;
        if (sscanf(p, " result %lf %lf %lf %lf %lf %lf", &q.step, &q.loss, &q.running_error, &q.train_error,
                   &q.test_error, &q.seconds) == 6) {
            if (results >= MAX_PASSES)
                return -1;
            s->results[results++] = q;
        } else if (sscanf(p, " point %lf %lf", &x, &error) == 2) {
            if (s->points >= (size_t)MAX_PASSES * POINTS_PER_PASS)
                return -1;
            s->point_x[s->points] = x;
            s->point_error[s->points++] = error;
        }
    }
    return results == s->pass - 1 ? 0 : -1;
}

/* ---- one training pass ---- */

typedef struct pass_context {
    lenet_model *m;
    lenet_optimizer *opt;
    lenet_iter *it;
    const settings *run;
    cli_progress *progress;
    size_t total;          /* patterns in the pass */
    size_t resumed_at;     /* patterns already done when this process took the pass up */
    double start;
} pass_context;

/* Records the running train error at the fifths of the pass crossed by the patterns [before, seen). */
static void record_points(run_state *s, size_t total, size_t before)
{
    for (int k = 1; k <= POINTS_PER_PASS; k++) {
        size_t at = (total * (size_t)k + POINTS_PER_PASS - 1) / POINTS_PER_PASS;
        if (at > before && at <= s->seen && s->seen > 0) {
            s->point_x[s->points] = (s->pass - 1) + (double)k / POINTS_PER_PASS;
            s->point_error[s->points++] = 100.0 * (double)s->wrong / (double)s->seen;
        }
    }
}

/* Trains the rest of pass s->pass: up to `total` patterns, updating s as it goes; stops early, between two
 * batches, on Ctrl-C. */
static lenet_status train_pass(pass_context *c, run_state *s)
{
    const settings *r = c->run;
    lenet_tensor *dy = NULL, *hy = NULL;
    lenet_status st = LENET_OK;
    const bool running = !r->sgd && r->running > 0;
    if (s->seen == 0 && lenet_iter_position(c->it) >= lenet_iter_total(c->it))
        st = lenet_iter_reset(c->it);
    while (st == LENET_OK && s->seen < c->total && !tool_interrupted()) {
        const lenet_tensor *images, *y;
        const int32_t *labels;
        int count;
        st = lenet_iter_next(c->it, &images, &labels, &count);
        if (st == LENET_DONE) { /* --limit: a pass may run over the end of the training set */
            st = lenet_iter_reset(c->it);
            if (st == LENET_OK)
                st = lenet_iter_next(c->it, &images, &labels, &count);
        }
        if (st != LENET_OK)
            break;
        st = lenet_model_forward(c->m, images, &y);
        if (st != LENET_OK)
            break;
        if (!dy || lenet_tensor_dim(dy, 0) != count) {
            lenet_tensor_free(dy);
            lenet_tensor_free(hy);
            dy = lenet_tensor_create(2, (int[]){count, 10});
            hy = lenet_tensor_create(2, (int[]){count, 10});
            if (!dy || !hy) {
                st = LENET_ENOMEM;
                break;
            }
        }
        float loss;
        st = lenet_rbf_loss(y, labels, r->criterion, r->map_j, &loss, dy, running ? hy : NULL);
        if (st != LENET_OK)
            break;
        if (running) {
            /* The running form of SDLM's estimate: the curvature of this batch (a mean: count 1) blended into h. */
            lenet_model_zero_grad(c->m);
            st = lenet_model_backward_gn(c->m, dy, hy);
            if (st == LENET_OK)
                st = lenet_sdlm_update_hessian_from_grads(c->opt, 1.0, r->running);
            if (st != LENET_OK)
                break;
        }
        for (int i = 0; i < count; i++)
            s->wrong += closest(lenet_tensor_cdata(y) + (size_t)i * 10, 10) != labels[i];
        lenet_model_zero_grad(c->m);
        st = lenet_model_backward(c->m, dy);
        if (st == LENET_OK)
            st = lenet_optimizer_step(c->opt);
        if (st != LENET_OK)
            break;
        size_t before = s->seen;
        s->loss_sum += (double)loss * count;
        s->seen += (size_t)count;
        record_points(s, c->total, before);
        /* The progress display estimates the time left from the time per pattern of this process's share. */
        double elapsed = now_seconds() - c->start;
        size_t fresh = s->seen - c->resumed_at;
        lenet_metrics so_far = {.loss = s->loss_sum / (double)s->seen,
                                .accuracy = 1.0 - (double)s->wrong / (double)s->seen,
                                .seconds = fresh ? elapsed * (double)s->seen / (double)fresh : 0.0,
                                .examples = s->seen};
        cli_progress_update(c->progress, s->seen, c->total, &so_far);
    }
    lenet_tensor_free(dy);
    lenet_tensor_free(hy);
    return st;
}

/* Advances a fresh Hessian sampler past the draws of `estimates` earlier estimates, as
 * lenet_sdlm_estimate_hessian() made them: batches of the iterator until `samples` patterns are taken (the rest
 * of the last batch is left), starting a new permutation at the end of the data set. */
static lenet_status skip_hessian_draws(lenet_iter *it, int samples, int estimates)
{
    lenet_status st = LENET_OK;
    for (int e = 0; e < estimates && st == LENET_OK; e++) {
        int done = 0;
        while (st == LENET_OK && done < samples) {
            const lenet_tensor *images;
            const int32_t *labels;
            int count;
            st = lenet_iter_next(it, &images, &labels, &count);
            if (st == LENET_DONE) {
                st = lenet_iter_reset(it);
                continue;
            }
            done += count < samples - done ? count : samples - done;
        }
    }
    return st;
}

/* ---- outputs ---- */

static int write_csv(const char *path, const run_state *s)
{
    FILE *f = fopen(path, "w");
    if (!f) {
        fprintf(stderr, PROG ": --csv %s: cannot open: %s\n", path, strerror(errno));
        return -1;
    }
    fprintf(f, "pass,step,loss,running_train_error,train_error,test_error,seconds\n");
    for (int p = 0; p + 1 < s->pass; p++) {
        const pass_result *q = &s->results[p];
        fprintf(f, "%d,%.6g,%.6f,%.6f,%.6f,%.6f,%.1f\n", p + 1, q->step, q->loss, q->running_error, q->train_error,
                q->test_error, q->seconds);
    }
    if (ferror(f) | (fclose(f) != 0)) {
        fprintf(stderr, PROG ": --csv %s: cannot write: %s\n", path, strerror(errno));
        return -1;
    }
    return 0;
}

#ifdef LENET_HAVE_CAIRO
/* The train and test error (%) against the pass, as the paper's Figure 5, and the running error within passes. */
static int write_plot(const char *path, const settings *r, const run_state *s)
{
    int done = s->pass - 1;
    double *x = malloc(((size_t)done + 1) * sizeof *x), *train = malloc(((size_t)done + 1) * sizeof *train);
    double *test = malloc(((size_t)done + 1) * sizeof *test);
    int rc = -1;
    if (!x || !train || !test) {
        fprintf(stderr, PROG ": --plot: out of memory\n");
        goto done;
    }
    for (int p = 0; p < done; p++) {
        x[p] = p + 1;
        train[p] = 100.0 * s->results[p].train_error;
        test[p] = 100.0 * s->results[p].test_error;
    }
    char title[160];
    snprintf(title, sizeof title, "LeNet-5 on MNIST: %s, %s criterion, seed %" PRIu64 "%s", r->sgd ? "SGD" : "SDLM",
             r->criterion == LENET_RBF_LOSS_MSE ? "MSE" : "MAP", r->seed, r->distort ? ", distortions" : "");
    plot_axes axes = {title, "pass", "error (%)", 0.0, (double)r->passes, 0.0, NAN, 640, 440};
    plot_series series[] = {
        {"running train error", s->point_x, s->point_error, s->points, 0xbf00bf, PLOT_DOTTED},
        {"train error", x, train, (size_t)done, 0x1f77b4, PLOT_SOLID},
        {"test error", x, test, (size_t)done, 0x008000, PLOT_DASHDOT},
    };
    if (plot_curves(path, &axes, series, sizeof series / sizeof series[0]) != 0)
        fprintf(stderr, PROG ": --plot %s: %s\n", path, plot_error());
    else
        rc = 0;
done:
    free(x);
    free(train);
    free(test);
    return rc;
}
#endif

/* Writes the checkpoint and its note; says why not on failure. */
static int save_checkpoint(const char *path, lenet_model *m, lenet_optimizer *opt, lenet_iter *it,
                           const settings *r, const run_state *s)
{
    return tool_save_checkpoint(PROG, path, m, opt, it, note_write(r, s));
}

static void print_settings(const settings *r)
{
    if (r->sgd)
        printf("\nSGD, %s criterion (j = %g), batch %d, learning rate %g times the paper's epsilon schedule / %g\n",
               r->criterion == LENET_RBF_LOSS_MAP ? "MAP" : "MSE", (double)r->map_j, r->batch, (double)r->lr,
               (double)lenet_sdlm_paper_epsilon(0));
    else
        printf("\nSDLM, %s criterion (j = %g), batch %d, mu = %g, Hessian re-estimated on %d patterns per pass%s\n",
               r->criterion == LENET_RBF_LOSS_MAP ? "MAP" : "MSE", (double)r->map_j, r->batch, (double)r->mu,
               r->hessian_samples, r->running > 0 ? " and updated after every pattern" : "");
    printf("%s%s\n", r->distort ? "random affine distortions of the training set\n" : "",
           "pass  epsilon/lr   loss      train err  test err   seconds");
    fflush(stdout);
}

/* Reads the note of the checkpoint o->resume into o->run (warning about the settings given again, which it
 * overrides), loading the weights into m on the way.  Returns a malloc'ed note, or NULL after saying why. */
static char *resume_settings(options *o, lenet_model *m)
{
    size_t size = 4096 + (size_t)MAX_PASSES * (200 + POINTS_PER_PASS * 60);
    char *note = malloc(size);
    if (!note) {
        fprintf(stderr, PROG ": out of memory\n");
        return NULL;
    }
    settings saved;
    if (lenet_checkpoint_load(m, NULL, NULL, o->resume, note, size) != LENET_OK) {
        fprintf(stderr, PROG ": --resume %s: %s\n", o->resume, tool_last_error());
        free(note);
        return NULL;
    }
    if (note_settings(note, &saved) != 0) {
        fprintf(stderr, PROG ": --resume %s: not a checkpoint of " PROG " (its note is not one)\n", o->resume);
        free(note);
        return NULL;
    }
    /* A setting given again with another value than the run's is ignored, and said so. */
    const settings *asked = &o->run;
    for (int i = 0; i < o->n_given; i++) {
        const char *name = o->given[i];
        bool same = strcmp(name, "optimizer") == 0         ? asked->sgd == saved.sgd
                    : strcmp(name, "lr") == 0              ? asked->lr == saved.lr
                    : strcmp(name, "mu") == 0              ? asked->mu == saved.mu
                    : strcmp(name, "criterion") == 0       ? asked->criterion == saved.criterion
                    : strcmp(name, "map-j") == 0           ? asked->map_j == saved.map_j
                    : strcmp(name, "batch") == 0           ? asked->batch == saved.batch
                    : strcmp(name, "hessian-samples") == 0 ? asked->hessian_samples == saved.hessian_samples
                    : strcmp(name, "running") == 0         ? asked->running == saved.running
                    : strcmp(name, "init") == 0            ? asked->init == saved.init
                    : strcmp(name, "limit") == 0           ? asked->limit == saved.limit
                    : strcmp(name, "distort") == 0 || strcmp(name, "distortions") == 0 ? asked->distort == saved.distort
                    : strcmp(name, "seed") == 0            ? asked->seed == saved.seed
                                                           : false;
        if (!same)
            fprintf(stderr, PROG ": warning: --%s is ignored: --resume continues the run saved in %s with its own "
                            "settings\n", name, o->resume);
    }
    if (o->passes_given)
        saved.passes = o->run.passes;
    o->run = saved;
    return note;
}

int main(int argc, char **argv)
{
    options o;
    int parsed = parse_options(argc, argv, &o);
    if (parsed != 0)
        return parsed == 1 ? 0 : 2;
    char default_dir[4096];
    bool data_given = o.data != NULL;
    if (!o.data) {
        const char *cache = getenv("XDG_CACHE_HOME"), *home = getenv("HOME");
        if (cache && *cache)
            snprintf(default_dir, sizeof default_dir, "%s/liblenet/mnist", cache);
        else
            snprintf(default_dir, sizeof default_dir, "%s/.cache/liblenet/mnist", home ? home : ".");
        o.data = default_dir;
    }
    if ((o.csv && tool_check_output(PROG, "--csv", o.csv) != 0) ||
        (o.plot && tool_check_output(PROG, "--plot", o.plot) != 0) ||
        (o.save && tool_check_output(PROG, "--save", o.save) != 0))
        return 2;

    int rc = 1;
    char *note = NULL;
    lenet_model *m = NULL;
    lenet_optimizer *opt = NULL;
    lenet_iter *train_it = NULL, *hessian_it = NULL;
    lenet_dataset *train = NULL, *test = NULL;
    run_state s = {0};
    cli_progress progress;
    lenet_status st = LENET_ENOMEM;

    if (!(train = open_split(o.data, data_given, "train")) || !(test = open_split(o.data, data_given, "t10k")))
        goto done;
    m = lenet_model_create();
    if (m)
        st = build_lenet5(m);
    if (st == LENET_OK)
        st = lenet_model_build(m, 1, 32, 32);
    if (st != LENET_OK)
        goto fail;
    if (o.resume && !(note = resume_settings(&o, m)))
        goto done;
    settings *r = &o.run;
    if (!o.resume && (st = lenet_model_init(m, r->init, r->seed)) != LENET_OK)
        goto fail;
    if (state_init(&s, MAX_PASSES, r->seed) != 0) { /* a resumed run may have more passes than this one asks */
        fprintf(stderr, PROG ": out of memory\n");
        goto done;
    }
    opt = r->sgd ? lenet_sgd_create(m, r->lr, 0.0f, 0.0f) : lenet_sdlm_create(m, lenet_sdlm_paper_epsilon(0), r->mu);
    train_it = lenet_iter_create(train, r->batch, true, r->seed + 1);
    hessian_it = lenet_iter_create(train, 100, true, r->seed + 2);
    if (!opt || !train_it || !hessian_it)
        goto fail;
    if (r->distort && (st = set_distortions(train_it)) != LENET_OK)
        goto fail;
    if (o.resume) {
        /* The weights, the optimizer's state (SDLM's Hessian estimate, the step size) and the order of the
         * training patterns come back from the checkpoint; the Hessian sampler is replayed. */
        if (note_state(note, &s) != 0) {
            fprintf(stderr, PROG ": --resume %s: not a checkpoint of " PROG " (its note is malformed)\n", o.resume);
            goto done;
        }
        if (s.pass > r->passes) {
            fprintf(stderr, PROG ": --resume %s: the run already has %d passes; ask for more with --passes\n",
                    o.resume, s.pass - 1);
            goto done;
        }
        st = lenet_checkpoint_load(m, opt, train_it, o.resume, NULL, 0);
        if (st == LENET_OK && !r->sgd)
            st = skip_hessian_draws(hessian_it, r->hessian_samples, s.estimates);
        if (st != LENET_OK) {
            fprintf(stderr, PROG ": --resume %s: %s\n", o.resume, tool_last_error());
            goto done;
        }
    }
    if (!o.quiet) {
        printf("LeNet-5 (LeCun et al. 1998) on MNIST: %zu training and %zu test patterns from %s\n",
               lenet_dataset_size(train), lenet_dataset_size(test), o.data);
        lenet_model_print(m, stdout);
        if (o.resume)
            printf("\nresuming %s: pass %d of %d, %zu patterns of it done\n", o.resume, s.pass, r->passes, s.seen);
        print_settings(r);
    }

    size_t total = lenet_iter_total(train_it);
    if (r->limit && (size_t)r->limit < total)
        total = (size_t)r->limit;
    cli_progress_init(&progress, stderr, o.quiet, r->passes, r->batch);
    tool_catch_interrupt();
    double start = now_seconds(), train_error = 0, test_error = 0;
    int first_pass = s.pass;
    bool interrupted = false;
    for (; s.pass <= r->passes; s.pass++) {
        pass_context c = {m, opt, train_it, r, &progress, total, s.seen, now_seconds()};
        /* The pass's step size: SDLM's epsilon of the paper's schedule, or SGD's rate scaled the same way.  SDLM
         * re-estimates the Hessian before each pass, except when resuming a pass whose estimate the checkpoint
         * holds (with the step size). */
        float epsilon = lenet_sdlm_paper_epsilon(s.pass - 1);
        bool fresh_pass = r->sgd || s.estimates < s.pass;
        if (fresh_pass)
            st = lenet_optimizer_set_lr(opt, r->sgd ? r->lr * epsilon / lenet_sdlm_paper_epsilon(0) : epsilon);
        if (st == LENET_OK && fresh_pass && !r->sgd) {
            st = lenet_sdlm_estimate_hessian(opt, hessian_it, (size_t)r->hessian_samples, r->criterion, r->map_j);
            if (st == LENET_OK)
                s.estimates = s.pass;
        }
        cli_progress_begin_epoch(&progress, s.pass, total);
        if (st == LENET_OK)
            st = train_pass(&c, &s);
        cli_progress_end_epoch(&progress);
        if (st == LENET_OK && !tool_interrupted())
            st = evaluate(m, train, (size_t)o.train_eval, &train_error, NULL);
        if (st == LENET_OK && !tool_interrupted())
            st = evaluate(m, test, 0, &test_error, NULL);
        if (st != LENET_OK)
            goto fail;
        if (tool_interrupted()) {
            interrupted = true;
            break;
        }
        pass_result *q = &s.results[s.pass - 1];
        *q = (pass_result){lenet_optimizer_lr(opt), s.seen ? s.loss_sum / (double)s.seen : 0.0,
                           s.seen ? (double)s.wrong / (double)s.seen : 0.0, train_error, test_error,
                           now_seconds() - c.start};
        if (!o.quiet) {
            printf("%4d  %-10.6g  %-8.4f  %7.2f%%   %7.2f%%   %7.1f\n", s.pass, q->step, q->loss,
                   100.0 * q->train_error, 100.0 * q->test_error, q->seconds);
            fflush(stdout);
        }
        s.seen = 0;
        s.loss_sum = 0.0;
        s.wrong = 0;
        if (o.save) {
            s.pass++; /* the checkpoint's state: the next pass, none of it done */
            int saved = save_checkpoint(o.save, m, opt, train_it, r, &s);
            s.pass--;
            if (saved != 0)
                goto done;
        }
    }
    double seconds = now_seconds() - start;

    if (interrupted) {
        /* Ctrl-C: the batch under way was finished; the pass stops here. */
        rc = TOOL_EXIT_INTERRUPTED;
        fprintf(stderr, "\n" PROG ": interrupted in pass %d after %zu of %zu patterns\n", s.pass, s.seen, total);
        if (o.save && save_checkpoint(o.save, m, opt, train_it, r, &s) == 0) {
            tool_announce(false, o.save, "checkpoint");
            fprintf(stderr, "continue with: " PROG " --resume %s --save %s%s%s%s%s%s%s\n", o.save, o.save,
                    data_given ? " --data " : "", data_given ? o.data : "", o.csv ? " --csv " : "", o.csv ? o.csv : "",
                    o.plot ? " --plot " : "", o.plot ? o.plot : "");
        } else if (!o.save) {
            fprintf(stderr, "nothing was saved to resume from: run with --save FILE to be able to continue\n");
        }
    } else {
        long confusion[10][10] = {{0}};
        st = evaluate(m, test, 0, &test_error, confusion);
        if (st != LENET_OK)
            goto fail;
        printf("\nconfusion matrix on the test set (rows: true digit, columns: recognised as)\n      ");
        for (int k = 0; k < 10; k++)
            printf("%6d", k);
        printf("\n");
        for (int row = 0; row < 10; row++) {
            printf("%6d", row);
            for (int k = 0; k < 10; k++)
                printf("%6ld", confusion[row][k]);
            printf("\n");
        }
        int ran = r->passes - first_pass + 1;
        printf("\n%s, %d passes: train error %.2f%%, test error %.2f%% (%d of %zu wrong), %.1f s (%.1f s per pass%s)\n",
               r->sgd ? "SGD" : "SDLM", r->passes, 100.0 * train_error, 100.0 * test_error,
               (int)lround(test_error * (double)lenet_dataset_size(test)), lenet_dataset_size(test), seconds,
               ran > 0 ? seconds / ran : 0.0, o.resume ? " in this run" : "");
        fflush(stdout);
        rc = 0;
        if (o.save) {
            char what[64];
            snprintf(what, sizeof what, "checkpoint after pass %d", r->passes);
            tool_announce(o.quiet, o.save, what);
        }
    }
    /* The curves so far, also after Ctrl-C. */
    if (o.csv) {
        if (write_csv(o.csv, &s) == 0)
            tool_announce(o.quiet && !interrupted, o.csv, NULL);
        else if (rc == 0)
            rc = 1;
    }
#ifdef LENET_HAVE_CAIRO
    if (o.plot) {
        if (write_plot(o.plot, r, &s) == 0)
            tool_announce(o.quiet && !interrupted, o.plot, NULL);
        else if (rc == 0)
            rc = 1;
    }
#endif
    goto done;

fail:
    fprintf(stderr, PROG ": %s\n", st == LENET_ENOMEM && !*lenet_last_error() ? "out of memory" : tool_last_error());
done:
    free(note);
    state_free(&s);
    lenet_iter_free(train_it);
    lenet_iter_free(hessian_it);
    lenet_optimizer_free(opt);
    lenet_model_free(m);
    lenet_dataset_free(train);
    lenet_dataset_free(test);
#ifdef LENET_HAVE_CAIRO
    plot_shutdown();
#endif
    return rc;
}
