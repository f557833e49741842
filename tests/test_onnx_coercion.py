"""Softmax, LogSoftmax and Hardmax before opset 13 read their input as 2-D
[prod(:axis), prod(axis:)] (ONNX's coercion; axis 1 by default): the normalization runs over
every axis from ``axis`` on, not over ``axis`` alone. Checked against ONNX Runtime with ties
(Hardmax's first maximum in row-major order of the whole block). Before, Hardmax refused any
axis but the last ('graphc supports the last axis only')."""

from __future__ import annotations

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
from onnx import TensorProto, helper

import graphc as gc


def test_legacy_softmax_family_reads_the_value_as_2d() -> None:
    nodes, outs = [], []
    for op in ("Hardmax", "Softmax", "LogSoftmax"):
        for axis in (None, 2, -1, -3):
            attrs = {} if axis is None else {"axis": axis}
            name = f"{op}_{'default' if axis is None else axis}".replace("-", "m")
            nodes.append(helper.make_node(op, ["x"], [name], **attrs))
            outs.append(name)
    g = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 4, 5])],
        [helper.make_tensor_value_info(o, TensorProto.FLOAT, None) for o in outs],
    )
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 11)])
    m.ir_version = 6
    # whole numbers: ties inside a block, the first (row-major) taking Hardmax's 1
    x = np.round(np.random.default_rng(0).standard_normal((3, 3, 4, 5)) * 1.5).astype(np.float32)
    sess = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
    got = gc.from_onnx(m).compile().predict(x)
    for name, want in zip(outs, sess.run(None, {"x": x})):
        np.testing.assert_allclose(got[name], want, rtol=1e-5, atol=1e-6, err_msg=name)
