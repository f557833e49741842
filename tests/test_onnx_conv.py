"""ONNX Conv and ConvTranspose import (every attribute: auto_pad, kernel_shape, strides, pads,
dilations, group, B; ConvTranspose's output_padding and output_shape) against ONNX Runtime;
torch's exports of a LeNet-style CNN, a ResNet basic block, 1-D convolutions and a
ConvTranspose2d (tests/data/onnx/torch_{lenet,resblock,seq1d,convt}_*.onnx, made by
export_torch.py) against ONNX Runtime; graphc -> ONNX -> ONNX Runtime; refusals naming the
node. A few small compiles (~5 s)."""

from __future__ import annotations

import os

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
from onnx import TensorProto, helper, numpy_helper

import graphc as gc
from graphc.ir.errors import OnnxError

DATA = os.path.join(os.path.dirname(__file__), "data", "onnx")


def _model(nodes, inputs, outputs, inits=(), opset: int = 13):
    g = helper.make_graph(nodes, "g", inputs, outputs, list(inits))
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
    m.ir_version = 8
    return m


def _vi(name: str, shape):
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, shape)


def _ort(m, feeds):
    sess = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, feeds)


# (op, x shape without batch, W shape, attrs, with bias)
CASES = [
    ("Conv", (3, 9, 8), (4, 3, 3, 3), {"auto_pad": "SAME_UPPER", "strides": [2, 2]}, True),
    ("Conv", (3, 9, 8), (4, 3, 2, 3), {"auto_pad": "SAME_LOWER", "strides": [2, 1]}, False),
    ("Conv", (3, 9, 8), (4, 3, 3, 3), {"auto_pad": "VALID", "dilations": [2, 1]}, True),
    ("Conv", (4, 6, 6), (8, 2, 3, 3), {"group": 2, "pads": [1, 0, 2, 1]}, True),
    (
        "Conv",
        (4, 6, 6),
        (4, 1, 3, 3),
        {"group": 4, "pads": [1, 1, 1, 1], "kernel_shape": [3, 3]},
        True,
    ),
    ("Conv", (2, 13), (3, 2, 4), {"strides": [3], "pads": [2, 1], "dilations": [2]}, True),
    (
        "Conv",
        (2, 5, 4, 6),
        (3, 2, 2, 3, 2),
        {"strides": [1, 2, 2], "pads": [1, 0, 1, 0, 1, 1]},
        True,
    ),
    (
        "ConvTranspose",
        (3, 4, 5),
        (3, 2, 3, 3),
        {"strides": [2, 2], "pads": [1, 1, 1, 1], "output_padding": [1, 0]},
        True,
    ),
    ("ConvTranspose", (4, 4, 5), (4, 3, 3, 2), {"group": 2, "strides": [2, 3]}, False),
    (
        "ConvTranspose",
        (3, 4, 5),
        (3, 2, 3, 3),
        {"strides": [2, 2], "output_shape": [9, 10], "auto_pad": "SAME_UPPER"},
        True,
    ),
    ("ConvTranspose", (3, 4, 5), (3, 2, 4, 3), {"strides": [2, 2], "auto_pad": "SAME_LOWER"}, True),
    ("ConvTranspose", (2, 7), (2, 3, 4), {"strides": [2], "dilations": [2], "pads": [1, 2]}, True),
    # SAME with a kernel span below the stride (D * stride past the last window): ONNX Runtime
    # keeps the natural size (graphc padded to D * stride: 27 x 8 for 25 x 8)
    (
        "ConvTranspose",
        (1, 9, 4),
        (1, 2, 1, 3),
        {"strides": [3, 2], "dilations": [1, 2], "auto_pad": "SAME_UPPER"},
        False,
    ),
    ("ConvTranspose", (2, 5), (2, 2, 2), {"strides": [3], "auto_pad": "SAME_LOWER"}, True),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c[0]}-{len(c[1]) - 1}d-{sorted(c[3])}")
def test_conv_and_conv_transpose_match_onnxruntime(case) -> None:
    op, xs, ws, attrs, bias = case
    rng = np.random.default_rng(len(xs) + len(attrs))
    w = rng.standard_normal(ws).astype(np.float32)
    channels = ws[0] if op == "Conv" else ws[1] * attrs.get("group", 1)
    inits = [numpy_helper.from_array(w, "W")]
    ins = ["x", "W"]
    if bias:
        inits.append(numpy_helper.from_array(rng.standard_normal(channels).astype(np.float32), "B"))
        ins.append("B")
    node = helper.make_node(op, ins, ["y"], **attrs)
    m = _model([node], [_vi("x", ["batch", *xs])], [_vi("y", None)], inits)
    compiled = gc.from_onnx(m).compile()
    for batch in (1, 3):
        x = rng.standard_normal((batch, *xs)).astype(np.float32)
        want = _ort(m, {"x": x})[0]
        np.testing.assert_allclose(compiled.predict(x), want, rtol=1e-5, atol=1e-5)


