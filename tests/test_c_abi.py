"""The C ABI as a C program calls it, beyond the example programs (tests/test_aot.py): buffers
that overlap. Reference: the model's own predictions in Python, and the documented error code.

Cost: one small export and one C program (about 2 s).
"""

from __future__ import annotations

import os
import shutil
import subprocess

import numpy as np
import pytest

import graphc as gc

CC = shutil.which(os.environ.get("CC", "cc") or "cc")
pytestmark = pytest.mark.skipif(CC is None, reason="no C compiler (cc or $CC) on PATH")

# A C program that calls ab_infer with every pair of overlapping arrays and with a workspace
# that overlaps params; prints the return codes, whether the buffers were left as they were,
# then the outputs of a call on separate (adjacent: touching, not overlapping) buffers.
OVERLAP_C = r"""
#include "ab.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#define N 5
#define R (N * 8)
static float big[8 * R];   /* x, y0, y1, y2 side by side, and room to overlap them */
int main(void) {
    ab_ctx c;
    float x[R], saved[8 * R];
    float *ys[3];
    int i, k, rc, same;
    c.params = aligned_alloc(64, 4096); c.params_bytes = AB_PARAM_BYTES;
    c.state = NULL; c.state_bytes = 0;
    c.workspace_bytes = ab_workspace_size(N);
    c.workspace = aligned_alloc(64, (size_t)(c.workspace_bytes + 64) / 64 * 64);
    if (ab_init(&c) != AB_OK) return 1;
    for (i = 0; i < R; i++) x[i] = (float)(i % 11) * 0.25f - 1.25f;
    /* each output over the input, over another output, and half over the input */
    for (k = 0; k < 7; k++) {
        float *in = big, *o[3];
        memcpy(in, x, sizeof x);
        o[0] = big + R; o[1] = big + 2 * R; o[2] = big + 3 * R;
        if (k < 3) o[k] = in;                          /* out == in */
        else if (k < 5) o[k - 3] = o[k - 2];           /* two outputs alike */
        else o[k - 5] = in + R / 2 + 1;                /* a partial overlap */
        memcpy(saved, big, sizeof saved);
        rc = ab_infer(&c, N, in, R, o[0], R, o[1], R, o[2], R);
        same = memcmp(saved, big, sizeof saved) == 0;
        printf("alias %d rc %d unchanged %d\n", k, rc, same);
    }
    /* the workspace over params, over the input */
    {
        ab_ctx bad = c;
        bad.workspace = (char *)c.params;
        rc = ab_infer(&bad, N, x, R, big, R, big + R, R, big + 2 * R, R);
        printf("workspace_params rc %d\n", rc);
        bad = c;
        rc = ab_infer(&bad, N, (const float *)c.workspace, R, big, R, big + R, R, big + 2 * R, R);
        printf("input_in_workspace rc %d\n", rc);
        rc = ab_read_weights(&c, c.params, AB_WEIGHTS_FILE_BYTES);
        printf("read_weights_over_params rc %d\n", rc);
    }
    ys[0] = big + R; ys[1] = big + 2 * R; ys[2] = big + 3 * R;
    memcpy(big, x, sizeof x);
    rc = ab_infer(&c, N, big, R, ys[0], R, ys[1], R, ys[2], R);
    printf("adjacent rc %d\n", rc);
    for (k = 0; k < 3; k++)
        for (i = 0; i < R; i++) printf("%.9g\n", ys[k][i]);
    return 0;
}
"""


def test_overlapping_buffers_are_refused_and_adjacent_ones_run(tmp_path) -> None:
    """An output over the input (out == in), over another output, or half over the input, and
    a workspace over params: ERR_OVERLAP with nothing written. Before, the call ran: y0 = 2x
    was written over x before the dense layer and the softmax read it (silent wrong rows).
    Buffers that touch without overlapping give the model's predictions."""
    x = gc.input("x", ("N", 8))
    model = gc.compile([x * 2.0, gc.dense(x, 8, name="d"), gc.softmax(x)], name="ab", seed=2)
    res = model.export(str(tmp_path / "libab.so"))
    header = open(res.header).read()
    assert "#define AB_ERR_OVERLAP 15" in header
    assert (
        "int ab_infer(const ab_ctx *ctx, int64_t n, const float *x, int64_t x_len, float *y0"
        in header
    )
    (tmp_path / "t.c").write_text(OVERLAP_C)
    exe = str(tmp_path / "t")
    cmd = [CC, "-std=c11", "-O1", "-Wall", "-Wextra", "-Werror", f"-I{tmp_path}",
           str(tmp_path / "t.c"), f"-L{tmp_path}", "-lab", f"-Wl,-rpath,{tmp_path}", "-o", exe]  # fmt: skip
    r = subprocess.run(cmd, capture_output=True, text=True, check=False)
    assert r.returncode == 0, r.stderr
    r = subprocess.run([exe], capture_output=True, text=True, check=False, timeout=60)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[:7] == [f"alias {k} rc 15 unchanged 1" for k in range(7)]
    assert lines[7:11] == [
        "workspace_params rc 15",
        "input_in_workspace rc 15",
        "read_weights_over_params rc 15",
        "adjacent rc 0",
    ]
    xs = ((np.arange(40) % 11) * 0.25 - 1.25).astype(np.float32)  # exact in float32
    want = model.predict(xs.reshape(5, 8))
    got = np.array(lines[11:], np.float32).reshape(3, 5, 8)
    for k, name in enumerate(model.program.outputs):
        np.testing.assert_array_equal(got[k], want[name])
