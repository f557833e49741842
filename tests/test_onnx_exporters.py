"""ONNX files as exporters other than torch write them, against ONNX Runtime on the same inputs.

tf2onnx's files (tests/data/onnx/tf_*.onnx, made by tests/data/onnx/export_tf.py: TensorFlow is
no graphc dependency) keep Keras's patterns: Keras 3's Embedding computes with its integer id
input before the Gather; integer-typed arithmetic in a graph (Div truncates) follows ONNX's
integer semantics. Hand-built graphs (onnx.helper) reproduce the patterns with edge values."""

from __future__ import annotations

import os

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
from onnx import TensorProto, helper, numpy_helper

import graphc as gc
from graphc.ir.errors import ArgumentError, OnnxError

DATA = os.path.join(os.path.dirname(__file__), "data", "onnx")


def _ort(m, feeds):
    src = m if isinstance(m, str) else m.SerializeToString()
    sess = ort.InferenceSession(src, providers=["CPUExecutionProvider"])
    return sess.run(None, feeds)


def _model(nodes, inputs, outputs, inits=(), opset: int = 17):
    g = helper.make_graph(nodes, "g", inputs, outputs, list(inits))
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
    m.ir_version = 8
    return m


def test_keras_embedding_wraps_negative_ids_with_integer_arithmetic() -> None:
    # Keras 3's Embedding: ids' = where(ids < 0, ids + V, ids) as Add/Cast/Less/Not/Mul on the
    # int32 input, then Gather; the int input was refused ("used as an integer")
    path = os.path.join(DATA, "tf_embed_13.onnx")
    ids = np.random.default_rng(0).integers(-20, 20, (9, 7)).astype(np.int32)
    ids[0] = [-20, -1, 0, 19, 5, -7, 3]
    model = gc.from_onnx(path).compile()
    (ref,) = _ort(path, {"ids": ids})
    np.testing.assert_allclose(model.predict(ids), ref, rtol=1e-6, atol=1e-7)
    # float32 is exact on whole numbers below 2**24 only: larger ids are refused, by name
    big = ids.copy()
    big[4, 2] = 2**24 + 1
    with pytest.raises(ArgumentError, match=r"ids.*row 4"):
        model.predict(big)


def test_integer_division_truncates_as_onnxruntime() -> None:
    # an integer Div (ArgMax - 3) / 2 and an int64 input divided by signed divisors: graphc
    # computed x / y in float (-3 / 2 = -1.5 where ONNX Runtime gives -1)
    i64 = TensorProto.INT64
    nodes = [
        helper.make_node("ArgMax", ["x"], ["a"], axis=1, keepdims=1),
        helper.make_node("Sub", ["a", "three"], ["s"]),
        helper.make_node("Div", ["s", "two"], ["d"]),
        helper.make_node("Cast", ["d"], ["y"], to=TensorProto.FLOAT),
        helper.make_node("Div", ["k", "divisors"], ["q"]),
        helper.make_node("Cast", ["q"], ["z"], to=TensorProto.FLOAT),
    ]
    inits = [
        numpy_helper.from_array(np.array(2, np.int64), "two"),
        numpy_helper.from_array(np.array(3, np.int64), "three"),
        numpy_helper.from_array(np.array([2, -3, 7, -1, 16777213], np.int64), "divisors"),
    ]
    m = _model(
        nodes,
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 8]),
            helper.make_tensor_value_info("k", i64, ["N", 5]),
        ],
        [
            helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 1]),
            helper.make_tensor_value_info("z", TensorProto.FLOAT, ["N", 5]),
        ],
        inits,
    )
    rng = np.random.default_rng(1)
    x = rng.standard_normal((64, 8)).astype(np.float32)
    k = rng.integers(-(2**24) + 1, 2**24, (64, 5)).astype(np.int64)
    k[:8] = [[-3, 3, 7, 0, 16777212], [3, -3, -7, 5, -16777212], [-1, 1, 6, -1, 16777213]] + [
        [2**24 - 1, -(2**24) + 1, 2**24 - 1, 2**24 - 1, -16777213]
    ] * 5
    got = gc.from_onnx(m).compile().predict({"x": x, "k": k})
    ref_y, ref_z = _ort(m, {"x": x, "k": k})
    np.testing.assert_array_equal(got["y"], ref_y)
    np.testing.assert_array_equal(got["z"], ref_z)


def test_integer_input_through_arithmetic_the_float_path_cannot_mirror_is_refused() -> None:
    # an int input reaching a MatMul is integer arithmetic graphc does not compute: named
    m = _model(
        [
            helper.make_node("MatMul", ["k", "w"], ["p"]),
            helper.make_node("Cast", ["p"], ["y"], to=1),
        ],
        [helper.make_tensor_value_info("k", TensorProto.INT64, ["N", 2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 2])],
        [numpy_helper.from_array(np.eye(2, dtype=np.int64), "w")],
    )
    with pytest.raises(OnnxError, match=r"input 'k'.*int64 used as an integer"):
        gc.from_onnx(m)
