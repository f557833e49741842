/* train: keep training a graphc library's network in C, optionally saving the weights.
 *
 * Reads rows from stdin, one per line: MODEL_X_ROW_ELEMS features then MODEL_LABEL_ROW_ELEMS
 * labels (see rows.h; a line of another length is an error naming the line; integer labels
 * must be class ids 0 .. MODEL_Y_ROW_ELEMS-1, checked here). `make rows`
 * writes digits_train.txt.
 * Runs STEPS optimizer steps on mini-batches of BATCH rows taken in order (wrapping around),
 * printing "step K loss L" after each (9 digits, 17 for a float64 model: model_float_t double), and with OUT given writes the trained weights there as a
 * weights file (load it with NAME_load_weights, or graphc.load(...).load_weights).
 *
 *     ./train [STEPS=100] [BATCH=64] [LR=0.01] [OUT] < digits_train.txt
 */
#define GRAPHC_MODEL_ALIASES
#include MODEL_HEADER

#include <stdio.h>
#include <stdlib.h>

#include "rows.h"

#define ROW (MODEL_X_ROW_ELEMS + MODEL_LABEL_ROW_ELEMS)

int main(int argc, char **argv) {
    model_ctx ctx;
    model_float_t *data = NULL, *xb = NULL;
    model_label_t *lb = NULL;
    unsigned char *image = NULL;
    int64_t rows, i, j, step;
    long steps = argc > 1 ? atol(argv[1]) : 100, batch = argc > 2 ? atol(argv[2]) : 64;
    model_float_t lr = (model_float_t)(argc > 3 ? atof(argv[3]) : 0.01), loss = 0;
    int digits = sizeof(model_float_t) == sizeof(double) ? 17 : 9;
    int rc, status = 1;

    if (read_rows(stdin, ROW, &data, &rows, "train")) return 1;
    if (rows < 1 || steps < 1 || batch < 1) {
        fprintf(stderr, "train: need rows of %ld numbers and STEPS, BATCH >= 1\n", (long)ROW);
        free(data);
        return 1;
    }
#if MODEL_LABEL_IS_INT
    /* class ids: whole numbers 0 .. classes-1, named by row (the library returns ERR_LABEL for
       an id out of range, but a 3.5 read from text would reach it as 3) */
    for (i = 0; i < rows; i++)
        for (j = 0; j < MODEL_LABEL_ROW_ELEMS; j++) {
            double v = (double)data[i * ROW + MODEL_X_ROW_ELEMS + j];
            if (!(v >= 0.0 && v < (double)MODEL_Y_ROW_ELEMS) || v != (double)(int32_t)v) {
                fprintf(stderr, "train: row %ld: label %g is not a class id 0..%ld\n",
                        (long)i + 1, v, (long)MODEL_Y_ROW_ELEMS - 1);
                free(data);
                return 1;
            }
        }
#endif
    if (batch > rows) batch = (long)rows;
    ctx.params_bytes = MODEL_PARAM_BYTES;
    ctx.params = malloc((size_t)ctx.params_bytes);
    ctx.state_bytes = MODEL_STATE_BYTES;
    ctx.state = malloc((size_t)ctx.state_bytes);
    ctx.workspace_bytes = model_workspace_size(batch);
    ctx.workspace = malloc((size_t)ctx.workspace_bytes);
    xb = (model_float_t *)malloc((size_t)(batch * MODEL_X_ROW_ELEMS) * sizeof *xb);
    lb = (model_label_t *)malloc((size_t)(batch * MODEL_LABEL_ROW_ELEMS) * sizeof *lb);
    image = (unsigned char *)malloc((size_t)MODEL_WEIGHTS_FILE_BYTES);
    if (!ctx.params || !ctx.state || !ctx.workspace || !xb || !lb || !image) {
        fprintf(stderr, "train: out of memory\n");
        goto done;
    }
    if (getenv("MODEL_THREADS")) model_set_num_threads(atoi(getenv("MODEL_THREADS")));
    if ((rc = model_init(&ctx)) != MODEL_OK) {
        fprintf(stderr, "train: init: %s\n", model_strerror(rc));
        goto done;
    }
    for (step = 0; step < steps; step++) {
        for (i = 0; i < batch; i++) {  /* rows step*batch ... wrapping around the data */
            const model_float_t *r = data + ((step * batch + i) % rows) * ROW;
            for (j = 0; j < MODEL_X_ROW_ELEMS; j++) xb[i * MODEL_X_ROW_ELEMS + j] = r[j];
            for (j = 0; j < MODEL_LABEL_ROW_ELEMS; j++)
                lb[i * MODEL_LABEL_ROW_ELEMS + j] = (model_label_t)r[MODEL_X_ROW_ELEMS + j];
        }
        rc = model_train_step(&ctx, batch, xb, batch * MODEL_X_ROW_ELEMS, lb,
                              batch * MODEL_LABEL_ROW_ELEMS, lr, &loss);
        if (rc != MODEL_OK) {
            fprintf(stderr, "train: step %ld: %s\n", (long)step, model_strerror(rc));
            goto done;
        }
        printf("step %ld loss %.*g\n", (long)step, digits, (double)loss);
    }
    if (argc > 4) {
        FILE *f;
        if ((rc = model_write_weights(&ctx, image, MODEL_WEIGHTS_FILE_BYTES)) != MODEL_OK) {
            fprintf(stderr, "train: %s\n", model_strerror(rc));
            goto done;
        }
        f = fopen(argv[4], "wb");
        if (!f || fwrite(image, 1, (size_t)MODEL_WEIGHTS_FILE_BYTES, f) != (size_t)MODEL_WEIGHTS_FILE_BYTES) {
            fprintf(stderr, "train: cannot write %s\n", argv[4]);
            if (f) fclose(f);
            goto done;
        }
        fclose(f);
    }
    status = 0;
done:
    free(data);
    free(xb);
    free(lb);
    free(image);
    free(ctx.params);
    free(ctx.state);
    free(ctx.workspace);
    return status;
}
