/* rows.h: read a table of numbers from a text stream, one row per line, every row checked.
 * Include it after the model's header with GRAPHC_MODEL_ALIASES: the numbers are read as the
 * model's floating type model_float_t (float, or double for a float64 model).
 *
 * Format: numbers separated by spaces, tabs or commas; one row per line; blank lines and lines
 * starting with '#' are skipped. A line with more or fewer than COLS numbers, or with
 * something that is not a number, is an error naming the line: rows are never re-cut across
 * lines.
 */
#ifndef GRAPHC_EXAMPLE_ROWS_H
#define GRAPHC_EXAMPLE_ROWS_H

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Reads all rows of COLS numbers from F into *OUT (malloc'ed, rows * COLS model_float_t)
 * and *ROWS.
 * Returns 0, or 1 after printing "PROG: line L: ..." to stderr (then *OUT is NULL). */
static int read_rows(FILE *f, int64_t cols, model_float_t **out, int64_t *rows, const char *prog) {
    char *line = NULL;
    size_t cap = 0;
    model_float_t *data = NULL;
    int64_t count = 0, room = 0, lineno = 0;
    *out = NULL;
    *rows = 0;
    for (;;) {
        size_t len = 0;
        int c = 0;
        for (;;) {                      /* one whole line, however long */
            if (len + 2 > cap) {
                char *grown;
                cap = cap ? 2 * cap : 4096;
                grown = (char *)realloc(line, cap);
                if (!grown) { fprintf(stderr, "%s: out of memory\n", prog); goto fail; }
                line = grown;
            }
            c = fgetc(f);
            if (c == EOF || c == '\n') break;
            line[len++] = (char)c;
        }
        line[len] = '\0';
        if (c == EOF && len == 0) break;
        lineno++;
        {
            char *p = line, *end;
            int64_t k = 0;
            while (*p == ' ' || *p == '\t' || *p == '\r') p++;
            if (*p == '\0' || *p == '#') continue;
            while (*p) {
                model_float_t v;
                errno = 0;  /* each type's own correctly rounded reading */
                v = sizeof v == sizeof(double) ? (model_float_t)strtod(p, &end) : (model_float_t)strtof(p, &end);
                if (end == p) {
                    fprintf(stderr, "%s: line %ld: not a number at column %ld: \"%.20s\"\n", prog,
                            (long)lineno, (long)(p - line) + 1, p);
                    goto fail;
                }
                if (k == cols) {
                    fprintf(stderr, "%s: line %ld: more than %ld numbers (a row is one line)\n",
                            prog, (long)lineno, (long)cols);
                    goto fail;
                }
                if (count == room) {
                    model_float_t *grown;
                    room = room ? 2 * room : 1024 * cols;
                    grown = (model_float_t *)realloc(data, (size_t)room * sizeof *data);
                    if (!grown) { fprintf(stderr, "%s: out of memory\n", prog); goto fail; }
                    data = grown;
                }
                data[count++] = v;
                k++;
                p = end;
                while (*p == ' ' || *p == '\t' || *p == ',' || *p == '\r') p++;
            }
            if (k != cols) {
                fprintf(stderr, "%s: line %ld: %ld numbers, expected %ld\n", prog, (long)lineno,
                        (long)k, (long)cols);
                goto fail;
            }
            (*rows)++;
        }
        if (c == EOF) break;
    }
    free(line);
    *out = data;
    return 0;
fail:
    free(line);
    free(data);
    *rows = 0;
    return 1;
}

#endif
