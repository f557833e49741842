"""One-graph ONNX models for the importer's tests (onnx.helper, float outputs, ir_version 9
so that the ONNX Runtime of the test environment loads them)."""

from __future__ import annotations

from typing import Any

from onnx import TensorProto, helper


def make_model(nodes: list, inputs: list, outs: list, inits: Any = (), opset: int = 17) -> Any:
    """A model of ``nodes``: inputs as (name, shape) (float) or (name, elem_type, shape);
    outputs ``outs`` declared float of unknown shape; ``inits`` the initializers."""
    values = [
        helper.make_tensor_value_info(i[0], TensorProto.FLOAT if len(i) == 2 else i[1], i[-1])
        for i in inputs
    ]
    outputs = [helper.make_tensor_value_info(o, TensorProto.FLOAT, None) for o in outs]
    g = helper.make_graph(nodes, "g", values, outputs, list(inits))
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
    m.ir_version = 9
    return m


def weight_gradient_check(m: Any, feeds: Any, r: Any, step: float = 0.25) -> None:
    """The gradient of sum(r * y) (y the model's one output, r broadcast over N) with respect
    to the model's last initializer 'w' (trainable), by graphc against central differences of
    ONNX Runtime's forward (exact for a y linear in w), within 1e-4."""
    import numpy as np
    import onnxruntime as ort
    from onnx import numpy_helper

    import graphc as gc

    init = m.graph.initializer[-1]
    w0 = numpy_helper.to_array(init).copy()
    imp = gc.from_onnx(m, trainable={init.name})
    (y,) = imp.outputs
    grads = imp.compile(gc.sum(y * gc.constant(r)), gc.SGD(0.1)).gradients(feeds)
    got = next(v for n, v in grads.items() if n.endswith(init.name))

    def f(w: Any) -> float:
        init.CopyFrom(numpy_helper.from_array(w.astype(np.float32), init.name))
        out = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
        return float((out.run(None, feeds)[0].astype(np.float64) * r).sum())

    want = np.zeros(w0.size)
    for i in range(w0.size):
        e = (np.arange(w0.size) == i).astype(np.float32).reshape(w0.shape) * step
        want[i] = (f(w0 + e) - f(w0 - e)) / (2 * step)
    np.testing.assert_allclose(got, want.reshape(w0.shape), rtol=1e-4, atol=1e-4)