def test_weights_computed_in_the_graph() -> None:
    """W = W0 * scale (a weight-normalized filter): the conv reads a value of the graph."""
    rng = np.random.default_rng(7)
    w0 = rng.standard_normal((3, 2, 3, 3)).astype(np.float32)
    s = rng.uniform(0.5, 2, (3, 1, 1, 1)).astype(np.float32)
    nodes = [
        helper.make_node("Mul", ["W0", "s"], ["W"]),
        helper.make_node("Conv", ["x", "W"], ["y"], pads=[1, 1, 1, 1]),
    ]
    inits = [numpy_helper.from_array(w0, "W0"), numpy_helper.from_array(s, "s")]
    m = _model(nodes, [_vi("x", ["N", 2, 5, 5])], [_vi("y", None)], inits)
    x = rng.standard_normal((2, 2, 5, 5)).astype(np.float32)
    got = gc.from_onnx(m).compile().predict(x)
    np.testing.assert_allclose(got, _ort(m, {"x": x})[0], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", ["lenet", "resblock", "seq1d", "convt"])
@pytest.mark.parametrize("opset", [13, 17])
def test_torch_exports_match_onnxruntime(name, opset) -> None:
    m = onnx.load(os.path.join(DATA, f"torch_{name}_{opset}.onnx"))
    ops = {n.op_type for n in m.graph.node}
    assert ops & {"Conv", "ConvTranspose"}, ops
    shape = [d.dim_value for d in m.graph.input[0].type.tensor_type.shape.dim[1:]]
    compiled = gc.from_onnx(m).compile()
    rng = np.random.default_rng(opset)
    for batch in (1, 3):
        x = rng.standard_normal((batch, *shape)).astype(np.float32)
        want = _ort(m, {"x": x})[0]
        np.testing.assert_allclose(compiled.predict(x), want, rtol=1e-4, atol=1e-5)


def test_graphc_conv_model_through_onnxruntime(tmp_path) -> None:
    """conv, bias, relu, conv_transpose and a grouped conv written by graphc's exporter: ONNX
    Runtime computes graphc's outputs."""
    from graphc.dsl import apply

    x = gc.input("x", ("N", 2, 7, 6))
    w1 = gc.param("w1", (4, 2, 3, 3))
    b1 = gc.param("b1", (4, 1, 1), init="uniform")
    h = gc.relu(apply("conv", x, w1, strides=(2, 1), pads=(1, 1, 1, 0)) + b1)
    w2 = gc.param("w2", (4, 2, 2, 2))
    h2 = apply("conv_transpose", h, w2, strides=(2, 2), groups=2, output_padding=(1, 0))
    w3 = gc.param("w3", (6, 2, 1, 3))
    y = apply("conv", h2, w3, groups=2, dilations=(1, 2))
    model = gc.compile(y)
    path = str(tmp_path / "conv.onnx")
    model.to_onnx(path)
    m = onnx.load(path)
    onnx.checker.check_model(m, full_check=True)
    assert [n.op_type for n in m.graph.node].count("Conv") == 2
    xv = np.random.default_rng(1).standard_normal((3, 2, 7, 6)).astype(np.float32)
    np.testing.assert_allclose(_ort(m, {"x": xv})[0], model.predict(xv), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    "attrs, ws, bshape, msg",
    [
        ({"kernel_shape": [2, 2]}, (4, 3, 3, 3), None, r"kernel_shape \[2, 2\] differs"),
        ({}, (4, 2, 3, 3), None, "has 3 channels"),
        ({"group": 2}, (4, 3, 3, 3), None, "groups=2 must divide"),
        ({}, (4, 3, 3, 3), (3,), r"bias B \[3\] must be \[4\]"),
        ({}, (4, 3, 9, 3), None, "larger than the padded input"),
        ({"auto_pad": "SAME"}, (4, 3, 3, 3), None, "auto_pad 'SAME'"),
    ],
)
def test_refusals_name_the_node_and_the_reason(attrs, ws, bshape, msg) -> None:
    inits = [numpy_helper.from_array(np.ones(ws, np.float32), "W")]
    ins = ["x", "W"]
    if bshape:
        inits.append(numpy_helper.from_array(np.ones(bshape, np.float32), "B"))
        ins.append("B")
    node = helper.make_node("Conv", ins, ["y"], name="conv7", **attrs)
    m = _model([node], [_vi("x", ["N", 3, 6, 6])], [_vi("y", None)], inits)
    with pytest.raises(OnnxError, match=msg) as e:
        gc.from_onnx(m)
    assert "node 0 'conv7' (Conv, opset" in str(e.value)
