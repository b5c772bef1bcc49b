/* Line plots and image canvases drawn with cairo (see plot.h): onto an image surface written as PNG, or onto
 * an SVG surface, so both formats share one drawing path. */
#define _POSIX_C_SOURCE 200809L
#include "plot.h"

#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <cairo-svg.h>
#include <cairo.h>
#ifdef PLOT_HAVE_FONTCONFIG
#include <fontconfig/fontconfig.h>
#endif

#define FONT "DejaVu Sans"
#define PI 3.14159265358979323846

static char error_message[512];

const char *plot_error(void)
{
    return error_message;
}

#if defined(__GNUC__)
__attribute__((format(printf, 1, 2)))
#endif
static int fail(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(error_message, sizeof error_message, fmt, ap);
    va_end(ap);
    return -1;
}

enum format { FORMAT_NONE, FORMAT_PNG, FORMAT_SVG };

static enum format format_of(const char *path)
{
    const char *dot = path ? strrchr(path, '.') : NULL;
    if (!dot)
        return FORMAT_NONE;
    if (strcasecmp(dot, ".png") == 0)
        return FORMAT_PNG;
    if (strcasecmp(dot, ".svg") == 0)
        return FORMAT_SVG;
    return FORMAT_NONE;
}

bool plot_path_supported(const char *path)
{
    return format_of(path) != FORMAT_NONE;
}

struct plot_canvas {
    cairo_surface_t *surface; /* an image surface for PNG, an SVG surface writing to path */
    cairo_t *cr;
    enum format format;
    char *path;
};

plot_canvas *plot_canvas_create(const char *path, double width, double height)
{
    enum format format = format_of(path);
    if (format == FORMAT_NONE) {
        fail("%s: unknown image format: the name must end in .png or .svg", path ? path : "(null)");
        return NULL;
    }
    if (!(width >= 1 && height >= 1 && width <= 32768 && height <= 32768)) {
        fail("%s: canvas size %gx%g is out of range", path, width, height);
        return NULL;
    }
    plot_canvas *c = calloc(1, sizeof *c);
    char *copy = malloc(strlen(path) + 1);
    if (!c || !copy) {
        free(c);
        free(copy);
        fail("out of memory");
        return NULL;
    }
    c->path = strcpy(copy, path);
    c->format = format;
    /* SVG is drawn straight into its surface (cairo 1.16 leaks when replaying a recording surface into SVG). */
    c->surface = format == FORMAT_PNG ? cairo_image_surface_create(CAIRO_FORMAT_ARGB32, (int)ceil(width), (int)ceil(height))
                                      : cairo_svg_surface_create(path, width, height);
    c->cr = cairo_create(c->surface);
    if (cairo_status(c->cr) != CAIRO_STATUS_SUCCESS) {
        fail("%s: cannot %s: %s", path, format == FORMAT_PNG ? "create the image" : "write",
             cairo_status_to_string(cairo_status(c->cr)));
        plot_canvas_free(c);
        return NULL;
    }
    cairo_set_source_rgb(c->cr, 1, 1, 1);
    cairo_paint(c->cr);
    return c;
}

void plot_shutdown(void)
{
    cairo_debug_reset_static_data();
#ifdef PLOT_HAVE_FONTCONFIG
    FcFini();
#endif
}

void plot_canvas_free(plot_canvas *c)
{
    if (!c)
        return;
    cairo_destroy(c->cr);
    cairo_surface_destroy(c->surface);
    free(c->path);
    free(c);
}

void plot_canvas_image(plot_canvas *c, double x, double y, double scale, const float *pixels, int height,
                       int width, float lo, float hi)
{
    cairo_surface_t *img = cairo_image_surface_create(CAIRO_FORMAT_RGB24, width, height);
    if (cairo_surface_status(img) != CAIRO_STATUS_SUCCESS) {
        cairo_surface_destroy(img);
        return;
    }
    cairo_surface_flush(img);
    unsigned char *data = cairo_image_surface_get_data(img);
    int stride = cairo_image_surface_get_stride(img);
    float span = hi > lo ? hi - lo : 1.0f;
    for (int r = 0; r < height; r++) {
        uint32_t *row = (uint32_t *)(void *)(data + (size_t)r * (size_t)stride);
        for (int col = 0; col < width; col++) {
            float v = (pixels[(size_t)r * (size_t)width + (size_t)col] - lo) / span;
            v = v < 0 ? 0 : v > 1 ? 1 : v;
            uint32_t g = (uint32_t)lrintf(v * 255.0f);
            row[col] = g << 16 | g << 8 | g;
        }
    }
    cairo_surface_mark_dirty(img);

    cairo_t *cr = c->cr;
    cairo_save(cr);
    cairo_translate(cr, x, y);
    cairo_scale(cr, scale, scale);
    cairo_set_source_surface(cr, img, 0, 0);
    cairo_pattern_set_filter(cairo_get_source(cr), CAIRO_FILTER_NEAREST);
    cairo_rectangle(cr, 0, 0, width, height);
    cairo_fill(cr);
    cairo_restore(cr);
    cairo_surface_destroy(img);

    cairo_set_source_rgb(cr, 0.6, 0.6, 0.6);
    cairo_set_line_width(cr, 1);
    cairo_rectangle(cr, x - 0.5, y - 0.5, width * scale + 1, height * scale + 1);
    cairo_stroke(cr);
}

