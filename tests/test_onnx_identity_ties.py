"""An initializer read through Identity (torch's TorchScript exporter writes ln.weight =
Identity(norm1.weight) for equal weights it deduplicates) is one trainable param: the file ties
the two reads, so the gradient is the sum over both (what torch gives one shared Parameter);
before, the Identity's output was folded into a frozen constant."""

from __future__ import annotations

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
from onnx import helper, numpy_helper
from onnx_models import make_model

import graphc as gc


def test_identity_of_a_trainable_initializer_ties_its_gradient() -> None:
    w = np.array([0.5, -1.25, 2.0], np.float32)
    nodes = [
        helper.make_node("Identity", ["w"], ["w2"]),  # TorchScript's deduplication
        helper.make_node("Mul", ["x", "w"], ["a"]),
        helper.make_node("Tanh", ["x"], ["t"]),
        helper.make_node("Mul", ["t", "w2"], ["b"]),
        helper.make_node("Add", ["a", "b"], ["y"]),
    ]
    m = make_model(nodes, [("x", ["N", 3])], ["y"], [numpy_helper.from_array(w, "w")])
    imp = gc.from_onnx(m)
    assert list(imp.params) == ["w"] and not imp.constants
    rng = np.random.default_rng(0)
    x = rng.standard_normal((5, 3)).astype(np.float32)
    r = rng.standard_normal(3).astype(np.float32)
    loss = gc.sum(gc.mul(imp.outputs[0], gc.constant(r)))
    model = imp.compile(loss, gc.SGD(0.1))
    want = ((x + np.tanh(x)) * r).astype(np.float64).sum(0)  # d/dw of sum((x w + tanh(x) w) r)
    np.testing.assert_allclose(model.gradients(x)["w"], want, rtol=1e-5, atol=1e-6)
