"""Integer graph inputs read by ArgMax, ArgMin, TopK and CumSum (torch.onnx's ids.argmax(1),
topk of integer scores, and the position ids of RoBERTa-style exports: cumsum(ids != pad) *
mask + pad), equal to ONNX Runtime in values and dtype; graphc@e68b2fc refused each ("element
type int64 used as an integer"). The float32 whole numbers graphc holds keep the order and the
ties of integers below 2**24; a CumSum whose partial sums could pass 2**24 narrows the input's
checked range, and a value outside it is refused at run time naming the input and the row."""

from __future__ import annotations

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper, numpy_helper
from test_onnx_ml import ort_run

import graphc as gc

INT64, INT32 = TensorProto.INT64, TensorProto.INT32
SAME = 0  # an output of the input's element type


def _model(nodes, inits, outs, elem=INT64, width=6) -> onnx.ModelProto:
    g = helper.make_graph(
        nodes,
        "int_order",
        [helper.make_tensor_value_info("x", elem, ["N", width])],
        [helper.make_tensor_value_info(n, t or elem, None) for n, t in outs],
        [numpy_helper.from_array(np.asarray(v), k) for k, v in inits.items()],
    )
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    return m


def _positions() -> tuple[list, dict]:
    """RoBERTa's create_position_ids_from_input_ids as torch.onnx writes it (pad id 1)."""
    nodes = [
        helper.make_node("Equal", ["x", "pad"], ["e"]),
        helper.make_node("Not", ["e"], ["ne"]),
        helper.make_node("Cast", ["ne"], ["m"], to=INT32),
        helper.make_node("CumSum", ["m", "axis32"], ["c"]),
        helper.make_node("Mul", ["c", "m"], ["cm"]),
        helper.make_node("Cast", ["cm"], ["cl"], to=INT64),
        helper.make_node("Add", ["cl", "pad64"], ["y"]),
    ]
    one = np.array(1, np.int64)
    return nodes, {"pad": one, "pad64": one, "axis32": np.array(1, np.int32)}


CASES = {
    "argmax": ([helper.make_node("ArgMax", ["x"], ["y"], axis=1, keepdims=0)], {}, [INT64]),
    "argmax_last_keep": (
        [helper.make_node("ArgMax", ["x"], ["y"], axis=1, select_last_index=1)],
        {},
        [INT64],
    ),
    "argmin_to_float": (
        [
            helper.make_node("ArgMin", ["x"], ["a"], axis=1),
            helper.make_node("Cast", ["a"], ["y"], to=TensorProto.FLOAT),
        ],
        {},
        [TensorProto.FLOAT],
    ),
    "topk": (
        [helper.make_node("TopK", ["x", "k"], ["y", "i"], axis=1, largest=1)],
        {"k": np.array([3], np.int64)},
        [SAME, INT64],
    ),
    "topk_smallest": (
        [helper.make_node("TopK", ["x", "k"], ["y", "i"], axis=-1, largest=0, sorted=1)],
        {"k": np.array([2], np.int64)},
        [SAME, INT64],
    ),
    "cumsum": (
        [helper.make_node("CumSum", ["x", "ax"], ["y"])],
        {"ax": np.array(1, np.int64)},
        [SAME],
    ),
    "cumsum_exclusive_reverse": (
        [helper.make_node("CumSum", ["x", "ax"], ["y"], exclusive=1, reverse=1)],
        {"ax": np.array(-1, np.int64)},
        [SAME],
    ),
    "positions": (*_positions(), [INT64]),
}


@pytest.mark.parametrize("elem", [INT64, INT32], ids=["int64", "int32"])
@pytest.mark.parametrize("case", list(CASES))
def test_integer_input_read_by_order_and_cumsum_ops_matches_onnxruntime(case, elem) -> None:
    nodes, inits, types = CASES[case]
    names = ["y", "i"][: len(types)]
    m = _model(nodes, inits, list(zip(names, types, strict=True)), elem)
    dtype = np.int64 if elem == INT64 else np.int32
    if "pad" in inits:  # compared with x: of its type
        m.graph.initializer[0].CopyFrom(numpy_helper.from_array(inits["pad"].astype(dtype), "pad"))
    rng = np.random.default_rng(5)
    x = rng.integers(-6, 7, (40, 6))  # many ties
    x[:4] = [[1, 1, 1, 1, 1, 1], [5, 1, 1, 7, 7, 1], [-3, -3, 0, 2, 2, -3], [1, 2, 3, 1, 1, 1]]
    x[4] = [2**21, -(2**21), 2**21 - 1, 0, 1, -1]  # large, still exact (6 * 2**21 < 2**24)
    feeds = x.astype(dtype)
    want = ort_run(m, {"x": feeds})
    got = gc.from_onnx(m).compile().predict(feeds)
    got = [got[n] for n in names] if isinstance(got, dict) else [got]
    for g, w in zip(got, want, strict=True):
        assert g.dtype == w.dtype, (g.dtype, w.dtype)
        np.testing.assert_array_equal(g, w)


def test_cumsum_past_float32s_integers_is_refused_naming_the_input() -> None:
    nodes, inits, _ = CASES["cumsum"]
    m = _model(nodes, inits, [("y", INT64)])
    model = gc.from_onnx(m).compile()
    x = np.zeros((3, 6), np.int64)
    x[2] = [2**23, 2**23, 2**23, 0, 0, 0]  # partial sums 2**24 .. 3 * 2**23: ONNX Runtime exact
    with pytest.raises(gc.ArgumentError, match=r"input 'x': row 2 holds 8388608"):
        model.predict(x)
    ok = x.copy()
    ok[2] = [2**21, 2**21, -(2**21), 5, -7, 2**21]
    np.testing.assert_array_equal(model.predict(ok), ort_run(m, {"x": ok})[0])
