"""The C ABI as a C program calls it, beyond the example programs (tests/test_aot.py): buffers
that overlap. Reference: the model's own predictions in Python, and the documented error code.

Cost: one small export and one C program (about 2 s).
"""

from __future__ import annotations

import os
import re
import subprocess

import numpy as np
import pytest
from c_build import CC, build_program

import graphc as gc

pytestmark = pytest.mark.skipif(CC is None, reason="no C compiler (cc or $CC) on PATH")
C11_FLAGS = ["-std=c11", "-O1", "-Wall", "-Wextra", "-Werror"]

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
    exe = build_program(tmp_path / "t.c", tmp_path, "ab", tmp_path / "t", C11_FLAGS)
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


def _compiles(header: str, extra: list[str] | None = None, src: str | None = None) -> str:
    """cc's complaints (empty when clean) about a C file that includes ``header``, C99 and
    C++11, -pedantic -Werror."""
    d = os.path.dirname(header)
    path = os.path.join(d, "uses_header.c")
    with open(path, "w") as f:
        f.write(src or f'#include "{os.path.basename(header)}"\nint main(void) {{ return 0; }}\n')
    errors = ""
    for lang in (["-x", "c", "-std=c99"], ["-x", "c++", "-std=c++11"]):
        cmd = [CC, *lang, "-pedantic", "-Wall", "-Wextra", "-Werror", *(extra or []), f"-I{d}",
               "-c", path, "-o", os.path.join(d, "uses_header.o")]  # fmt: skip
        r = subprocess.run(cmd, capture_output=True, text=True, check=False)
        errors += r.stderr if r.returncode else ""
    return errors


def test_argument_names_whose_macros_would_clash_are_escaped(tmp_path) -> None:
    """Inputs x and x_row: the header's X_ROW_ELEMS of x and X_ROW_ELEMS(n) of x_row were the
    same macro (the header did not compile). Now x_row is escaped (x_row_), and the library
    computes what predict does."""
    x, x_row = gc.input("x", ("N", 4)), gc.input("x_row", ("N", 4))
    model = gc.compile([x * 2.0 + x_row], name="clash")
    res = model.export(str(tmp_path / "libclash.so"))
    assert _compiles(res.header) == ""
    assert "const float *x, int64_t x_len, const float *x_row_," in open(res.header).read()
    lib = gc.load(res.library)
    a, b = np.ones((3, 4), np.float32), np.full((3, 4), 0.5, np.float32)
    np.testing.assert_array_equal(
        lib.predict({"x": a, "x_row": b}), model.predict({"x": a, "x_row": b})
    )


@pytest.mark.parametrize("name", ["gc", "Gc", "model"])
def test_model_names_that_are_the_generated_codes_own_prefixes(tmp_path, name) -> None:
    """A model named gc (any case) has the header macros GC_OK, GC_PARAM_BYTES ... that the
    library's wrapper source defines for itself: the link failed. A model named model has the
    generic names MODEL_OK, ... of GRAPHC_MODEL_ALIASES: the example programs, which define
    it, did not compile. Both work now (the library predicts as the model does)."""
    x = gc.input("x", ("N", 4))
    model = gc.compile([gc.dense(x, 3, "tanh", name="d")], name=name, seed=5)
    res = model.export(str(tmp_path / f"lib{name}.so"))
    assert _compiles(res.header, ["-DGRAPHC_MODEL_ALIASES"]) == ""
    xs = np.linspace(-2, 2, 12, dtype=np.float32).reshape(3, 4)
    np.testing.assert_array_equal(gc.load(res.library).predict(xs), model.predict(xs))


def test_model_names_must_be_ascii_c_identifiers() -> None:
    """Python identifiers allow 'ünï'; C symbols do not (LLVM's symbol lookup raised
    UnicodeEncodeError at compile): a GraphcError naming the rule."""
    x = gc.input("x", ("N", 4))
    with pytest.raises(gc.GraphcError, match="ASCII letters, digits and '_'"):
        gc.compile([x * 2.0], name="\u00fcn\u00ef")


