"""An exported library of an ONNX import whose inputs or outputs hold the batch N at an axis
k > 0 (torch's sequence-first nn.LSTM / nn.GRU: x [T, N, C], h0 / c0 and h_n / c_n
[layers * dirs, N, H]; Model.input_batch_axes / output_batch_axes).

The library takes and returns those buffers in the file's layout, as predict does: its C
wrappers copy them from / to the kernels' N-first arrays in the workspace (codegen/aot.py's
_c_moves, wrapper.c's gc_move_batch). gc.load's predict equals the Model's exactly and ONNX
Runtime 1.32 within 1e-5 relative; a C program built with the header, run without Python,
gets ONNX Runtime's numbers; the header gives each buffer's layout (comment, BATCH_AXIS and
DIMk macros by the caller's axes) and so does the library's description; train_step takes a
moved input as the Model does; a refused index names the row N (not the file's first axis).
"""

from __future__ import annotations

import ctypes
import os
import subprocess

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
from c_build import CC, build_program
from onnx import TensorProto, helper, numpy_helper
from test_onnx_input_batch_axis import DATA, _feeds, _moved_inputs, _ort

import graphc as gc
from graphc.cli import main as cli_main
from graphc.ir.errors import ArgumentError


def _as_list(got):
    return list(got.values()) if isinstance(got, dict) else [got]


def _check_library(model, src, tmp_path, rng, name="lib"):
    """Export ``model``; gc.load's predict (new arrays and out=) equals the Model's exactly
    and ONNX Runtime on ``src`` within 1e-5, at batches 1 and 3. Returns the library."""
    lib = gc.load(model.export(str(tmp_path / f"lib{name}.so")).library)
    for n in (1, 3):
        feeds = _feeds(src, n, rng)
        arg = feeds if len(feeds) > 1 else next(iter(feeds.values()))
        want = _ort(src, feeds)
        mine, theirs = _as_list(model.predict(arg)), _as_list(lib.predict(arg))
        assert len(mine) == len(theirs) == len(want)
        for a, b, w in zip(mine, theirs, want):
            assert a.shape == b.shape == w.shape and a.dtype == b.dtype == w.dtype
            np.testing.assert_array_equal(b, a)
            np.testing.assert_allclose(b, w, rtol=1e-5, atol=1e-6)
        out = (
            {k: np.full_like(v, 7) for k, v in model.predict(arg).items()}
            if len(want) > 1
            else None
        )
        if out is not None:
            lib.predict(arg, out=out)
            for a, b in zip(mine, out.values()):
                np.testing.assert_array_equal(b, a)
    return lib


@pytest.mark.parametrize("name", ["rnn_ts_lstmsf_14", "rnn_dyn_grusf_18", "rnn_ts_lstmstate_14"])
def test_torch_rnn_files_export_in_their_layout(name, tmp_path) -> None:
    """Sequence-first LSTM (x [T, N, 3], h0 / c0 [4, N, 4] in, y [5, N, 8], h_n / c_n out),
    GRU (x [T, N, 3] in, y and h_n out), and a batch-first LSTM returning h_n / c_n [4, N, 4]
    (outputs moved only)."""
    path = os.path.join(DATA, f"{name}.onnx")
    model = gc.from_onnx(path, dims={"T": 5} if name == "rnn_ts_lstmsf_14" else None).compile()
    lib = _check_library(model, path, tmp_path, np.random.default_rng(2))
    e = lib.meta["entries"]["infer"]
    moved = {p["name"]: p.get("batch_axis", 0) for p in e["inputs"] + e["outputs"]}
    want = {**model.input_batch_axes, **model.output_batch_axes}
    assert want and {k: v for k, v in moved.items() if v} == want
    assert not e["rows_independent"]  # a block of rows is no run of a moved buffer


def _hand_made():
    """test_onnx_input_batch_axis's x [3, N] and s [4, 5, N] in (N at axes 1 and 2), y = x^T
    @ w [N, 4] and r [4, 5, N] out, and two more outputs: z = Transpose(y) [4, N] and k
    [5, N], the int64 ArgMax over r's first axis (a declared int64 output: converted after
    the move)."""
    m = _moved_inputs()
    m.graph.node.extend(
        [
            helper.make_node("Transpose", ["y"], ["z"], perm=[1, 0]),
            helper.make_node("Transpose", ["r"], ["rn"], perm=[2, 1, 0]),
            helper.make_node("ArgMax", ["rn"], ["am"], axis=2, keepdims=0),
            helper.make_node("Transpose", ["am"], ["k"], perm=[1, 0]),
        ]
    )
    m.graph.output.extend(
        [
            helper.make_tensor_value_info("z", TensorProto.FLOAT, [4, "N"]),
            helper.make_tensor_value_info("k", TensorProto.INT64, [5, "N"]),
        ]
    )
    return m


