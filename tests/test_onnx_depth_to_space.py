"""DepthToSpace (both modes; torch's nn.PixelShuffle exports mode CRD) and SpaceToDepth,
composed of graphc's slice / reshape / concat: values against ONNX Runtime at blocksizes 2 and
3, batches 1 and 3, opsets 9, 11, 13 and 28; a tiny ESPCN super-resolution net as torch's exporter
writes it (tests/data/onnx/torch_espcn_*.onnx); gradients against central differences of a
float64 numpy forward; refusals naming the node. A few small compiles (~3 s)."""

from __future__ import annotations

import os

import numpy as np
import pytest
from conftest import numeric_grad

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
from onnx import TensorProto, helper, numpy_helper

import graphc as gc
from graphc.ir.errors import OnnxError

DATA = os.path.join(os.path.dirname(__file__), "data", "onnx")


def _model(nodes, inputs, outputs, inits=(), opset: int = 13):
    g = helper.make_graph(nodes, "g", inputs, outputs, list(inits))
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
    m.ir_version = 10 if opset >= 21 else 8
    return m


def _vi(name: str, shape):
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, shape)


def _ort(m, feeds):
    sess = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, feeds)


def _d2s_ref(x: np.ndarray, b: int, mode: str) -> np.ndarray:
    """DepthToSpace by its element formula (not the spec's reshape / transpose):
    y[n, c, h*b + i, w*b + j] = x[n, k, h, w], k = (i*b + j)*C' + c (DCR) or c*b*b + i*b + j."""
    n, c, h, w = x.shape
    co = c // (b * b)
    y = np.empty((n, co, h * b, w * b), x.dtype)
    for ch in range(co):
        for i in range(b):
            for j in range(b):
                k = (i * b + j) * co + ch if mode == "DCR" else ch * b * b + i * b + j
                y[:, ch, i::b, j::b] = x[:, k]
    return y


