"""An exported library of an ONNX import returns its int64 / int32 outputs (ArgMax's label, a
Cast to int32) as int64_t / int32_t, as predict returns them and ONNX Runtime computes them;
float outputs keep their float ABI, and bool / 8-bit outputs stay float32 whole numbers (the
header says which). Before, every such output was float32 in the library. A C program calls
the library; gc.load(lib).predict reads it the same way.

Cost: one small export and one C program (about 2 s)."""

from __future__ import annotations

import os
import shutil
import subprocess

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
from c_build import CC, build_program
from onnx import TensorProto, helper, numpy_helper
from test_onnx_ml import ort_run

import graphc as gc

pytestmark = pytest.mark.skipif(CC is None, reason="no C compiler (cc or $CC) on PATH")

ROWS = 7
PROGRAM = r"""
#include "ic.h"
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#define N 7
int main(void) {
    ic_ctx c;
    float x[N * 5], r[N * 5], g[N * 5];
    int64_t label[N];
    int32_t wide[N * 5];
    int i;
    c.params = NULL; c.params_bytes = 0;
    c.state = aligned_alloc(64, 4096); c.state_bytes = IC_STATE_BYTES;
    c.workspace_bytes = ic_workspace_size(N);
    c.workspace = aligned_alloc(64, (size_t)(c.workspace_bytes + 64) / 64 * 64);
    if (ic_init(&c) != IC_OK) return 1;
    for (i = 0; i < N * 5; i++) if (scanf("%f", &x[i]) != 1) return 2;
    if (ic_infer(&c, N, x, N * 5, label, N, r, N * 5, wide, N * 5, g, N * 5) != IC_OK) return 3;
    for (i = 0; i < N; i++) printf("%" PRId64 "\n", label[i]);
    for (i = 0; i < N * 5; i++) printf("%" PRId32 "\n", wide[i]);
    for (i = 0; i < N * 5; i++) printf("%.9g %.9g\n", r[i], g[i]);
    return 0;
}
"""


def _model() -> onnx.ModelProto:
    nodes = [
        helper.make_node("ArgMax", ["x"], ["label"], axis=1, keepdims=0),
        helper.make_node("Relu", ["x"], ["r"]),
        helper.make_node("Mul", ["x", "scale"], ["xs"]),
        helper.make_node("Cast", ["xs"], ["wide"], to=TensorProto.INT32),
        helper.make_node("Greater", ["x", "zero"], ["g"]),
    ]
    g = helper.make_graph(
        nodes,
        "ic",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 5])],
        [
            helper.make_tensor_value_info("label", TensorProto.INT64, None),
            helper.make_tensor_value_info("r", TensorProto.FLOAT, None),
            helper.make_tensor_value_info("wide", TensorProto.INT32, None),
            helper.make_tensor_value_info("g", TensorProto.BOOL, None),
        ],
        [
            numpy_helper.from_array(np.array(1e5, np.float32), "scale"),
            numpy_helper.from_array(np.zeros(5, np.float32), "zero"),
        ],
    )
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    return m


