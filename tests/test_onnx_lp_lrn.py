"""ONNX LpPool, GlobalLpPool and LRN (the ONNX model zoo's AlexNet, CaffeNet and GoogLeNet
normalize with LRN; torch's nn.LPPool1d/2d and F.local_response_norm export LpPool and LRN),
against ONNX Runtime, ONNX's formula in float64 where ONNX Runtime refuses a case the spec
defines (an even LRN size; onnx.reference's LRN loops over the batch axis instead of the
channels, so it sums nothing for channels >= N), and the gradient of LRN against central differences of a float64 numpy forward.
Before, the three operators were refused ('not supported by graphc')."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import numeric_grad

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
from onnx import TensorProto, helper

import graphc as gc

N = helper.make_node


def _model(nodes, outs, shape, opset: int = 19):
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", *shape])
    ys = [helper.make_tensor_value_info(o, TensorProto.FLOAT, None) for o in outs]
    m = helper.make_model(
        helper.make_graph(nodes, "g", [x], ys), opset_imports=[helper.make_opsetid("", opset)]
    )
    m.ir_version = 9
    return m


def _compare(m, outs, x, want) -> None:
    got = gc.from_onnx(m).compile().predict(x)
    got = got if isinstance(got, dict) else {outs[0]: got}
    for name, w in zip(outs, want):
        np.testing.assert_allclose(np.asarray(got[name]), w, rtol=2e-5, atol=1e-5, err_msg=name)


POOLS = [  # attributes of LpPool
    {"kernel_shape": [2, 2], "p": 1},
    {"kernel_shape": [2, 2]},  # p = 2
    {"kernel_shape": [2, 2], "p": 3},
    {"kernel_shape": [3, 2], "pads": [1, 0, 1, 1], "strides": [2, 2]},
    {"kernel_shape": [2, 2], "dilations": [1, 2], "ceil_mode": 1, "strides": [2, 2]},
    {"kernel_shape": [2, 3], "auto_pad": "SAME_UPPER", "p": 1},
]


def test_lp_pool_and_global_lp_pool_match_onnxruntime() -> None:
    """LpPool's p-norm windows (p 1, 2, 3; pads add 0; strides, dilations, ceil_mode, SAME)
    and GlobalLpPool's p-norm over the spatial axes."""
    nodes, outs = [], []
    for k, attrs in enumerate(POOLS):
        nodes.append(N("LpPool", ["x"], [f"lp{k}"], **attrs))
        outs.append(f"lp{k}")
    for p in (1, 2, 3):
        nodes.append(N("GlobalLpPool", ["x"], [f"g{p}"], p=p))
        outs.append(f"g{p}")
    m = _model(nodes, outs, (3, 4, 5))
    x = np.random.default_rng(0).standard_normal((2, 3, 4, 5)).astype(np.float32)
    sess = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
    _compare(m, outs, x, sess.run(None, {"x": x}))


def test_lrn_matches_onnxruntime_and_the_reference() -> None:
    """LRN over 7 channels: odd sizes 1 to 9 (a window past every channel) against ONNX
    Runtime; the even sizes ONNX Runtime refuses against ONNX's formula in float64 (the
    window's extra channel after c, ceil((size - 1) / 2))."""
    x = np.random.default_rng(1).standard_normal((2, 7, 3, 4)).astype(np.float32)
    attrs = {"alpha": 0.01, "beta": 0.75, "bias": 2.0}
    odd = [N("LRN", ["x"], [f"o{s}"], size=s, **attrs) for s in (1, 3, 5, 9)]
    odd.append(N("LRN", ["x"], ["dflt"], size=5))
    outs = [n.output[0] for n in odd]
    m = _model(odd, outs, (7, 3, 4))
    sess = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
    _compare(m, outs, x, sess.run(None, {"x": x}))
    even = [N("LRN", ["x"], [f"e{s}"], size=s, **attrs) for s in (2, 4)]
    m = _model(even, ["e2", "e4"], (7, 3, 4))
    want = [_lrn64(x.astype(np.float64), s, **attrs) for s in (2, 4)]
    _compare(m, ["e2", "e4"], x, want)


def _lrn64(x: np.ndarray, size: int, alpha: float, beta: float, bias: float = 1.0) -> np.ndarray:
    """ONNX's LRN formula in float64 (x [N, C, ...])."""
    c = x.shape[1]
    sq = np.zeros_like(x)
    for ch in range(c):
        lo, hi = max(0, ch - (size - 1) // 2), min(c - 1, ch + (size - 1) - (size - 1) // 2)
        sq[:, ch] = (x[:, lo : hi + 1] ** 2).sum(axis=1)
    return x / (bias + alpha / size * sq) ** beta


def test_lrn_gradient_matches_central_differences() -> None:
    """d/dx of sum(u * LRN(x * W)) with respect to W (a trainable [C, H, W] weight)."""
    rng = np.random.default_rng(2)
    x = rng.standard_normal((1, 4, 2, 3)).astype(np.float32)
    w0 = rng.standard_normal((4, 2, 3)).astype(np.float32)
    u = rng.standard_normal((4, 2, 3)).astype(np.float32)
    g = helper.make_graph(
        [N("Mul", ["x", "W"], ["h"]), N("LRN", ["h"], ["y"], size=3, alpha=0.5, beta=0.75)],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4, 2, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [onnx.numpy_helper.from_array(w0, "W")],
    )
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 19)])
    imp = gc.from_onnx(m, trainable={"W"})
    model = imp.compile(gc.sum(imp.outputs[0] * gc.constant(u)), gc.SGD(0.1))
    grad = next(iter(model.gradients(x).values()))

    def f(w: np.ndarray) -> float:
        return float((u * _lrn64(x.astype(np.float64) * w, 3, 0.5, 0.75, 1.0)).sum())

    np.testing.assert_allclose(grad, numeric_grad(f, [w0], 0), rtol=1e-4, atol=1e-5)