def test_hand_made_axes_1_and_2_and_an_int64_output(tmp_path) -> None:
    m = _hand_made()
    model = gc.from_onnx(m).compile(name="moved")
    assert model.input_batch_axes == {"x": 1, "s": 2}
    assert model.output_batch_axes == {"r": 2, "z": 1, "k": 1}
    lib = _check_library(model, m, tmp_path, np.random.default_rng(1), "moved")
    assert "(x: f32[3,N], s: f32[4,5,N]) -> y: f32[N,4], r: f32[4,5,N]" in repr(lib)
    h = (tmp_path / "moved.h").read_text()
    assert "/* input s (s): float f32[4,5,N]: the batch N at axis 2, as in the ONNX file" in h
    for macro in ("S_BATCH_AXIS 2", "S_DIM0 4", "S_DIM1 5", "R_BATCH_AXIS 2", "K_BATCH_AXIS 1"):
        assert f"#define MOVED_{macro}" in h
    assert "MOVED_S_DIM2" not in h and "MOVED_Y_BATCH_AXIS" not in h
    assert "/* output k (k): int64_t i64[5,N] (computed as f32 whole numbers" in h
    ports = {p["name"]: p for p in lib.meta["entries"]["infer"]["inputs"]}
    assert ports["s"]["shape"] == [4, 5, "N"] and ports["s"]["batch_axis"] == 2
    # no rows: empty arrays in the file's layout, as the Model returns them
    empty = lib.predict({"x": np.zeros((3, 0), np.float32), "s": np.zeros((4, 5, 0), np.float32)})
    assert empty["r"].shape == (4, 5, 0) and empty["k"].shape == (5, 0)
    with pytest.raises(ArgumentError, match=r"input 's' expects f32\[4,5,N\]"):
        lib.predict({"x": np.zeros((3, 2), np.float32), "s": np.zeros((2, 4, 5), np.float32)})


def test_command_line_compile_keeps_the_files_layouts_and_types(tmp_path, capsys) -> None:
    """graphc compile FILE.onnx built its model from the import's outputs alone, losing what
    from_onnx's compile sets besides them: its library took and returned x [3, N], r [4, 5,
    N], ... N first and k as float, and a Shape output was left out without a word. Now its
    library equals from_onnx's model's predict, and the Shape output is refused as
    Model.export refuses it."""
    m = _hand_made()
    path = str(tmp_path / "moved.onnx")
    onnx.save(m, path)
    assert cli_main(["compile", path, "-o", str(tmp_path / "libmoved.so")]) == 0
    h = (tmp_path / "moved.h").read_text()
    assert "/* output k (k): int64_t i64[5,N] (computed as f32" in h
    assert "the kernels' f32[N,5] in the workspace" in h
    lib = gc.load(str(tmp_path / "libmoved.so"))
    feeds = _feeds(m, 3, np.random.default_rng(6))
    want = gc.from_onnx(m).compile().predict(feeds)
    got = lib.predict(feeds)
    for k, w in want.items():
        assert got[k].dtype == w.dtype and got[k].shape == w.shape
        np.testing.assert_array_equal(got[k], w)
    m.graph.node.append(helper.make_node("Shape", ["y"], ["sh"]))
    m.graph.output.append(helper.make_tensor_value_info("sh", TensorProto.INT64, [2]))
    onnx.save(m, str(tmp_path / "shaped.onnx"))
    lib = str(tmp_path / "libshaped.so")
    assert cli_main(["compile", str(tmp_path / "shaped.onnx"), "-o", lib]) != 0
    assert "the outputs ['sh'] are known at import" in capsys.readouterr().err
    assert not os.path.exists(lib)


def test_train_step_takes_a_moved_input(tmp_path) -> None:
    """x [3, N] through y = x^T @ w, mean squared error against t [N, 4]: the library's
    train_step gives the Model's loss and parameters exactly, step after step."""
    imp = gc.from_onnx(_hand_made(), outputs=["y"])
    t = gc.input("t", ("N", 4))
    model = imp.compile(gc.mean_squared_error(imp.outputs[0], t), gc.SGD(0.05), name="fitx")
    lib = gc.load(model.export(str(tmp_path / "libfitx.so")).library)
    rng = np.random.default_rng(0)
    for n in (5, 2):
        x = rng.standard_normal((3, n)).astype(np.float32)
        tt = rng.standard_normal((n, 4)).astype(np.float32)
        assert lib.train_step({"x": x, "t": tt}) == model.train_step({"x": x}, {"t": tt})
        for k, v in model.get_weights().items():
            np.testing.assert_array_equal(lib.get_weights()[k], v)


