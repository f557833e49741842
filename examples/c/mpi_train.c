/* mpi_train: data-parallel training of a graphc library's network with MPI, in C.
 *
 * Every process (rank) reads the same rows from ROWS (a text file: MODEL_X_ROW_ELEMS features
 * then MODEL_LABEL_ROW_ELEMS labels per row) and trains EPOCHS passes over them in global
 * mini-batches of BATCH consecutive rows (the last one partial; no shuffling). Each global
 * batch of B rows is cut into one nearly equal consecutive slice per rank (B / size rows, the
 * first B % size ranks one more); a rank holding b rows, the first of them row r0 of the batch:
 *
 *     model_train_grads(&ctx, b, x, .., labels, .., loss_scale = b / B, row0 = r0, &loss)
 *         writes the gradients of (b / B) * (its rows' mean loss) to the first
 *         MODEL_GRAD_BYTES of ctx.workspace (laid out like the parameters)
 *     MPI_Allreduce(MPI_IN_PLACE, ctx.workspace, MODEL_GRAD_BYTES / sizeof(model_float_t),
 *                   MPI_FLOAT or MPI_DOUBLE, MPI_SUM)
 *         now the gradient of the mean loss over the global batch, on every rank
 *     model_apply_update(&ctx, lr)
 *         the optimizer step, the same on every rank
 *
 * which is model_train_step on the whole batch in one process, up to the order of the sums.
 * Rank 0 prints "step K loss L" (the global batch's mean loss) after every step. The model's
 * floating type, model_float_t (float, or double for a float64 model), is that of x, the
 * rows read, the gradients summed, lr and the loss (printed to its precision: %.9g, %.17g).
 *
 *     graphc compile MODEL -o libNAME.so --entry infer,train_step,train_grads,apply_update
 *     mpicc -std=c99 -DMODEL_HEADER='"NAME.h"' mpi_train.c -L. -lNAME -Wl,-rpath,'$ORIGIN' -o mpi_train
 *     mpirun -np 2 ./mpi_train ROWS [EPOCHS=1] [BATCH=64] [LR=0.01]
 */
#define GRAPHC_MODEL_ALIASES
#include MODEL_HEADER

#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define ROW (MODEL_X_ROW_ELEMS + MODEL_LABEL_ROW_ELEMS)
/* The MPI type of model_float_t (the gradients), and the digits that print it exactly. */
#define MPI_MODEL_FLOAT (sizeof(model_float_t) == sizeof(double) ? MPI_DOUBLE : MPI_FLOAT)
#define LOSS_DIGITS (sizeof(model_float_t) == sizeof(double) ? 17 : 9)

/* Any failure ends every rank: the others would wait forever in MPI_Allreduce. */
static void fail(int rank, const char *what, int rc) {
    fprintf(stderr, "mpi_train: rank %d: %s%s%s\n", rank, what, rc ? ": " : "",
            rc ? model_strerror(rc) : "");
    MPI_Abort(MPI_COMM_WORLD, 1);
}

