/* predict: run a graphc library's inference on rows read from stdin.
 *
 * Reads rows from stdin, one per line, MODEL_X_ROW_ELEMS numbers each (separated by spaces,
 * tabs or commas; see rows.h: a line of another length is an error naming the line); prints one
 * line per row with the model's outputs (to their precision: 9 digits, 17 for a float64 model). With an argument, loads the weights from that file
 * first (libraries built with --weights file). `make rows` writes digits_rows.txt.
 *
 *     graphc compile ../models.py:digits -o libdigits.so
 *     cc -std=c99 -DMODEL_HEADER='"digits.h"' predict.c -L. -ldigits \
 *        -Wl,-rpath,'$ORIGIN' -o predict
 *     ./predict < digits_rows.txt
 */
#define GRAPHC_MODEL_ALIASES
#include MODEL_HEADER

#include <stdio.h>
#include <stdlib.h>

#include "rows.h"

static int fail(const char *what, int rc) {
    fprintf(stderr, "predict: %s: %s\n", what, model_strerror(rc));
    return 1;
}

int main(int argc, char **argv) {
    model_ctx ctx;
    model_float_t *x = NULL, *y = NULL;
    int digits = sizeof(model_float_t) == sizeof(double) ? 17 : 9;
    int64_t n, i, j;
    int rc, status = 1;

    if (read_rows(stdin, MODEL_X_ROW_ELEMS, &x, &n, "predict")) return 1;
    if (n < 1) {
        fprintf(stderr, "predict: no rows on stdin (%ld numbers per line)\n",
                (long)MODEL_X_ROW_ELEMS);
        free(x);
        return 1;
    }
    ctx.params_bytes = MODEL_PARAM_BYTES;
    ctx.params = malloc((size_t)ctx.params_bytes);
    ctx.state = NULL;                      /* inference only */
    ctx.state_bytes = 0;
    ctx.workspace_bytes = model_workspace_size(n);
    ctx.workspace = malloc((size_t)ctx.workspace_bytes);
    y = (model_float_t *)malloc((size_t)(n * MODEL_Y_ROW_ELEMS) * sizeof *y);
    if (!ctx.params || !ctx.workspace || !y) { fprintf(stderr, "predict: out of memory\n"); goto done; }
    if (getenv("MODEL_THREADS")) model_set_num_threads(atoi(getenv("MODEL_THREADS")));
    if ((rc = model_init(&ctx)) != MODEL_OK) { status = fail("init", rc); goto done; }
    if (argc > 1 && (rc = model_load_weights(&ctx, argv[1])) != MODEL_OK) {
        status = fail(argv[1], rc);
        goto done;
    }
    rc = model_infer(&ctx, n, x, n * MODEL_X_ROW_ELEMS, y, n * MODEL_Y_ROW_ELEMS);
    if (rc != MODEL_OK) { status = fail("infer", rc); goto done; }
    for (i = 0; i < n; i++) {
        for (j = 0; j < MODEL_Y_ROW_ELEMS; j++)
            printf(j ? " %.*g" : "%.*g", digits, (double)y[i * MODEL_Y_ROW_ELEMS + j]);
        printf("\n");
    }
    status = 0;
done:
    free(x);
    free(y);
    free(ctx.params);
    free(ctx.workspace);
    return status;
}