def test_a_refused_index_names_the_batch_row(tmp_path) -> None:
    """ids [5, N] (sequence-first token ids) into a [10, 3] table: the library refuses id 10
    at position (t 3, row 1) naming row 1 (the N index), as the Model's check does."""
    table = np.random.default_rng(4).standard_normal((10, 3)).astype(np.float32)
    g = helper.make_graph(
        [helper.make_node("Gather", ["table", "ids"], ["e"])],
        "emb",
        [helper.make_tensor_value_info("ids", TensorProto.INT64, [5, "N"])],
        [helper.make_tensor_value_info("e", TensorProto.FLOAT, [5, "N", 3])],
        [numpy_helper.from_array(table, "table")],
    )
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    model = gc.from_onnx(m).compile(name="emb")
    lib = gc.load(model.export(str(tmp_path / "libemb.so")).library)
    ids = np.random.default_rng(5).integers(-10, 10, (5, 3))
    np.testing.assert_array_equal(lib.predict(ids), _ort(m, {"ids": ids})[0])
    ids[3, 1] = 10
    with pytest.raises(ArgumentError, match=r"row 1\b") as mine:
        model.predict(ids)
    with pytest.raises(ArgumentError, match=r"emb_infer: .*row 1\b.*10"):
        lib.predict(ids)
    assert "row 1" in str(mine.value)
    last_error = lib._lib["emb_last_error_abi2"]  # the C wrapper's own message
    last_error.restype = ctypes.c_char_p
    assert b"'ids': row 1 holds 10," in last_error()


C_PROGRAM = r"""
#include <stdio.h>
#include <stdlib.h>
#include "lstmsf.h"

/* Reads n, then x, h0, c0 as float32 in the ONNX file's layout from argv[1]; prints y, h, c. */
int main(int argc, char **argv) {
    FILE *f = argc > 1 ? fopen(argv[1], "rb") : NULL;
    int64_t n = 0;
    if (!f || fread(&n, sizeof n, 1, f) != 1) return 2;
    int64_t nx = LSTMSF_X_ELEMS(n), nh0 = LSTMSF_H0_ELEMS(n), nc0 = LSTMSF_C0_ELEMS(n);
    int64_t ny = LSTMSF_Y_ELEMS(n), nh = LSTMSF_H_ELEMS(n), nc = LSTMSF_C_ELEMS(n);
    float *x = malloc(sizeof(float) * nx), *h0 = malloc(sizeof(float) * nh0);
    float *c0 = malloc(sizeof(float) * nc0), *y = malloc(sizeof(float) * ny);
    float *h = malloc(sizeof(float) * nh), *c = malloc(sizeof(float) * nc);
    if (fread(x, sizeof(float), nx, f) != (size_t)nx || fread(h0, sizeof(float), nh0, f) != (size_t)nh0 ||
        fread(c0, sizeof(float), nc0, f) != (size_t)nc0) return 3;
    fclose(f);
    if (LSTMSF_X_BATCH_AXIS != 1 || LSTMSF_X_DIM0 != 5 || LSTMSF_H_DIM0 != 4) return 4;
    lstmsf_ctx ctx = {0};
    ctx.params = aligned_alloc(64, (LSTMSF_PARAM_BYTES + 63) / 64 * 64);
    ctx.params_bytes = LSTMSF_PARAM_BYTES;
    ctx.workspace_bytes = lstmsf_workspace_size(n);
    ctx.workspace = aligned_alloc(64, (ctx.workspace_bytes + 63) / 64 * 64);
    int rc = lstmsf_init(&ctx);
    if (!rc) rc = lstmsf_infer(&ctx, n, x, nx, h0, nh0, c0, nc0, y, ny, h, nh, c, nc);
    if (rc) { printf("rc %d %s\n", rc, lstmsf_last_error()); return 1; }
    for (int64_t i = 0; i < ny; i++) printf("%.9g\n", y[i]);
    for (int64_t i = 0; i < nh; i++) printf("%.9g\n", h[i]);
    for (int64_t i = 0; i < nc; i++) printf("%.9g\n", c[i]);
    return 0;
}
"""


@pytest.mark.skipif(CC is None, reason="no C compiler")
def test_c_program_gets_onnxruntimes_numbers(tmp_path) -> None:
    """A C program built with the header (x, h0, c0 [., N, .] in, y, h, c out, no
    transposes of its own) prints ONNX Runtime's outputs, flattened in the file's layout."""
    path = os.path.join(DATA, "rnn_ts_lstmsf_14.onnx")
    model = gc.from_onnx(path, dims={"T": 5}).compile(name="lstmsf")
    model.export(str(tmp_path / "liblstmsf.so"))
    (tmp_path / "t.c").write_text(C_PROGRAM)
    exe = build_program(
        tmp_path / "t.c", tmp_path, "lstmsf", tmp_path / "t", ["-std=c11", "-Wall", "-Werror"]
    )
    n = 3
    feeds = _feeds(path, n, np.random.default_rng(7))
    with open(tmp_path / "in.bin", "wb") as f:
        f.write(np.int64(n).tobytes())
        for k in ("x", "h0", "c0"):
            f.write(feeds[k].tobytes())
    r = subprocess.run([exe, str(tmp_path / "in.bin")], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    got = np.array([float(v) for v in r.stdout.split()], np.float32)
    want = np.concatenate([a.ravel() for a in _ort(path, feeds)])
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