def test_library_returns_int64_and_int32_outputs_in_their_c_types(tmp_path) -> None:
    m = _model()
    model = gc.from_onnx(m).compile(name="ic")
    x = np.random.default_rng(4).normal(0, 3, (ROWS, 5)).astype(np.float32)
    x[0, :2] = [3e4, -3e4]  # Cast of +-3e9 to int32: past its range (ONNX Runtime's value)
    x[1, 1] = np.nan  # ArgMax skips it; Cast(NaN) as ONNX Runtime on x86-64
    label, r, wide, g = ort_run(m, {"x": x})
    res = model.export(str(tmp_path / "libic.so"))
    header = open(res.header).read()
    assert (
        "int ic_infer(const ic_ctx *ctx, int64_t n, const float *x, int64_t x_len, int64_t "
        "*label, int64_t label_len, float *r, int64_t r_len, int32_t *wide, int64_t wide_len, "
        "float *g, int64_t g_len);" in header
    )
    lib = gc.load(str(tmp_path / "libic.so"))
    got = lib.predict(x)
    for k, want in (("label", label), ("wide", wide)):
        assert got[k].dtype == want.dtype
        np.testing.assert_array_equal(got[k], want)
    np.testing.assert_array_equal(got["r"], r)
    assert got["g"].dtype == np.float32  # bool stays float32 in the library
    np.testing.assert_array_equal(got["g"], g.astype(np.float32))
    (tmp_path / "t.c").write_text(PROGRAM)
    flags = ["-std=c11", "-O1", "-Wall", "-Wextra", "-Werror"]
    exe = build_program(tmp_path / "t.c", tmp_path, "ic", tmp_path / "t", flags)
    feed = "\n".join(f"{v:.9g}" for v in x.ravel())
    run = subprocess.run([exe], input=feed, capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    lines = run.stdout.split()
    n = ROWS * 5
    np.testing.assert_array_equal(np.array(lines[:ROWS], np.int64), label)
    np.testing.assert_array_equal(np.array(lines[ROWS : ROWS + n], np.int64), wide.ravel())
    rest = np.array(lines[ROWS + n :], np.float64).reshape(n, 2)
    np.testing.assert_array_equal(rest[:, 0].astype(np.float32), r.ravel())
    np.testing.assert_array_equal(rest[:, 1], g.ravel().astype(np.float64))


STUB = "long long ic_workspace_size(void) { return 64; }\nint ic_init(void) { return 0; }\n" \
       "int ic_infer(void) { return 0; }\n"  # fmt: skip


def test_a_program_built_against_the_abi1_header_is_refused(tmp_path, monkeypatch) -> None:
    """The int32_t * / int64_t * outputs changed the prototypes of ABI 1 (float *): the ABI
    version is 2, every function of the header is exported under its versioned name, so a
    program built against an ABI-1 header and library (unversioned names, float * outputs) is
    refused by the dynamic linker when the new library replaces the old one, before it hands
    over a buffer; graphc.load refuses a library of a later ABI version by its meta."""
    model = gc.from_onnx(_model()).compile(name="ic")
    res = model.export(str(tmp_path / "libic.so"))
    header = open(res.header).read()
    assert "#define IC_ABI_VERSION 2\n" in header and "#define ic_infer ic_infer_abi2\n" in header
    # the ABI-1 header: the unversioned names, float * for the integer outputs
    old = "".join(line for line in header.splitlines(True) if "_abi2\n" not in line)
    old = old.replace("int64_t *label", "float *label").replace("int32_t *wide", "float *wide")
    old = old.replace("#define IC_ABI_VERSION 2", "#define IC_ABI_VERSION 1")
    prog = PROGRAM.replace("int64_t label[N];", "float label[N];")
    prog = prog.replace("int32_t wide[N * 5];", "float wide[N * 5];")
    prog = prog.replace('"%" PRId64 "\\n", label[i]', '"%g\\n", label[i]')
    prog = prog.replace('"%" PRId32 "\\n", wide[i]', '"%g\\n", wide[i]')
    d = tmp_path / "old"
    d.mkdir()
    (d / "ic.h").write_text(old)
    (d / "t.c").write_text(prog)
    (d / "stub.c").write_text(STUB)
    stub = [CC, "-shared", "-fPIC", "-o", str(d / "libic.so"), str(d / "stub.c")]
    run = subprocess.run(stub, capture_output=True, text=True, check=False)
    assert run.returncode == 0, run.stderr
    exe = build_program(d / "t.c", d, "ic", d / "t", ["-std=c11", "-Wall", "-Wextra", "-Werror"])
    shutil.copyfile(tmp_path / "libic.so", d / "libic.so")  # the library is upgraded
    feed = " ".join(["1"] * ROWS * 5)
    for bind_now in ("1", ""):  # at load (-z now / LD_BIND_NOW), else at the first call
        env = {**os.environ, "LD_BIND_NOW": bind_now}
        run = subprocess.run([exe], input=feed, capture_output=True, text=True, timeout=60,
                             env=env, check=False)  # fmt: skip
        assert run.returncode != 0 and run.stdout == "", (run.returncode, run.stdout)
        assert "undefined symbol: ic_" in run.stderr, run.stderr
    assert gc.load(str(tmp_path / "libic.so")).meta["graphc_abi"] == 2
    monkeypatch.setattr("graphc.runtime.library.ABI_VERSION", 1)
    with pytest.raises(
        gc.ArgumentError, match="C ABI version 2 and this graphc reads versions 1 to 1"
    ):
        gc.load(str(tmp_path / "libic.so"))
