"""What ONNX Runtime's loader refuses beyond onnx.checker, refused by graphc too (before, these
files imported): a graph input whose initializer of the same name (its default value) has
another shape or element type, and two nodes of the same non-empty name. A matching shadowed
input (symbolic dimensions allowed) and repeated empty node names still import."""

from __future__ import annotations

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
from onnx import TensorProto, helper, numpy_helper

import graphc as gc
from graphc.ir.errors import OnnxError


def _model(w_type, w_shape, names=("", "")):
    nodes = [
        helper.make_node("Add", ["x", "w"], ["h"], name=names[0]),
        helper.make_node("Relu", ["h"], ["y"], name=names[1]),
    ]
    g = helper.make_graph(
        nodes,
        "g",
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4]),
            helper.make_tensor_value_info("w", w_type, w_shape),
        ],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [numpy_helper.from_array(np.arange(4, dtype=np.float32) - 1.5, "w")],
    )
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    m.ir_version = 7
    return m


def _ort_refuses(m) -> None:
    with pytest.raises(Exception):  # noqa: B017 (its loader's own exception types)
        ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])


@pytest.mark.parametrize(
    "w_type, w_shape, says",
    [
        (TensorProto.FLOAT, [3], r"declared of shape \[3\], its initializer .* is \[4\]"),
        (TensorProto.FLOAT, [1, 4], r"declared of shape \[1, 4\]"),
        (TensorProto.DOUBLE, [4], "declared double, its initializer is float"),
    ],
)
def test_a_shadowed_input_of_another_shape_or_type_is_refused(w_type, w_shape, says) -> None:
    m = _model(w_type, w_shape)
    _ort_refuses(m)
    with pytest.raises(OnnxError, match=r"graph input 'w' is " + says):
        gc.from_onnx(m)


def test_two_nodes_of_one_name_are_refused() -> None:
    m = _model(TensorProto.FLOAT, [4], names=("n", "n"))
    _ort_refuses(m)
    with pytest.raises(OnnxError, match="nodes 0 and 1 are both named 'n'"):
        gc.from_onnx(m)


def test_a_matching_shadowed_input_and_unnamed_nodes_import() -> None:
    m = _model(TensorProto.FLOAT, ["k"])  # a symbolic size matches the initializer's 4
    x = np.random.default_rng(0).standard_normal((3, 4)).astype(np.float32)
    sess = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(gc.from_onnx(m).compile().predict(x), sess.run(None, {"x": x})[0])