int main(int argc, char **argv) {
    model_ctx ctx;
    model_float_t *data = NULL, *xb, lr;
    double v;
    model_label_t *lb;
    int64_t cap = 0, count = 0, rows, lo, step = 0, i, j;
    long epochs, batch, e;
    int rank, size, rc;
    FILE *f;

    MPI_Init(&argc, &argv);
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    if (argc < 2) fail(rank, "usage: mpi_train ROWS [EPOCHS] [BATCH] [LR]", 0);
    epochs = argc > 2 ? atol(argv[2]) : 1;
    batch = argc > 3 ? atol(argv[3]) : 64;
    lr = (model_float_t)(argc > 4 ? atof(argv[4]) : 0.01);
    if ((MODEL_GRAD_BYTES % (int64_t)sizeof(model_float_t)) != 0)
        fail(rank, "gradients are not of the model's floating type", 0);
    if (!(f = fopen(argv[1], "r"))) fail(rank, "cannot open the rows file", 0);
    while (fscanf(f, "%lf", &v) == 1) {
        if (count == cap) {
            cap = cap ? 2 * cap : 4096;
            if (!(data = (model_float_t *)realloc(data, (size_t)cap * sizeof *data))) fail(rank, "out of memory", 0);
        }
        data[count++] = (model_float_t)v;
    }
    fclose(f);
    rows = count / ROW;
    if (rows < 1 || count % ROW || epochs < 1 || batch < 1) fail(rank, "need whole rows, EPOCHS >= 1, BATCH >= 1", 0);
    if (batch > rows) batch = (long)rows;
    cap = (batch + size - 1) / size; /* the most rows one rank gets */
    ctx.params_bytes = MODEL_PARAM_BYTES;
    ctx.state_bytes = MODEL_STATE_BYTES;
    ctx.workspace_bytes = model_workspace_size(cap);
    ctx.params = malloc((size_t)ctx.params_bytes);
    ctx.state = malloc((size_t)ctx.state_bytes);
    ctx.workspace = calloc(1, (size_t)ctx.workspace_bytes); /* zero padding between gradients */
    if (!ctx.params || !ctx.state || !ctx.workspace) fail(rank, "out of memory", 0);
    xb = (model_float_t *)malloc((size_t)(cap * MODEL_X_ROW_ELEMS) * sizeof *xb);
    lb = (model_label_t *)malloc((size_t)(cap * MODEL_LABEL_ROW_ELEMS) * sizeof *lb);
    if (!xb || !lb) fail(rank, "out of memory", 0);
    if ((rc = model_init(&ctx)) != MODEL_OK) fail(rank, "init", rc);
    /* Every rank starts from rank 0's parameters and optimizer state. */
    MPI_Bcast(ctx.params, (int)MODEL_PARAM_BYTES, MPI_BYTE, 0, MPI_COMM_WORLD);
    MPI_Bcast(ctx.state, (int)MODEL_STATE_BYTES, MPI_BYTE, 0, MPI_COMM_WORLD);
    for (e = 0; e < epochs; e++) {
        for (lo = 0; lo < rows; lo += batch) {
            int64_t big = rows - lo < batch ? rows - lo : batch;
            int64_t q = big / size, r = big % size;
            int64_t first = rank * q + (rank < r ? rank : r), b = q + (rank < r ? 1 : 0);
            model_float_t loss = 0;
            double mine, total = 0.0;
            for (i = 0; i < b; i++) {
                const model_float_t *row = data + (lo + first + i) * ROW;
                for (j = 0; j < MODEL_X_ROW_ELEMS; j++) xb[i * MODEL_X_ROW_ELEMS + j] = row[j];
                for (j = 0; j < MODEL_LABEL_ROW_ELEMS; j++)
                    lb[i * MODEL_LABEL_ROW_ELEMS + j] = (model_label_t)row[MODEL_X_ROW_ELEMS + j];
            }
            if (b > 0) {
                rc = model_train_grads(&ctx, b, xb, b * MODEL_X_ROW_ELEMS, lb, b * MODEL_LABEL_ROW_ELEMS,
                                       (model_float_t)((double)b / (double)big), first, &loss);
                if (rc != MODEL_OK) fail(rank, "train_grads", rc);
            } else {
                memset(ctx.workspace, 0, (size_t)MODEL_GRAD_BYTES); /* nothing to add */
            }
            MPI_Allreduce(MPI_IN_PLACE, ctx.workspace, (int)(MODEL_GRAD_BYTES / (int64_t)sizeof(model_float_t)),
                          MPI_MODEL_FLOAT, MPI_SUM, MPI_COMM_WORLD);
            if ((rc = model_apply_update(&ctx, lr)) != MODEL_OK) fail(rank, "apply_update", rc);
            mine = (double)loss * (double)b / (double)big;
            MPI_Reduce(&mine, &total, 1, MPI_DOUBLE, MPI_SUM, 0, MPI_COMM_WORLD);
            if (rank == 0) printf("step %lld loss %.*g\n", (long long)++step, (int)LOSS_DIGITS, total);
        }
    }
    free(data);
    free(xb);
    free(lb);
    free(ctx.params);
    free(ctx.state);
    free(ctx.workspace);
    MPI_Finalize();
    return 0;
}
