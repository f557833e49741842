"""Cases ONNX's node tests used to skip, as real exporters' files meet them: MatMul of two 1-D
values (a rank-0 dot product), compared with ONNX Runtime and with the node test cases' own
expected outputs (graphc.onnx_backend.run_case)."""

from __future__ import annotations

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper, numpy_helper
from test_onnx_ml import ort_run

import graphc as gc
from graphc.ir.errors import OnnxError
from graphc.onnx_backend import all_node_cases, run_case

F = TensorProto.FLOAT


def _model(nodes: list, inputs: list, outputs: list, inits: list = (), opset: int = 17):
    g = helper.make_graph(nodes, "skips", inputs, outputs, initializer=list(inits))
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
    m.ir_version = 8
    return m


def _cases(*names: str) -> list:
    found = {c.name: c for c in all_node_cases() if c.name in names}
    return [found[n] for n in names if n in found]


def test_matmul_of_two_vectors_is_their_dot_product() -> None:
    """MatMul of two 1-D values of the same length K: their dot product, a rank-0 value
    (numpy.matmul's rule), here of two weights scaling a batch; ONNX Runtime's numbers, and
    the node test test_matmul_1d_1d passes compiled."""
    rng = np.random.default_rng(0)
    u, v = rng.standard_normal(5).astype(np.float32), rng.standard_normal(5).astype(np.float32)
    m = _model(
        [
            helper.make_node("Mul", ["u", "two"], ["u2"]),
            helper.make_node("MatMul", ["u2", "v"], ["d"]),
            helper.make_node("Mul", ["x", "d"], ["y"]),
        ],
        [helper.make_tensor_value_info("x", F, ["N", 5])],
        [helper.make_tensor_value_info("y", F, ["N", 5])],
        [
            numpy_helper.from_array(u, "u"),
            numpy_helper.from_array(v, "v"),
            numpy_helper.from_array(np.float32(2.0), "two"),
        ],
    )
    model = gc.from_onnx(m).compile()
    x = rng.standard_normal((3, 5)).astype(np.float32)
    (want,) = ort_run(m, {"x": x})
    np.testing.assert_allclose(model.predict(x), want, rtol=1e-5, atol=1e-6)
    (case,) = _cases("test_matmul_1d_1d")
    assert run_case(case, "compile") == ("pass", "")


def test_matmul_of_two_batch_vectors_is_refused() -> None:
    """[N] with [N] would sum across the samples of a batch: refused, naming the node."""
    m = _model(
        [helper.make_node("MatMul", ["a", "b"], ["c"], name="dot")],
        [helper.make_tensor_value_info(k, F, ["N"]) for k in ("a", "b")],
        [helper.make_tensor_value_info("c", F, [])],
    )
    with pytest.raises(OnnxError, match=r"dot.*across samples"):
        gc.from_onnx(m)
