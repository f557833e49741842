"""ONNX DFT (opsets 17 and 20; graphc/onnx_import_dft.py) against ONNX Runtime: forward and
inverse, real and complex signals, one-sided (rfft, and its inverse back to a real signal),
a dft_length that zero-pads or truncates, the transform along an inner axis of a batch [N,
...]; the gradient against central differences. Before, 'operator DFT is not supported'."""

from __future__ import annotations

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
from onnx import TensorProto, helper, numpy_helper
from onnx_models import weight_gradient_check

import graphc as gc


def _model(shape, opset, axis, length=None, **attrs):
    inputs = ["x", "len" if length is not None else ""]
    inits = []
    if length is not None:
        inits.append(numpy_helper.from_array(np.array(length, np.int64), "len"))
    if opset >= 20:
        inputs.append("axis")
        inits.append(numpy_helper.from_array(np.array(axis, np.int64), "axis"))
    else:
        attrs["axis"] = axis
    while inputs[-1] == "":
        inputs.pop()
    g = helper.make_graph(
        [helper.make_node("DFT", inputs, ["y"], **attrs)],
        "dft",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", *shape])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        inits,
    )
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
    m.ir_version = 9
    return m


CASES = [
    # (signal shape after N, opset, axis, dft_length, attrs)
    ((16, 3, 1), 17, 1, None, {}),
    ((5, 8, 2), 20, 2, None, {"inverse": 1}),
    ((5, 8, 2), 17, -2, None, {}),
    ((12, 2, 1), 20, 1, None, {"onesided": 1}),
    ((7, 1), 20, -2, 12, {"onesided": 1}),  # zero-padded to 12
    ((9, 3, 2), 17, 1, 6, {}),  # truncated to 6
    ((7, 4, 2), 20, 1, None, {"inverse": 1, "onesided": 1}),  # 7 bins back to 12 samples
    ((6, 2), 17, 1, 11, {"inverse": 1, "onesided": 1}),  # an odd length
]


@pytest.mark.parametrize("shape, opset, axis, length, attrs", CASES)
def test_dft_matches_onnxruntime(shape, opset, axis, length, attrs) -> None:
    m = _model(shape, opset, axis, length, **attrs)
    x = np.random.default_rng(3).standard_normal((3, *shape)).astype(np.float32)
    sess = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
    (want,) = sess.run(None, {"x": x})
    got = gc.from_onnx(m).compile().predict(x)
    assert got.shape == want.shape
    scale = max(1.0, float(np.abs(want).max()))
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=2e-6 * scale)


def test_gradient_through_the_dft() -> None:
    """d/dw of sum(r * DFT(x * w)), w a trainable [8, 2] weight on the signal, against
    central differences of ONNX Runtime's forward (linear in w)."""
    m = _model((8, 2), 17, 1)
    g = m.graph
    g.node[0].input[0] = "xw"
    g.node.insert(0, helper.make_node("Mul", ["x", "w"], ["xw"]))
    w0 = np.linspace(-1.0, 1.5, 16, dtype=np.float32).reshape(8, 2)
    g.initializer.append(numpy_helper.from_array(w0, "w"))
    rng = np.random.default_rng(4)
    x = rng.standard_normal((2, 8, 2)).astype(np.float32)
    weight_gradient_check(m, {"x": x}, rng.standard_normal((8, 2)).astype(np.float32))


def test_refusals_name_the_node() -> None:
    with pytest.raises(gc.OnnxError, match=r"DFT.*may not be N or the last"):
        gc.from_onnx(_model((8, 2), 17, 0))
    with pytest.raises(gc.OnnxError, match=r"DFT.*must end in an axis of 1 \(real\) or 2"):
        gc.from_onnx(_model((8, 3), 17, 1))
