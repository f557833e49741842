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
