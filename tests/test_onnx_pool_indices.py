"""MaxPool's Indices output and MaxUnpool (graphc/onnx_import_pool.py) against ONNX Runtime:
torch's MaxPool{1,2,3}d(return_indices=True) exports (the Indices less a 1x1 MaxPool's, torch's
per-plane indices), hand-built MaxPool -> MaxUnpool pairs (windows that tile the plane, a
remainder the pool drops, overlapping padded windows, 1-D and 3-D), the gradient through the
pair (central differences), and the refusals (Indices read otherwise, MaxUnpool of indices
from elsewhere). Before, every such model was refused ("MaxPool's Indices output is not
supported"; MaxUnpool "not supported by graphc")."""

from __future__ import annotations

import os

import numpy as np
import pytest
from onnx_models import make_model

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
from onnx import helper, numpy_helper

import graphc as gc

N = helper.make_node
DATA = os.path.join(os.path.dirname(__file__), "data", "onnx")


def _ort(m, feeds):
    src = m if isinstance(m, str) else m.SerializeToString()
    return ort.InferenceSession(src, providers=["CPUExecutionProvider"]).run(None, feeds)


def _predict(m, feeds):
    got = gc.from_onnx(m).compile().predict(feeds)
    return list(got.values()) if isinstance(got, dict) else [got]


def _ties(x):
    """Whole numbers of a few values: windows with equal maxima (the first one is the index)."""
    return np.round(x * 1.5).astype(np.float32)


@pytest.mark.parametrize("name", ["1d", "2d", "2d_overlap", "3d"])
def test_torch_max_pool_return_indices(name) -> None:
    path = os.path.join(DATA, f"poolidx_ts_{name}_17.onnx")
    shape = {"1d": (3, 9), "2d": (3, 6, 8), "2d_overlap": (3, 7, 6), "3d": (3, 4, 4, 6)}[name]
    rng = np.random.default_rng(1)
    for x in (
        rng.standard_normal((4, *shape)).astype(np.float32),
        _ties(rng.standard_normal((1, *shape))),
    ):
        want = _ort(path, {"x": x})
        got = _predict(path, {"x": x})
        np.testing.assert_allclose(got[0], want[0], rtol=1e-6, atol=1e-6)
        np.testing.assert_array_equal(got[1], want[1])


def _unpool_model(kernel, strides, pads, spatial, out_spatial=None, channels=3, batch=2):
    nsp = len(kernel)
    kw = dict(kernel_shape=kernel, strides=strides, pads=pads)
    inputs = ["yw", "i"] + (["osh"] if out_spatial else [])
    inits = [
        numpy_helper.from_array(
            np.linspace(0.5, 1.5, channels, dtype=np.float32).reshape(1, channels, *[1] * nsp), "w"
        )
    ]
    if out_spatial:
        inits.append(
            numpy_helper.from_array(np.array([batch, channels, *out_spatial], np.int64), "osh")
        )
    nodes = [
        N("MaxPool", ["x"], ["y", "i"], **kw),
        N("Mul", ["y", "w"], ["yw"]),
        N("MaxUnpool", inputs, ["u"], **kw),
    ]
    return make_model(nodes, [("x", ["N", channels, *spatial])], ["u", "y"], inits)


CASES = {
    "tiled": ([2, 2], [2, 2], [0, 0, 0, 0], (6, 8), None),
    "tiled_remainder": ([2, 2], [2, 2], [0, 0, 0, 0], (7, 9), (7, 9)),
    "tiled_3x2": ([3, 2], [3, 2], [0, 0, 0, 0], (6, 8), None),
    "overlap_pads": ([3, 3], [2, 2], [1, 1, 1, 1], (6, 8), (6, 8)),
    "1d": ([2], [2], [0, 0], (10,), None),
    "3d": ([2, 2, 2], [2, 2, 2], [0] * 6, (4, 4, 6), None),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_max_unpool_of_max_pool_as_onnxruntime(case) -> None:
    kernel, strides, pads, spatial, out_spatial = CASES[case]
    m = _unpool_model(kernel, strides, pads, spatial, out_spatial)
    rng = np.random.default_rng(2)
    for x in (
        rng.standard_normal((2, 3, *spatial)).astype(np.float32),
        _ties(rng.standard_normal((2, 3, *spatial))),
    ):
        want = _ort(m, {"x": x})
        got = _predict(m, {"x": x})
        for g, w in zip(got, want):
            np.testing.assert_allclose(g, w, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("case", ["tiled", "overlap_pads"])
def test_gradient_through_max_unpool(case) -> None:
    """d/dw of sum(v * MaxUnpool(MaxPool(x) * w)) (w one scale per channel), against central
    differences of ONNX Runtime's forward pass (the loss is linear in w)."""
    kernel, strides, pads, spatial, out_spatial = CASES[case]
    m = _unpool_model(kernel, strides, pads, spatial, out_spatial)
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2, 3, *spatial)).astype(np.float32)
    v = rng.standard_normal((3, *spatial)).astype(np.float32)
    w0 = numpy_helper.to_array(next(t for t in m.graph.initializer if t.name == "w"))
    imp = gc.from_onnx(m, trainable={"w"}, outputs=["u"])
    (u,) = imp.outputs
    grads = imp.compile(gc.sum(u * gc.constant(v)), gc.SGD(0.1)).gradients({"x": x})
    got = next(g for n, g in grads.items() if n.endswith("w"))

    def f(w) -> float:
        mm = onnx.ModelProto()
        mm.CopyFrom(m)
        for t in mm.graph.initializer:
            if t.name == "w":
                t.CopyFrom(numpy_helper.from_array(w.astype(np.float32), "w"))
        return float((_ort(mm, {"x": x})[0].astype(np.float64) * v).sum())

    want = np.zeros_like(w0, dtype=np.float64)
    for c in range(3):
        step = np.zeros_like(w0)
        step.reshape(-1)[c] = 0.25
        want.reshape(-1)[c] = (f(w0 + step) - f(w0 - step)) / 0.5
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