def _s2d_ref(x: np.ndarray, b: int, mode: str = "DCR") -> np.ndarray:
    """SpaceToDepth by its element formula: y[n, k, h, w] = x[n, c, h*b + i, w*b + j],
    k = (i*b + j)*C + c (DCR) or c*b*b + i*b + j (CRD)."""
    n, c, h, w = x.shape
    y = np.empty((n, c * b * b, h // b, w // b), x.dtype)
    for ch in range(c):
        for i in range(b):
            for j in range(b):
                k = (i * b + j) * c + ch if mode == "DCR" else ch * b * b + i * b + j
                y[:, k] = x[:, ch, i::b, j::b]
    return y


@pytest.mark.parametrize("opset", [9, 11, 13, 28])
def test_depth_to_space_and_space_to_depth_match_onnxruntime(opset) -> None:
    """Every mode the opset defines (opset 9: DCR only, no mode attribute; SpaceToDepth's mode
    from opset 28), blocksizes 1, 2
    and 3, batches 1 and 3 through one compiled model, and of Constants (folded at import
    time); also the element formulas in numpy."""
    nodes = [
        helper.make_node("DepthToSpace", ["x"], ["d2"], blocksize=2),
        helper.make_node("DepthToSpace", ["x"], ["d3"], blocksize=3),
        helper.make_node("DepthToSpace", ["x"], ["d1"], blocksize=1),
        helper.make_node("SpaceToDepth", ["z"], ["s2"], blocksize=2),
        helper.make_node("SpaceToDepth", ["z"], ["s3"], blocksize=3),
    ]
    if opset >= 11:
        nodes += [
            helper.make_node("DepthToSpace", ["x"], ["c2"], blocksize=2, mode="CRD"),
            helper.make_node("DepthToSpace", ["x"], ["c3"], blocksize=3, mode="CRD"),
            helper.make_node("DepthToSpace", ["x"], ["e2"], blocksize=2, mode="DCR"),
        ]
    if opset >= 28:  # SpaceToDepth's mode (opset 28)
        nodes += [
            helper.make_node("SpaceToDepth", ["z"], ["t2"], blocksize=2, mode="CRD"),
            helper.make_node("SpaceToDepth", ["z"], ["t3"], blocksize=3, mode="CRD"),
        ]
    # of Constants: folded at import time (numpy), then added to a computed value
    rng = np.random.default_rng(opset)
    k = rng.standard_normal((1, 36, 2, 3)).astype(np.float32)
    kz = rng.standard_normal((1, 2, 6, 12)).astype(np.float32)
    mode = {"mode": "CRD"} if opset >= 11 else {}
    nodes += [
        helper.make_node("Constant", [], ["k"], value=numpy_helper.from_array(k)),
        helper.make_node("DepthToSpace", ["k"], ["kd"], blocksize=2, **mode),
        helper.make_node("Add", ["d2", "kd"], ["fd"]),
        helper.make_node("Constant", [], ["kz"], value=numpy_helper.from_array(kz)),
        helper.make_node("SpaceToDepth", ["kz"], ["ks"], blocksize=3),
        helper.make_node("Add", ["s3", "ks"], ["fs"]),
    ]
    outs = [n.output[0] for n in nodes if n.output[0] not in ("k", "kz", "kd", "ks")]
    inputs = [_vi("x", ["N", 36, 2, 3]), _vi("z", ["N", 2, 6, 12])]
    m = _model(nodes, inputs, [_vi(o, None) for o in outs], opset=opset)
    compiled = gc.from_onnx(m).compile()
    for batch in (1, 3):
        x = rng.standard_normal((batch, 36, 2, 3)).astype(np.float32)
        z = rng.standard_normal((batch, 2, 6, 12)).astype(np.float32)
        want = _ort(m, {"x": x, "z": z})
        got = compiled.predict({"x": x, "z": z})
        for o, w in zip(outs, want):
            np.testing.assert_array_equal(np.asarray(got[o]), w, err_msg=f"{o} batch {batch}")
        for o, b, mode in [("d2", 2, "DCR"), ("d3", 3, "DCR"), ("c2", 2, "CRD"), ("c3", 3, "CRD")]:
            if o in outs:
                np.testing.assert_array_equal(np.asarray(got[o]), _d2s_ref(x, b, mode), err_msg=o)
        for o, b, mode in [("s2", 2, "DCR"), ("s3", 3, "DCR"), ("t2", 2, "CRD"), ("t3", 3, "CRD")]:
            if o in outs:
                np.testing.assert_array_equal(np.asarray(got[o]), _s2d_ref(z, b, mode), err_msg=o)


def test_gradients_through_both_operators_match_central_differences() -> None:
    """d loss / d w of loss = sum(r * SpaceToDepth_3(DepthToSpace_2,CRD(x * w))): every
    element moved exactly once, so the gradient is r moved back times x."""
    rng = np.random.default_rng(7)
    x = rng.standard_normal((2, 8, 3, 3)).astype(np.float32)
    w = rng.standard_normal((1, 8, 3, 3)).astype(np.float32)
    nodes = [
        helper.make_node("Mul", ["x", "w"], ["xw"]),
        helper.make_node("DepthToSpace", ["xw"], ["d"], blocksize=2, mode="CRD"),
        helper.make_node("SpaceToDepth", ["d"], ["y"], blocksize=3),
    ]
    m = _model(
        nodes, [_vi("x", ["N", 8, 3, 3])], [_vi("y", None)], [numpy_helper.from_array(w, "w")]
    )
    imp = gc.from_onnx(m)
    r = rng.standard_normal((18, 2, 2)).astype(np.float32)
    loss = gc.sum(gc.mul(imp.outputs[0], gc.constant(r)))
    model = gc.compile(imp.outputs, loss, gc.SGD(lr=0.1), name="d2s_grad")
    np.testing.assert_array_equal(model.predict(x), _ort(m, {"x": x})[0])
    got = model.gradients(x)[imp.params["w"].name]

    def forward(wv):
        return np.sum(_s2d_ref(_d2s_ref(x.astype(np.float64) * wv, 2, "CRD"), 3) * r)

    np.testing.assert_allclose(got, numeric_grad(forward, [w.astype(np.float64)], 0), rtol=1e-4)


@pytest.mark.parametrize("opset", [13, 17])
def test_torch_pixel_shuffle_espcn_matches_onnxruntime(opset) -> None:
    """An ESPCN-like head (Linear, per-channel scale and shift, Tanh; no Conv: the file
    predates graphc's Conv import) -> nn.PixelShuffle(2) (DepthToSpace, mode CRD) as torch's TorchScript
    exporter writes it (dynamic batch), at batches 1 and 3."""
    m = onnx.load(os.path.join(DATA, f"torch_espcn_{opset}.onnx"))
    assert [n.op_type for n in m.graph.node][-1] == "DepthToSpace"
    compiled = gc.from_onnx(m).compile()
    rng = np.random.default_rng(opset)
    for batch in (1, 3):
        x = rng.standard_normal((batch, 1, 5, 6)).astype(np.float32)
        want = _ort(m, {"x": x})[0]
        assert want.shape == (batch, 1, 10, 12)
        np.testing.assert_allclose(compiled.predict(x), want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    "op, attrs, shape, msg",
    [
        ("DepthToSpace", {"blocksize": 3}, ["N", 8, 2, 2], "not a multiple of blocksize"),
        ("DepthToSpace", {"blocksize": 2, "mode": "XYZ"}, ["N", 8, 2, 2], "mode 'XYZ'"),
        ("DepthToSpace", {"blocksize": 2}, ["N", 8, 4], r"rank 4\) only"),
        ("DepthToSpace", {"blocksize": 0}, ["N", 8, 2, 2], "blocksize 0"),
        ("SpaceToDepth", {"blocksize": 4}, ["N", 2, 8, 6], "multiples of blocksize 4"),
        ("SpaceToDepth", {"blocksize": 2}, ["N", 2, 4, 4, 4], r"rank 4\) only"),
    ],
)
def test_refusals_name_the_node_and_the_reason(op, attrs, shape, msg) -> None:
    m = _model([helper.make_node(op, ["x"], ["y"], **attrs)], [_vi("x", shape)], [_vi("y", None)])
    with pytest.raises(OnnxError, match=msg) as e:
        gc.from_onnx(m)
    assert f"({op}, opset 13)" in str(e.value)