@pytest.mark.parametrize("name", ["x", "R", "w", "f"])
def test_model_names_whose_success_code_is_a_unistd_macro_are_refused(name, tmp_path) -> None:
    """A model named x had the success code X_OK, which <unistd.h> (included by the library's
    own source after the header) redefines as 1: x_init returned 1 on success, a library
    that refused every call. The name is refused at export, naming the macro, before any file
    is written; the JIT model (no C macros) computes as any other."""
    x = gc.input("x", ("N", 4))
    model = gc.compile([x * 2.0], name=name)
    xs = np.arange(8, dtype=np.float32).reshape(2, 4)
    np.testing.assert_array_equal(model.predict(xs), xs * 2.0)
    with pytest.raises(gc.ArgumentError, match=rf"{name.upper()}_OK.*unistd.*nothing was"):
        model.export(str(tmp_path / f"lib{name}.so"))
    assert not os.listdir(tmp_path)


def test_c_names_from_any_graph_names_are_ascii_unique_and_not_cpp_keywords(tmp_path) -> None:
    """Params d.w (of dense d) and d_w both made PARAM_D_W_OFFSET (and their Adam state and
    gradients alike), two values for one macro; an input 'and' (a C++ alternative token) or
    'linux' (1 in GCC's GNU modes) was a parameter name; an input 'ñx' an identifier C89
    refuses. The header now compiles as C89, gnu99 and C++98 under -pedantic -Werror, each
    region's macro gives its own offset (graphc's metadata), and the library predicts as the
    model does."""
    x, a, lx, nx = (gc.input(v, ("N", 4)) for v in ("x", "and", "linux", "\u00f1x"))
    h = gc.dense(x, 4, name="d") * gc.param("d_w", (4,), init="ones") + a + lx + nx
    t = gc.input("t", ("N", 4))
    model = gc.compile([h], gc.mean_squared_error(h, t), gc.Adam(0.1), name="odd", seed=2)
    res = model.export(str(tmp_path / "libodd.so"))
    header = open(res.header).read()
    import re

    assert re.sub(r"/\*.*?\*/", "", header, flags=re.S).isascii()  # comments keep the names
    for std in (["-std=c89"], ["-std=gnu99"], ["-x", "c++", "-std=c++98"]):
        src = tmp_path / "t.c"
        src.write_text('#include "odd.h"\nint main(void) { return 0; }\n')
        cmd = [CC, *std, "-pedantic", "-Wall", "-Wextra", "-Werror", f"-I{tmp_path}", "-c",
               str(src), "-o", str(tmp_path / "t.o")]  # fmt: skip
        r = subprocess.run(cmd, capture_output=True, text=True, check=False)
        assert r.returncode == 0, f"{std}: {r.stderr}"
    defines = re.findall(r"#define (ODD_(?:PARAM|STATE|GRAD)_\w+)_OFFSET (\d+)", header)
    assert len({k for k, _ in defines}) == len(defines)
    offsets = {r["name"]: r["offset"] for r in res.plan.meta["params"]}
    assert ("ODD_PARAM_D_W", str(offsets["d.w"])) in defines
    assert ("ODD_PARAM_D_W_", str(offsets["d_w"])) in defines
    lib = gc.load(res.library)
    feeds = {v: np.full((2, 4), k + 1.0, np.float32) for k, v in enumerate(["x", "and", "linux"])}
    feeds["\u00f1x"] = np.linspace(-1, 1, 8, dtype=np.float32).reshape(2, 4)
    np.testing.assert_array_equal(lib.predict(feeds), model.predict(feeds))