static void set_font(cairo_t *cr, double size, bool bold)
{
    cairo_select_font_face(cr, FONT, CAIRO_FONT_SLANT_NORMAL, bold ? CAIRO_FONT_WEIGHT_BOLD : CAIRO_FONT_WEIGHT_NORMAL);
    cairo_set_font_size(cr, size);
}

void plot_canvas_text(plot_canvas *c, double x, double y, double size, bool bold, const char *text)
{
    set_font(c->cr, size, bold);
    cairo_set_source_rgb(c->cr, 0, 0, 0);
    cairo_move_to(c->cr, x, y);
    cairo_show_text(c->cr, text);
}

int plot_canvas_save(plot_canvas *c)
{
    cairo_status_t status = cairo_status(c->cr);
    if (status == CAIRO_STATUS_SUCCESS && c->format == FORMAT_PNG)
        status = cairo_surface_write_to_png(c->surface, c->path);
    cairo_surface_finish(c->surface);
    if (status == CAIRO_STATUS_SUCCESS)
        status = cairo_surface_status(c->surface);
    if (status != CAIRO_STATUS_SUCCESS)
        return fail("%s: cannot write: %s", c->path, cairo_status_to_string(status));
    return 0;
}

/* ---- line plots ---- */

/* A round tick step giving about `target` intervals over `range`: 1, 2 or 5 times a power of ten. */
static double nice_step(double range, int target)
{
    double raw = range / target;
    double magnitude = pow(10, floor(log10(raw)));
    double f = raw / magnitude;
    return (f < 1.5 ? 1 : f < 3 ? 2 : f < 7 ? 5 : 10) * magnitude;
}

/* Fills missing limits from the data, rounded out to the tick step; returns the step. */
static double settle_limits(double *lo, double *hi, double data_lo, double data_hi, int target)
{
    bool auto_lo = isnan(*lo), auto_hi = isnan(*hi);
    if (auto_lo)
        *lo = data_lo;
    if (auto_hi)
        *hi = data_hi;
    if (!(*hi > *lo)) {
        double pad = fabs(*lo) > 0 ? fabs(*lo) * 0.1 : 1;
        *lo -= auto_lo ? pad : 0;
        *hi += auto_hi || !(*hi > *lo) ? pad : 0;
    }
    double step = nice_step(*hi - *lo, target);
    if (auto_lo)
        *lo = floor(*lo / step + 1e-9) * step;
    if (auto_hi)
        *hi = ceil(*hi / step - 1e-9) * step;
    return step;
}

static int decimals_for(double step)
{
    int d = (int)ceil(-log10(step) - 1e-9);
    return d < 0 ? 0 : d > 6 ? 6 : d;
}

static void text_at(cairo_t *cr, double x, double y, double align_x, double align_y, const char *text)
{
    cairo_text_extents_t e;
    cairo_text_extents(cr, text, &e);
    cairo_move_to(cr, x - e.x_bearing - e.width * align_x, y - e.y_bearing - e.height * align_y);
    cairo_show_text(cr, text);
}

static void set_dash(cairo_t *cr, plot_dash dash)
{
    static const double dashed[] = {7, 4}, dashdot[] = {7, 3, 1.5, 3}, dotted[] = {1.5, 3};
    switch (dash) {
    case PLOT_DASHED: cairo_set_dash(cr, dashed, 2, 0); break;
    case PLOT_DASHDOT: cairo_set_dash(cr, dashdot, 4, 0); break;
    case PLOT_DOTTED: cairo_set_dash(cr, dotted, 2, 0); break;
    default: cairo_set_dash(cr, NULL, 0, 0); break;
    }
}

