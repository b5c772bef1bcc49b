/* Drawing for the example programs, through cairo: line plots of training curves in the style of d2l's
 * Animator, and canvases of grayscale images with captions (feature maps).  The file's extension picks the
 * format: .png or .svg.  Compiled only when cairo is found (LENET_HAVE_CAIRO). */
#ifndef LENET_EXAMPLES_PLOT_H
#define LENET_EXAMPLES_PLOT_H

#include <stdbool.h>
#include <stddef.h>

/* The message of the last failed call of this module ("" if none); static storage. */
const char *plot_error(void);

/* True if `path` ends in .png or .svg (any case). */
bool plot_path_supported(const char *path);

/* Line styles of matplotlib's format strings: '-', '--', '-.', ':'. */
typedef enum plot_dash { PLOT_SOLID, PLOT_DASHED, PLOT_DASHDOT, PLOT_DOTTED } plot_dash;

/* One curve: `count` points (x[i], y[i]), borrowed; a NaN y leaves a gap. */
typedef struct plot_series {
    const char *label;
    const double *x, *y;
    size_t count;
    unsigned rgb;         /* 0xRRGGBB */
    plot_dash dash;
} plot_series;

/* Axes of a line plot.  A NaN limit is taken from the data (rounded out to a tick). */
typedef struct plot_axes {
    const char *title;    /* may be NULL */
    const char *xlabel, *ylabel;
    double xmin, xmax, ymin, ymax;
    double width, height; /* in pixels (PNG) or points (SVG) */
} plot_axes;

/* Draws the curves with axes, ticks, grid, labels and a legend placed where it hides the fewest points, and
 * writes the file.  Returns 0, or -1 with plot_error() set. */
int plot_curves(const char *path, const plot_axes *axes, const plot_series *series, size_t count);

/* A drawing surface for the file `path` (.png or .svg; an SVG file is created at once), white. */
typedef struct plot_canvas plot_canvas;

/* Returns a new canvas, or NULL with plot_error() set (unknown extension, bad size, cannot create the file). */
plot_canvas *plot_canvas_create(const char *path, double width, double height);

/* Draws a height x width grayscale image with its top-left corner at (x, y), each pixel `scale` units wide,
 * mapping lo to black and hi to white (values outside are clamped), with a thin grey frame. */
void plot_canvas_image(plot_canvas *c, double x, double y, double scale, const float *pixels, int height,
                       int width, float lo, float hi);

/* Writes `text` with its baseline starting at (x, y); `size` is the font size, `bold` the weight. */
void plot_canvas_text(plot_canvas *c, double x, double y, double size, bool bold, const char *text);

/* Finishes the file: writes the PNG, or completes the SVG.  Draw nothing after.  Returns 0, or -1 with
 * plot_error() set. */
int plot_canvas_save(plot_canvas *c);

/* Frees the canvas.  Harmless on NULL. */
void plot_canvas_free(plot_canvas *c);

/* Releases cairo's and fontconfig's global caches (fonts, glyphs), so leak checkers see a clean exit.
 * Call once at the end of the program, after the last drawing. */
void plot_shutdown(void);

#endif /* LENET_EXAMPLES_PLOT_H */
