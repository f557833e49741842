"""Which initializers of an imported ONNX file train by default: masks, epsilons and inputs
the operator's schema marks non-differentiable are constants; weights train. ~3 s."""

from __future__ import annotations

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
from onnx import TensorProto, helper, numpy_helper

import graphc as gc

F32 = TensorProto.FLOAT


def _ort(m, feeds):
    return ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"]).run(
        None, feeds
    )


def _model(nodes, inputs, outputs, inits=()):
    g = helper.make_graph(nodes, "g", inputs, outputs, list(inits))
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    return m


def _sinusoid(length: int, d: int) -> np.ndarray:
    """Vaswani et al.'s table: sin / cos of pos / 10000**(2i/d), interleaved."""
    pos = np.arange(length)[:, None]
    ang = pos / 10000.0 ** (2 * (np.arange(d)[None, :] // 2) / d)
    return np.where(np.arange(d) % 2 == 0, np.sin(ang), np.cos(ang)).astype(np.float32)


def _constants_model():
    """x -> sqrt(x * mask01 + addmask)... : every kind of constant initializer and two
    weights (a one-element bias added after a Sqrt's result, a positional table)."""
    rng = np.random.default_rng(0)
    inits = {
        "mask01": np.array([1, 0, 1, 1], np.float32),  # read by Mul: a mask
        "addmask": np.array([0, -1e9, 0, 0], np.float32),  # additive mask
        "infmask": np.array([0, 0, -np.inf, 0], np.float32),  # -inf mask
        "eps": np.array([1e-5], np.float32),  # epsilon before Sqrt
        "bias1": np.array([0.5], np.float32),  # a Dense(1)'s bias: a weight
        "pos": rng.standard_normal(4).astype(np.float32),  # learned positions: a weight
        "onoff": np.array([0.0, 1.0], np.float32),  # OneHot's values: non-differentiable
    }
    nodes = [
        helper.make_node("Mul", ["x", "mask01"], ["a"]),
        helper.make_node("Add", ["a", "addmask"], ["b"]),
        helper.make_node("Add", ["b", "infmask"], ["c"]),
        helper.make_node("Mul", ["x", "x"], ["v"]),
        helper.make_node("Add", ["v", "eps"], ["ve"]),
        helper.make_node("Sqrt", ["ve"], ["s"]),
        helper.make_node("Add", ["s", "bias1"], ["t"]),
        helper.make_node("Add", ["t", "pos"], ["u"]),
        helper.make_node("ArgMax", ["x"], ["k"], axis=1, keepdims=0),
        helper.make_node("OneHot", ["k", "depth", "onoff"], ["h"]),
        helper.make_node("Add", ["u", "h"], ["y"]),
    ]
    inits_p = [numpy_helper.from_array(v, k) for k, v in inits.items()]
    inits_p.append(numpy_helper.from_array(np.array(4, np.int64), "depth"))
    return _model(
        nodes,
        [helper.make_tensor_value_info("x", F32, ["N", 4])],
        [
            helper.make_tensor_value_info("y", F32, ["N", 4]),
            helper.make_tensor_value_info("c", F32, ["N", 4]),
        ],
        inits_p,
    )


def test_masks_epsilons_and_nondifferentiable_inputs_are_constants_by_default() -> None:
    m = _constants_model()
    imp = gc.from_onnx(m)
    assert sorted(imp.params) == ["bias1", "pos"]
    x = np.random.default_rng(1).standard_normal((3, 4)).astype(np.float32)
    got = imp.compile().predict(x)
    ref_y, ref_c = _ort(m, {"x": x})
    np.testing.assert_allclose(got["y"], ref_y, rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(got["c"], ref_c)
    # the heuristic constants train when named; the schema's non-differentiable ones never
    with pytest.warns(gc.OnnxFrozenWarning, match=r"'onoff' \(input 2 of node \d+ .*OneHot"):
        named = gc.from_onnx(m, trainable=["mask01", "eps", "bias1", "onoff"])
    assert sorted(named.params) == ["bias1", "eps", "mask01"]


def test_a_sinusoidal_position_table_is_a_constant_a_learned_one_trains() -> None:
    learned = np.random.default_rng(2).normal(0, 0.02, (6, 8)).astype(np.float32)
    m = _model(
        [
            helper.make_node("Add", ["x", "sines"], ["a"]),
            helper.make_node("Add", ["a", "learned"], ["y"]),
        ],
        [helper.make_tensor_value_info("x", F32, ["N", 6, 8])],
        [helper.make_tensor_value_info("y", F32, ["N", 6, 8])],
        [
            numpy_helper.from_array(_sinusoid(6, 8), "sines"),
            numpy_helper.from_array(learned, "learned"),
        ],
    )
    imp = gc.from_onnx(m)
    assert sorted(imp.params) == ["learned"]
    x = np.random.default_rng(3).standard_normal((2, 6, 8)).astype(np.float32)
    np.testing.assert_allclose(imp.compile().predict(x), _ort(m, {"x": x})[0], rtol=1e-6, atol=1e-6)