def test_refusals_name_the_node_and_the_reason() -> None:
    """The Indices read by another operator (a Cast: its row term would be lost), as a graph
    output, MaxUnpool of constant indices (their row term is a fixed batch's)."""
    pool = N("MaxPool", ["x"], ["y", "i"], kernel_shape=[2, 2], strides=[2, 2])
    m = make_model([pool, N("Cast", ["i"], ["f"], to=1, name="c")], [("x", ["N", 1, 4, 4])], ["f"])
    with pytest.raises(gc.OnnxError, match=r"node 1 'c' \(Cast.*batch row n"):
        gc.from_onnx(m)
    m = make_model([pool], [("x", ["N", 2000, 100, 100])], ["y", "i"])  # C * P past 2**24
    with pytest.raises(gc.OnnxError, match=r"output 'i' holds MaxPool's Indices.*C \* P"):
        gc.from_onnx(m)
    un = N("MaxUnpool", ["x", "j"], ["u"], kernel_shape=[2, 2], strides=[2, 2], name="un")
    j = numpy_helper.from_array(np.array([[[[0, 3], [9, 14]]]], np.int64), "j")
    m = make_model([un], [("x", ["N", 1, 2, 2])], ["u"], [j])
    with pytest.raises(gc.OnnxError, match=r"'un' \(MaxUnpool.*not a MaxPool's Indices output"):
        gc.from_onnx(m)


@pytest.mark.parametrize(
    "spatial, kw",
    [
        ((6, 8), dict(kernel_shape=[2, 2], strides=[2, 2])),
        ((7, 6), dict(kernel_shape=[3, 3], strides=[2, 1], pads=[1, 1, 1, 1], storage_order=1)),
        ((9,), dict(kernel_shape=[3], strides=[2], ceil_mode=1)),
        ((4, 4, 6), dict(kernel_shape=[2, 2, 3], strides=[2, 2, 3])),
    ],
)
def test_indices_as_a_graph_output_are_onnxruntime_s(spatial, kw) -> None:
    """MaxPool's Indices, the flat positions (n * C + c) * P + p, as a graph output: int64 and
    equal to ONNX Runtime's for every row (predict in blocks of 2 rows: the row term counts
    from the first row of the whole call), ties included; the maxima as before."""
    from onnx import TensorProto

    pool = N("MaxPool", ["x"], ["y", "i"], **kw)
    g = helper.make_graph(
        [pool],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, *spatial])],
        [
            helper.make_tensor_value_info("y", TensorProto.FLOAT, None),
            helper.make_tensor_value_info("i", TensorProto.INT64, None),
        ],
    )
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 9
    rng = np.random.default_rng(7)
    model = gc.from_onnx(m).compile()
    for x in (rng.standard_normal((5, 3, *spatial)), _ties(rng.standard_normal((4, 3, *spatial)))):
        x = x.astype(np.float32)
        want = _ort(m, {"x": x})
        got = model.predict(x, batch_size=2)
        np.testing.assert_allclose(got["y"], want[0], rtol=1e-6, atol=1e-6)
        assert got["i"].dtype == np.int64
        np.testing.assert_array_equal(got["i"], want[1])
    import pickle

    again = pickle.loads(pickle.dumps(model)).predict(x)  # the row term travels with it
    np.testing.assert_array_equal(again["i"], want[1])
