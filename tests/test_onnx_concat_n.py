"""Concat along the batch axis N of values led by N (skl2onnx's QuadraticDiscriminantAnalysis
stacks its per-class [N, 1] scores as [k*N, 1], Reshapes them to [k, N] and Transposes to [N,
k]): held as a layout view (graphc.onnx_layout._concat_n) and equal to ONNX Runtime;
graphc@e68b2fc refused it ("concat: cannot work along the batch axis 0"). A stack along N that
reaches an output unmoved is refused naming the node and the layout."""

from __future__ import annotations

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper, numpy_helper
from test_onnx_ml import ort_run

import graphc as gc


def _model(tail: list, inits: dict, out_shape) -> onnx.ModelProto:
    nodes = [
        helper.make_node("Mul", ["x", "w0"], ["a"]),
        helper.make_node("Relu", ["x"], ["b"]),
        helper.make_node("Sub", ["x", "w1"], ["c"]),
        helper.make_node("Concat", ["a", "b", "c"], ["s"], axis=0),
        *tail,
    ]
    weights = {"w0": np.array([2.0, -1.0], np.float32), "w1": np.array([0.5, 3.0], np.float32)}
    g = helper.make_graph(
        nodes,
        "concat_n",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, out_shape)],
        [numpy_helper.from_array(np.asarray(v), k) for k, v in {**weights, **inits}.items()],
    )
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    return m


def test_concat_along_n_then_moved_back_matches_onnxruntime() -> None:
    x = np.random.default_rng(0).normal(size=(7, 2)).astype(np.float32)
    cases = [
        (  # [3N, 2] -> [3, N, 2] -> [N, 3, 2] -> softmax over the 3
            [
                helper.make_node("Reshape", ["s", "shape"], ["r"]),
                helper.make_node("Transpose", ["r"], ["t"], perm=[1, 0, 2]),
                helper.make_node("Softmax", ["t"], ["y"], axis=1),
            ],
            {"shape": np.array([3, -1, 2], np.int64)},
            ["N", 3, 2],
        ),
        (  # [3N, 2] -> [3, 2N] -> [2N, 3]: N merged with the 2 -> [N, 6]
            [
                helper.make_node("Reshape", ["s", "shape"], ["r"]),
                helper.make_node("Transpose", ["r"], ["t"]),
                helper.make_node("Reshape", ["t", "back"], ["y"]),
            ],
            {"shape": np.array([3, -1], np.int64), "back": np.array([-1, 6], np.int64)},
            ["N", 6],
        ),
    ]
    for tail, inits, shape in cases:
        m = _model(tail, inits, shape)
        (want,) = ort_run(m, {"x": x})
        got = gc.from_onnx(m).compile().predict(x)
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)


def test_concat_along_n_to_an_output_is_refused_naming_the_layout() -> None:
    m = _model([helper.make_node("Identity", ["s"], ["y"])], {}, None)
    with pytest.raises(gc.OnnxError, match=r"merges the batch dimension N with other axes"):
        gc.from_onnx(m)


def test_scikit_learn_qda_matches_onnxruntime() -> None:
    da = pytest.importorskip("sklearn.discriminant_analysis")
    skl2onnx = pytest.importorskip("skl2onnx")
    rng = np.random.default_rng(0)
    x = rng.normal(size=(120, 5)).astype(np.float32)
    s = x @ rng.normal(size=5)
    c = (s > 0).astype(int) + (s > 1)
    est = da.QuadraticDiscriminantAnalysis().fit(x, c)
    m = skl2onnx.to_onnx(est, x[:1], options={"zipmap": False})
    label, prob = ort_run(m, {"X": x})
    got = gc.from_onnx(m).compile().predict(x)
    # ArrayFeatureExtractor of 1-D labels: [1, N], as ONNX Runtime gives it
    assert got["label"].shape == label.shape == (1, 120) and got["label"].dtype == label.dtype
    np.testing.assert_array_equal(got["label"], label)
    np.testing.assert_array_equal(got["label"].ravel(), est.predict(x))
    np.testing.assert_allclose(got["probabilities"], prob, rtol=1e-5, atol=1e-6)
