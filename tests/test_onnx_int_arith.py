"""Integer Div / Mod / Mul of integer graph inputs (int32, int64), as ONNX Runtime computes
them: Div truncates toward zero (C), Mod takes the divisor's sign (fmod=0, Python's %) or the
dividend's (fmod=1, C's fmod), Mul of two inputs exact where graphc narrows their checked
range (-4096 .. 4095), a value outside refused at run time naming the input and the row.
graphc refused all three on integer inputs (a divisor whose range holds 0 had no bound)."""

from __future__ import annotations

import re

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper
from test_onnx_ml import ort_run

import graphc as gc

BIG = 2**24 - 1  # graphc's integers: whole numbers of magnitude below 2**24


def _model(nodes: list, elem: int, out: str = "y") -> onnx.ModelProto:
    g = helper.make_graph(
        nodes,
        "int_arith",
        [helper.make_tensor_value_info(k, elem, ["N", 6]) for k in ("a", "b")],
        [helper.make_tensor_value_info(out, elem, None)],
    )
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    return m


def _operands(dtype, rows: int, top: int, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    a = rng.integers(-top, top + 1, (rows, 6))
    b = rng.integers(-top, top + 1, (rows, 6))
    small = rng.integers(-9, 10, (rows, 6))  # many exact multiples and small quotients
    b = np.where(rng.random((rows, 6)) < 0.5, small, b)
    a[0] = [7, -7, 7, -7, top, -top]
    b[0] = [2, 2, -2, -2, 1, -1]
    a[1] = [0, 6, -6, 6, -6, top]
    b[1] = [5, 3, 3, -3, -3, top]
    b[b == 0] = 1  # ONNX Runtime raises on a zero divisor (test below)
    return {"a": a.astype(dtype), "b": b.astype(dtype)}


@pytest.mark.parametrize("elem", [TensorProto.INT64, TensorProto.INT32])
@pytest.mark.parametrize(("op", "attrs"), [("Div", {}), ("Mod", {}), ("Mod", {"fmod": 1})])
def test_integer_div_and_mod_of_inputs_match_onnxruntime(elem: int, op: str, attrs: dict) -> None:
    dtype = np.int64 if elem == TensorProto.INT64 else np.int32
    m = _model([helper.make_node(op, ["a", "b"], ["y"], **attrs)], elem)
    model = gc.from_onnx(m).compile()
    for top, seed in ((BIG, 0), (1000, 1)):
        feeds = _operands(dtype, 200, top, seed)
        (want,) = ort_run(m, feeds)
        got = model.predict(feeds)
        assert got.dtype == want.dtype
        np.testing.assert_array_equal(got, want)


def test_integer_products_match_onnxruntime_in_the_narrowed_range() -> None:
    nodes = [
        helper.make_node("Mul", ["a", "b"], ["p"]),
        helper.make_node("Mul", ["a", "a"], ["q"]),
        helper.make_node("Sub", ["p", "q"], ["d"]),
        helper.make_node("Div", ["d", "b"], ["y"]),  # (a * b - a * a) / b, truncated
    ]
    m = _model(nodes, TensorProto.INT64)
    model = gc.from_onnx(m).compile()
    feeds = _operands(np.int64, 200, 2047, 2)
    (want,) = ort_run(m, feeds)
    np.testing.assert_array_equal(model.predict(feeds), want)
    simple = _model([helper.make_node("Mul", ["a", "b"], ["y"])], TensorProto.INT64)
    products = gc.from_onnx(simple).compile()
    edge = {
        "a": np.array([[4095, -4096, 0, 1, -1, 77]] * 2, np.int64),
        "b": np.array([[4095, -4096, 9, -4096, 4095, -13]] * 2, np.int64),
    }
    np.testing.assert_array_equal(products.predict(edge), ort_run(simple, edge)[0])
    edge["a"][1, 3] = 4096  # past the range whose products are exact in float32
    # 'a' picks no rows of a table: the refusal says so (not "no row of its lookup table")
    with pytest.raises(
        gc.ArgumentError,
        match=r"^input 'a': row 1 holds 4096(\.0)?, outside the whole numbers -4096\.\.4095 it is "
        r"checked to hold \(1 such rows\); the range in which the integer 'y'",
    ):
        products.predict(edge)


def test_a_zero_divisor_is_refused_naming_the_input_and_the_row(tmp_path) -> None:
    # ONNX leaves it undefined; ONNX Runtime 1.32 raises "Integer division by zero"
    feeds = {
        "a": np.array([[7, -7, 0, 5, -5, 0], [1, 2, 3, 4, 5, 6]], np.int64),
        "b": np.array([[1, 2, 3, 4, 5, 6], [3, 0, 1, -1, 2, 0]], np.int64),
    }
    for op, attrs in (("Div", {}), ("Mod", {}), ("Mod", {"fmod": 1})):
        nodes = [
            helper.make_node("Reshape", ["b", "shape"], ["b2"]),  # a movement of the input
            helper.make_node(op, ["a", "b2"], ["y"], **attrs),
        ]
        m = _model(nodes, TensorProto.INT64)
        m.graph.initializer.append(
            onnx.numpy_helper.from_array(np.array([-1, 6], np.int64), "shape")
        )
        model = gc.from_onnx(m).compile(name="dz")
        with pytest.raises(gc.ArgumentError, match=r"divisor 'b': row 1 holds 0.*other than 0"):
            model.predict(feeds)
        ok = {"a": feeds["a"], "b": np.where(feeds["b"] == 0, 7, feeds["b"])}
        np.testing.assert_array_equal(model.predict(ok), ort_run(m, ok)[0])
    lib = gc.load(model.export(str(tmp_path / "libdz.so")).library)
    with pytest.raises(gc.ArgumentError, match=r"dz_infer: divisor 'b': row 1 holds 0"):
        lib.predict(feeds)


def test_a_scalar_divisor_is_checked_like_any_input() -> None:
    # b int32[] (rank 0): a 0 is refused naming 'b', as ONNX Runtime raises; not a TypeError
    g = helper.make_graph(
        [helper.make_node("Div", ["a", "b"], ["y"])],
        "scalar_div",
        [
            helper.make_tensor_value_info("a", TensorProto.INT32, ["N", 3]),
            helper.make_tensor_value_info("b", TensorProto.INT32, []),
        ],
        [helper.make_tensor_value_info("y", TensorProto.INT32, None)],
    )
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    model = gc.from_onnx(m).compile()
    a = np.array([[7, -8, 9], [0, 5, -5]], np.int32)
    for b in (2, -3):
        feeds = {"a": a, "b": np.array(b, np.int32)}
        np.testing.assert_array_equal(model.predict(feeds), ort_run(m, feeds)[0])
    with pytest.raises(gc.ArgumentError, match=r"divisor 'b': row 0 holds 0"):
        model.predict({"a": a, "b": np.array(0, np.int32)})


@pytest.mark.parametrize("elem", [TensorProto.UINT8, TensorProto.UINT16, TensorProto.INT8])
@pytest.mark.parametrize("fmod", [0, 1])
def test_small_and_unsigned_integer_mod_of_inputs_matches_onnxruntime(elem: int, fmod: int) -> None:
    # the remainder's range follows the signs: an unsigned x mod y stays in 0 .. max(y) - 1
    dtype = onnx.helper.tensor_dtype_to_np_dtype(elem)
    m = _model([helper.make_node("Mod", ["a", "b"], ["y"], fmod=fmod)], elem)
    model = gc.from_onnx(m).compile()
    info = np.iinfo(dtype)
    rng = np.random.default_rng(fmod)
    a = rng.integers(info.min, int(info.max) + 1, (100, 6))
    b = rng.integers(info.min, int(info.max) + 1, (100, 6))
    a[0], b[0] = info.max, [1, 2, 3, 7, 100, info.max]
    b[b == 0] = 1
    feeds = {"a": a.astype(dtype), "b": b.astype(dtype)}
    (want,) = ort_run(m, feeds)
    got = model.predict(feeds)
    assert got.dtype == want.dtype
    np.testing.assert_array_equal(got, want)


def _divide(op: str, moves: list, inits: list, ins: list) -> onnx.ModelProto:
    g = helper.make_graph(
        [*moves, helper.make_node(op, ["a", "d"], ["y"])],
        "divisor_moves",
        [helper.make_tensor_value_info("a", TensorProto.INT64, ["N", 2]), *ins],
        [helper.make_tensor_value_info("y", TensorProto.INT64, None)],
        [onnx.numpy_helper.from_array(np.asarray(v, np.int64), k) for k, v in inits],
    )
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    return m


@pytest.mark.parametrize("op", ["Div", "Mod"])
def test_a_constant_zero_divisor_is_refused_at_import_naming_the_node(op: str) -> None:
    # ONNX Runtime refuses the file when it loads it ("Integer division / modulo by zero")
    for d in ([3, 0], [[0]]):
        m = _divide(op, [helper.make_node("Identity", ["c"], ["d"])], [("c", d)], [])
        with pytest.raises(Exception, match="by zero"):
            ort_run(m, {"a": np.array([[7, 8]], np.int64)})
        with pytest.raises(gc.OnnxError, match=rf"\({op}, .*divisor 'd' holds 0"):
            gc.from_onnx(m)


@pytest.mark.parametrize("op", ["Div", "Mod"])
def test_a_divisor_broadcast_by_expand_or_concat_is_checked(op: str) -> None:
    b = helper.make_tensor_value_info("b", TensorProto.INT64, ["N", 1])
    for moves, inits in (
        ([helper.make_node("Expand", ["b", "shape"], ["d"])], [("shape", [1, 2])]),
        ([helper.make_node("Concat", ["b", "b"], ["d"], axis=1)], []),
    ):
        m = _divide(op, moves, inits, [b])
        model = gc.from_onnx(m).compile()
        ok = {"a": np.array([[7, -8], [9, 10]], np.int64), "b": np.array([[3], [-4]], np.int64)}
        np.testing.assert_array_equal(model.predict(ok), ort_run(m, ok)[0])
        bad = {"a": ok["a"], "b": np.array([[3], [0]], np.int64)}
        with pytest.raises(Exception, match="by zero"):
            ort_run(m, bad)
        with pytest.raises(gc.ArgumentError, match=rf"divisor 'b': row 1 holds 0.*{op} 'y'"):
            model.predict(bad)


def test_a_refusal_of_a_zero_that_onnxruntime_would_not_divide_by_says_why() -> None:
    # a column a Slice leaves out may hold 0, as in ONNX Runtime (tests/test_onnx_divisor_
    # positions.py); graphc checks the divisor's elements also in an If's branch that the
    # data does not take (ONNX Runtime runs only the branch taken); the message says so
    b = helper.make_tensor_value_info("b", TensorProto.INT64, ["N", 2])
    m = _divide(
        "Div",
        [helper.make_node("Slice", ["b", "s0", "s1", "ax"], ["d"])],
        [("s0", [0]), ("s1", [1]), ("ax", [1])],
        [b],
    )
    feeds = {"a": np.array([[7, 8], [9, 10]], np.int64), "b": np.array([[2, 0], [3, 5]], np.int64)}
    np.testing.assert_array_equal(ort_run(m, feeds)[0], [[3, 4], [3, 3]])
    np.testing.assert_array_equal(gc.from_onnx(m).compile().predict(feeds), [[3, 4], [3, 3]])
    out = helper.make_tensor_value_info
    then = helper.make_graph(
        [helper.make_node("Div", ["a", "b"], ["yt"])], "t", [], [out("yt", TensorProto.INT64, None)]
    )
    other = helper.make_graph(
        [helper.make_node("Add", ["a", "b"], ["ye"])], "e", [], [out("ye", TensorProto.INT64, None)]
    )
    g = helper.make_graph(
        [helper.make_node("If", ["c"], ["y"], then_branch=then, else_branch=other)],
        "branch",
        [out("a", TensorProto.INT64, ["N", 2]), b, out("c", TensorProto.BOOL, [])],
        [out("y", TensorProto.INT64, None)],
    )
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    feeds = {**feeds, "c": np.array(False)}
    np.testing.assert_array_equal(ort_run(m, feeds)[0], feeds["a"] + feeds["b"])
    with pytest.raises(
        gc.ArgumentError,
        match=r"row 0 holds 0.*in a branch of an If .*also where "
        r"the If takes its other branch",
    ):
        gc.from_onnx(m).compile().predict(feeds)


DIVISOR_C = r"""
#include "dv.h"
#include <stdio.h>
#include <stdlib.h>
int main(void) {
    dv_ctx c;
    float a[4] = {1, 2, 3, 4}, zero[4] = {1, 2, 0, 4}, big[4] = {1, 2, 33554432.0f, 4};
    int64_t y[4];
    c.params = NULL; c.params_bytes = 0; c.state = NULL; c.state_bytes = 0;
    c.workspace_bytes = dv_workspace_size(2);
    c.workspace = aligned_alloc(64, ((size_t)c.workspace_bytes + 63) / 64 * 64 + 64);
    if (dv_init(&c) != DV_OK) return 1;
    printf("%d %s\n", dv_infer(&c, 2, a, 4, zero, 4, y, 4) == DV_ERR_LOOKUP, dv_last_error());
    printf("%d %s\n", dv_infer(&c, 2, a, 4, big, 4, y, 4) == DV_ERR_LOOKUP, dv_last_error());
    return 0;
}
"""


def test_a_divisor_refusal_gives_the_zero_reason_only_for_a_zero(tmp_path) -> None:
    # a divisor past the checked range is not a division by zero: Python's and the C
    # library's NAME_last_error say "division by zero" only for a 0
    from c_build import CC, run_c

    if CC is None:
        pytest.skip("no C compiler")
    g = helper.make_graph(
        [helper.make_node("Div", ["a", "b"], ["y"])],
        "dv",
        [helper.make_tensor_value_info(k, TensorProto.INT64, ["N", 2]) for k in ("a", "b")],
        [helper.make_tensor_value_info("y", TensorProto.INT64, None)],
    )
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    model = gc.from_onnx(m).compile(name="dv")
    a = np.array([[1, 2], [3, 4]], np.int64)
    zero = "outside the whole numbers -16777215..16777215 other than 0 (an integer division by zero"
    with pytest.raises(gc.ArgumentError, match=r"row 1 holds 0(\.0)?, " + re.escape(zero)):
        model.predict({"a": a, "b": np.array([[1, 2], [0, 4]], np.int64)})
    with pytest.raises(gc.ArgumentError) as big:
        model.predict({"a": a, "b": np.array([[1, 2], [2**25, 4]], np.int64)})
    assert "row 1 holds 33554432" in str(big.value) and "by zero" not in str(big.value)
    model.export(str(tmp_path / "libdv.so"))
    out = run_c(tmp_path, DIVISOR_C, "dv")
    assert out[0].startswith(f"1 dv_infer: divisor 'b': row 1 holds 0, {zero}"), out
    assert out[1].startswith("1 dv_infer: divisor 'b': row 1 holds 33554432, outside"), out
    assert "by zero" not in out[1], out


@pytest.mark.parametrize("op", ["Mul", "Add", "Sub"])
@pytest.mark.parametrize("elem", [TensorProto.INT64, TensorProto.INT32], ids=["int64", "int32"])
def test_product_read_only_as_float_needs_no_exactness(op: str, elem: int) -> None:
    """A product / sum / difference of integer inputs that only a Cast to float reads is one
    correctly rounded float32 operation on exact operands: the rounding ONNX Runtime's Cast
    applies to the exact integer. It needs only to stay in its type (int32: a * b within
    +-2**31, so a, b in -46340 .. 46339 for Mul; ONNX Runtime wraps past it); graphc@e68b2fc
    required it exact in float32 (Mul: a, b in -4096 .. 4095)."""
    m = _model(
        [
            helper.make_node(op, ["a", "b"], ["p"]),
            helper.make_node("Cast", ["p"], ["y"], to=TensorProto.FLOAT),
        ],
        elem,
    )
    m.graph.output[0].type.tensor_type.elem_type = TensorProto.FLOAT
    model = gc.from_onnx(m).compile()
    dtype = np.int64 if elem == TensorProto.INT64 else np.int32
    top = BIG if elem == TensorProto.INT64 or op != "Mul" else 46339
    feeds = _operands(dtype, 100, top, 2)
    feeds["a"][2] = [top, -top, top, 3, 16777213 % (top + 1), -7]
    feeds["b"][2] = [top, top, -top, 5592405 % (top + 1), 3, 2**23 % (top + 1)]
    (want,) = ort_run(m, feeds)
    got = model.predict(feeds)
    np.testing.assert_array_equal(got, want)
    if elem == TensorProto.INT32 and op == "Mul":  # past int32 ONNX Runtime wraps: refused
        feeds["a"][3, 0] = 46340
        with pytest.raises(gc.ArgumentError, match=r"input 'a': row 3 holds 46340"):
            model.predict(feeds)