# Thread 1 runs long infer calls on ctx; meanwhile the main thread calls infer on the same
# ctx (expected: BUSY, nothing written) and on a second ctx with its own workspace (OK).
# Prints: the codes seen, whether the refused calls left their outputs alone, then the rows
# of thread 1's last call and of a call after the join.
THREADS_C = r"""
#include "bz.h"
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#define N 4096
#define F 64
static bz_ctx c, c2;
static float *x, *y1, *y2, *y3;
static volatile int running, calls;
static void *worker(void *arg) {
    int k, *rc = (int *)arg;
    for (k = 0; k < 40 && !*rc; k++) {
        __atomic_store_n(&running, 1, __ATOMIC_SEQ_CST);
        *rc = bz_infer(&c, N, x, N * F, y1, N * F);
        __atomic_store_n(&running, 0, __ATOMIC_SEQ_CST);
        __atomic_add_fetch(&calls, 1, __ATOMIC_SEQ_CST);
    }
    return NULL;
}
static void make(bz_ctx *k) {
    k->params = aligned_alloc(64, ((size_t)BZ_PARAM_BYTES + 63) / 64 * 64);
    k->params_bytes = BZ_PARAM_BYTES;
    k->state = NULL; k->state_bytes = 0;
    k->workspace_bytes = bz_workspace_size(N);
    k->workspace = aligned_alloc(64, ((size_t)k->workspace_bytes + 63) / 64 * 64);
}
int main(void) {
    pthread_t t;
    int i, rc1 = 0, busy = 0, other_ok = 1, untouched = 1, rc;
    x = malloc(sizeof(float) * N * F); y1 = malloc(sizeof(float) * N * F);
    y2 = malloc(sizeof(float) * N * F); y3 = malloc(sizeof(float) * N * F);
    make(&c); make(&c2);
    if (bz_init(&c) != BZ_OK || bz_init(&c2) != BZ_OK) return 1;
    for (i = 0; i < N * F; i++) x[i] = (float)(i % 13) * 0.125f - 0.75f;
    pthread_create(&t, NULL, worker, &rc1);
    while (__atomic_load_n(&calls, __ATOMIC_SEQ_CST) < 40 && !busy) {
        if (!__atomic_load_n(&running, __ATOMIC_SEQ_CST)) continue;
        memset(y2, 0x7f, sizeof(float) * N * F);
        rc = bz_infer(&c, 1, x, N * F, y2, N * F);
        if (rc == BZ_ERR_BUSY) {
            busy++;
            for (i = 0; i < F; i++) untouched &= ((unsigned char *)y2)[i] == 0x7f;
            other_ok &= bz_infer(&c2, N, x, N * F, y3, N * F) == BZ_OK;
        } else if (rc != BZ_OK) return 2;
    }
    pthread_join(t, NULL);
    printf("worker %d busy %d untouched %d other %d\n", rc1, busy > 0, untouched, other_ok);
    printf("after %d\n", bz_infer(&c, N, x, N * F, y2, N * F));
    printf("strerror %s\n", bz_strerror(BZ_ERR_BUSY));
    printf("same %d %d\n", memcmp(y1, y2, sizeof(float) * N * F) == 0,
           !other_ok || memcmp(y1, y3, sizeof(float) * N * F) == 0);
    return 0;
}
"""


def test_one_ctx_called_from_two_threads_gets_err_busy(tmp_path) -> None:
    """One ctx called by two threads at once was documented as unsupported and not detected:
    both calls ran on one workspace (a corrupt arena, wrong rows). The library now enters a
    ctx for the length of each call (a table of running contexts): the second caller gets
    ERR_BUSY with its outputs untouched, a second ctx runs alongside, and the rows are the
    single-threaded ones (compared with a call after the join)."""
    x = gc.input("x", ("N", 64))
    h = gc.dense(gc.dense(x, 256, "tanh", name="a"), 64, "tanh", name="b")
    model = gc.compile([h], name="bz", seed=1)
    res = model.export(str(tmp_path / "libbz.so"))
    assert "#define BZ_ERR_BUSY 16" in open(res.header).read()
    (tmp_path / "t.c").write_text(THREADS_C)
    exe = build_program(tmp_path / "t.c", tmp_path, "bz", tmp_path / "t", [*C11_FLAGS, "-pthread"])
    r = subprocess.run([exe], capture_output=True, text=True, check=False, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    lines = r.stdout.splitlines()
    assert lines[0] == "worker 0 busy 1 untouched 1 other 1", lines
    assert lines[1] == "after 0"
    assert lines[2].startswith("strerror another call is running on this ctx")
    assert lines[3] == "same 1 1"


# Calls NAME_infer given no state (as examples/c/predict.c), given its state after NAME_init,
# and given a state buffer one byte short; prints the return codes and both calls' outputs.
STATELESS_C = r"""
#include "@H@"
#include <stdio.h>
#include <stdlib.h>
#define N 3
int main(void) {
    @P@_ctx c;
    float x[N * @U@_X_ROW_ELEMS], y0[N * @U@_@Y@_ROW_ELEMS], y1[N * @U@_@Y@_ROW_ELEMS];
    int i, rc;
    c.params = aligned_alloc(64, (size_t)(@U@_PARAM_BYTES + 64) / 64 * 64);
    c.params_bytes = @U@_PARAM_BYTES;
    c.state = NULL; c.state_bytes = 0;
    c.workspace_bytes = @P@_workspace_size(N);
    c.workspace = aligned_alloc(64, (size_t)(c.workspace_bytes + 64) / 64 * 64);
    if (@P@_init(&c) != @U@_OK) return 1;
    for (i = 0; i < N * @U@_X_ROW_ELEMS; i++) x[i] = (float)(i % 13) * 0.25f - 1.5f;
    rc = @P@_infer(&c, N, x, N * @U@_X_ROW_ELEMS, y0, N * @U@_@Y@_ROW_ELEMS);
    printf("no_state rc %d\n", rc);
    c.state = aligned_alloc(64, (size_t)(@U@_STATE_BYTES + 64) / 64 * 64);
    c.state_bytes = @U@_STATE_BYTES;
    if (@P@_init(&c) != @U@_OK) return 2;
    c.state_bytes = @U@_STATE_BYTES - 1;
    rc = @P@_infer(&c, N, x, N * @U@_X_ROW_ELEMS, y1, N * @U@_@Y@_ROW_ELEMS);
    printf("short_state rc %d\n", rc);
    c.state_bytes = @U@_STATE_BYTES;
    rc = @P@_infer(&c, N, x, N * @U@_X_ROW_ELEMS, y1, N * @U@_@Y@_ROW_ELEMS);
    printf("state rc %d\n", rc);
    for (i = 0; i < N * @U@_@Y@_ROW_ELEMS; i++) printf("%.9g %.9g\n", y0[i], y1[i]);
    return 0;
}
"""


def _onnx_pool_model():
    """An ONNX AveragePool with pads, count_include_pad=0: the importer's window masks and
    counts are constants, which live in the state region."""
    pytest.importorskip("onnx")
    from onnx import TensorProto, helper

    node = helper.make_node("AveragePool", ["x"], ["y"], kernel_shape=[3, 3], pads=[1, 1, 1, 1])
    graph = helper.make_graph(
        [node],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 2, 4, 5])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
    )
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 9
    return gc.from_onnx(m, name="pooled").compile()