static void set_rgb(cairo_t *cr, unsigned rgb)
{
    cairo_set_source_rgb(cr, (rgb >> 16 & 255) / 255.0, (rgb >> 8 & 255) / 255.0, (rgb & 255) / 255.0);
}

int plot_curves(const char *path, const plot_axes *axes, const plot_series *series, size_t count)
{
    double xmin = axes->xmin, xmax = axes->xmax, ymin = axes->ymin, ymax = axes->ymax;
    double data_x[2] = {INFINITY, -INFINITY}, data_y[2] = {INFINITY, -INFINITY};
    for (size_t s = 0; s < count; s++)
        for (size_t i = 0; i < series[s].count; i++) {
            double x = series[s].x[i], y = series[s].y[i];
            if (!isfinite(x) || !isfinite(y))
                continue;
            data_x[0] = fmin(data_x[0], x), data_x[1] = fmax(data_x[1], x);
            data_y[0] = fmin(data_y[0], y), data_y[1] = fmax(data_y[1], y);
        }
    if (!isfinite(data_x[0]))
        data_x[0] = 0, data_x[1] = 1, data_y[0] = 0, data_y[1] = 1;
    double xstep = settle_limits(&xmin, &xmax, data_x[0], data_x[1], 10);
    double ystep = settle_limits(&ymin, &ymax, data_y[0], data_y[1], 6);

    double width = axes->width > 0 ? axes->width : 640, height = axes->height > 0 ? axes->height : 440;
    plot_canvas *c = plot_canvas_create(path, width, height);
    if (!c)
        return -1;
    cairo_t *cr = c->cr;
    const double font = 13;
    const double left = 62, right = width - 24, top = axes->title ? 38 : 16, bottom = height - 50;
    double pw = right - left, ph = bottom - top;
#define PX(v) (left + ((v) - xmin) / (xmax - xmin) * pw)
#define PY(v) (bottom - ((v) - ymin) / (ymax - ymin) * ph)

    /* Grid, ticks and tick labels. */
    set_font(cr, font - 1, false);
    cairo_set_line_width(cr, 1);
    char label[64];
    for (int axis = 0; axis < 2; axis++) {
        double lo = axis ? ymin : xmin, hi = axis ? ymax : xmax, step = axis ? ystep : xstep;
        int decimals = decimals_for(step);
        for (double t = ceil(lo / step - 1e-9) * step; t <= hi + step * 1e-9; t += step) {
            double p = axis ? round(PY(t)) + 0.5 : round(PX(t)) + 0.5;
            cairo_set_source_rgb(cr, 0.9, 0.9, 0.9);
            if (axis)
                cairo_move_to(cr, left, p), cairo_line_to(cr, right, p);
            else
                cairo_move_to(cr, p, top), cairo_line_to(cr, p, bottom);
            cairo_stroke(cr);
            cairo_set_source_rgb(cr, 0, 0, 0);
            if (axis)
                cairo_move_to(cr, left - 5, p), cairo_line_to(cr, left, p);
            else
                cairo_move_to(cr, p, bottom), cairo_line_to(cr, p, bottom + 5);
            cairo_stroke(cr);
            snprintf(label, sizeof label, "%.*f", decimals, fabs(t) < step * 1e-9 ? 0.0 : t);
            if (axis)
                text_at(cr, left - 8, p, 1.0, 0.5, label);
            else
                text_at(cr, p, bottom + 9, 0.5, 0.0, label);
        }
    }
    cairo_set_source_rgb(cr, 0, 0, 0);
    cairo_rectangle(cr, round(left) + 0.5, round(top) + 0.5, round(pw), round(ph));
    cairo_stroke(cr);

    /* Axis labels and title. */
    set_font(cr, font, false);
    text_at(cr, left + pw / 2, height - 8, 0.5, 1.0, axes->xlabel ? axes->xlabel : "");
    if (axes->ylabel && axes->ylabel[0]) {
        cairo_save(cr);
        cairo_translate(cr, 14, top + ph / 2);
        cairo_rotate(cr, -PI / 2);
        text_at(cr, 0, 0, 0.5, 0.5, axes->ylabel);
        cairo_restore(cr);
    }
    if (axes->title) {
        set_font(cr, font + 1, true);
        text_at(cr, left + pw / 2, top - 12, 0.5, 1.0, axes->title);
    }

    /* Curves, clipped to the plot area. */
    cairo_save(cr);
    cairo_rectangle(cr, left, top, pw, ph);
    cairo_clip(cr);
    cairo_set_line_width(cr, 2);
    cairo_set_line_join(cr, CAIRO_LINE_JOIN_ROUND);
    for (size_t s = 0; s < count; s++) {
        set_rgb(cr, series[s].rgb);
        set_dash(cr, series[s].dash);
        cairo_set_line_cap(cr, series[s].dash == PLOT_DOTTED ? CAIRO_LINE_CAP_ROUND : CAIRO_LINE_CAP_BUTT);
        bool pen_down = false;
        for (size_t i = 0; i < series[s].count; i++) {
            double x = series[s].x[i], y = series[s].y[i];
            if (!isfinite(x) || !isfinite(y)) {
                pen_down = false;
                continue;
            }
            if (pen_down)
                cairo_line_to(cr, PX(x), PY(y));
            else
                cairo_move_to(cr, PX(x), PY(y));
            pen_down = true;
        }
        cairo_stroke(cr);
        /* A point with no drawable neighbour would be invisible: give it a dot. */
        for (size_t i = 0; i < series[s].count; i++) {
            const double *xs = series[s].x, *ys = series[s].y;
            bool alone = isfinite(xs[i]) && isfinite(ys[i]) &&
                         (i == 0 || !isfinite(xs[i - 1]) || !isfinite(ys[i - 1])) &&
                         (i + 1 == series[s].count || !isfinite(xs[i + 1]) || !isfinite(ys[i + 1]));
            if (alone) {
                cairo_new_sub_path(cr);
                cairo_arc(cr, PX(xs[i]), PY(ys[i]), 3, 0, 2 * PI);
                cairo_fill(cr);
            }
        }
    }
    cairo_restore(cr);
    cairo_set_dash(cr, NULL, 0, 0);

    /* Legend, in the corner (or at mid-height) that covers the fewest data points, as matplotlib's "best". */
    if (count > 0) {
        set_font(cr, font - 1, false);
        double text_w = 0;
        for (size_t s = 0; s < count; s++) {
            cairo_text_extents_t e;
            cairo_text_extents(cr, series[s].label ? series[s].label : "", &e);
            text_w = fmax(text_w, e.x_advance);
        }
        const double line = 20, sample = 30, pad = 8;
        double lw = pad + sample + 6 + text_w + pad, lh = pad + line * (double)count + pad - 4;
        double cand[5][2] = {{right - 8 - lw, top + 8}, {right - 8 - lw, bottom - 8 - lh}, {left + 8, top + 8},
                             {left + 8, bottom - 8 - lh}, {right - 8 - lw, top + (ph - lh) / 2}};
        size_t best = 0, best_hidden = SIZE_MAX;
        for (size_t k = 0; k < 5; k++) {
            size_t hidden = 0;
            for (size_t s = 0; s < count; s++)
                for (size_t i = 0; i < series[s].count; i++) {
                    double px = PX(series[s].x[i]), py = PY(series[s].y[i]);
                    hidden += px >= cand[k][0] - 4 && px <= cand[k][0] + lw + 4 && py >= cand[k][1] - 4 &&
                              py <= cand[k][1] + lh + 4;
                }
            if (hidden < best_hidden)
                best = k, best_hidden = hidden;
        }
        double lx = round(cand[best][0]) + 0.5, ly = round(cand[best][1]) + 0.5;
        cairo_rectangle(cr, lx, ly, round(lw), round(lh));
        cairo_set_source_rgba(cr, 1, 1, 1, 0.85);
        cairo_fill_preserve(cr);
        cairo_set_source_rgb(cr, 0.8, 0.8, 0.8);
        cairo_set_line_width(cr, 1);
        cairo_stroke(cr);
        for (size_t s = 0; s < count; s++) {
            double cy = ly + pad + line * (double)s + line / 2 - 2;
            set_rgb(cr, series[s].rgb);
            set_dash(cr, series[s].dash);
            cairo_set_line_width(cr, 2);
            cairo_set_line_cap(cr, series[s].dash == PLOT_DOTTED ? CAIRO_LINE_CAP_ROUND : CAIRO_LINE_CAP_BUTT);
            cairo_move_to(cr, lx + pad, cy);
            cairo_line_to(cr, lx + pad + sample, cy);
            cairo_stroke(cr);
            cairo_set_dash(cr, NULL, 0, 0);
            cairo_set_source_rgb(cr, 0, 0, 0);
            text_at(cr, lx + pad + sample + 6, cy, 0.0, 0.5, series[s].label ? series[s].label : "");
        }
    }
#undef PX
#undef PY
    int result = plot_canvas_save(c);
    plot_canvas_free(c);
    return result;
}