@pytest.mark.parametrize("kind", ["batch_norm", "onnx_constants"])
def test_infer_given_no_state_reads_the_exported_state(tmp_path, kind) -> None:
    """The header lets an inference-only caller leave ctx.state NULL (examples/c/predict.c
    does). infer reads state when the model has batch_norm (its running statistics) or was
    imported from ONNX (the importer's constants: pooling masks and counts, recurrent masks,
    quantization tables): it then read through the NULL pointer and crashed (SIGSEGV). Now
    it reads the library's image of the state (what init writes into a given state): equal
    bit for bit to predict and to the call given state; a given state one byte short is
    ERR_BUFFER (before, infer did not check a state it read)."""
    if kind == "batch_norm":
        x = gc.input("x", ("N", 6))
        out = gc.batch_norm(gc.dense(x, 4, name="d"), name="bn")
        model = gc.compile([out], name="normed", seed=3)
        model.state["bn.running_mean"][:] = [0.5, -1.0, 0.25, 2.0]  # trained-looking values
        model.state["bn.running_var"][:] = [2.0, 0.5, 1.5, 4.0]
        name, shape = "normed", (6,)
    else:
        model = _onnx_pool_model()
        name, shape = "pooled", (2, 4, 5)
    res = model.export(str(tmp_path / f"lib{name}.so"), entries="infer")
    header = open(res.header).read()
    y = re.search(r"float \*(\w+), int64_t \w+_len\);", header).group(1)
    src = STATELESS_C.replace("@H@", os.path.basename(res.header)).replace("@P@", name)
    (tmp_path / "s.c").write_text(src.replace("@U@", name.upper()).replace("@Y@", y.upper()))
    exe = build_program(tmp_path / "s.c", tmp_path, name, tmp_path / "s", C11_FLAGS)
    r = subprocess.run([exe], capture_output=True, text=True, check=False, timeout=60)
    assert r.returncode == 0, f"exit {r.returncode}: {r.stderr}"
    lines = r.stdout.splitlines()
    assert lines[:3] == ["no_state rc 0", "short_state rc 3", "state rc 0"], lines[:3]
    got = np.array([v.split() for v in lines[3:]], np.float32)
    xs = ((np.arange(3 * int(np.prod(shape))) % 13) * 0.25 - 1.5).astype(np.float32)
    want = np.asarray(model.predict(xs.reshape(3, *shape))).ravel()
    np.testing.assert_array_equal(got[:, 0], want)
    np.testing.assert_array_equal(got[:, 1], want)
