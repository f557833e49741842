"""torch's dynamo exporter's index decompositions, hand-built (onnx.helper) against ONNX Runtime.

- AdaptiveAvgPool2d / AdaptiveMaxPool2d to sizes that do not divide the input: Transpose
  bringing H and W first, GatherND whose indices [oh, kh, ow, kw, 2] are the outer product
  of two index tables (row windows x column windows), Transpose back (graphc: two Gathers of
  x in place; the Transposes moved N away from the first axis).
- as_strided on a batched tensor (torchvision's Swin head: permute, mean, as_strided):
  Reshape(x, [-1]) and Gather of Range(0, N) * S plus constant offsets (graphc: a gather of
  the same positions from each sample).
"""

from __future__ import annotations

import os

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
from onnx import helper, numpy_helper
from onnx_models import make_model

import graphc as gc
from graphc.ir.errors import OnnxError

DATA = os.path.join(os.path.dirname(__file__), "data", "onnx")


def _ort(m, feeds):
    sess = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, feeds)


def _i64(name, values):
    return numpy_helper.from_array(np.asarray(values, np.int64), name)


def _windows(size: int, out: int) -> np.ndarray:
    """Adaptive pooling's windows as torch's decomposition indexes them: [out, k] positions
    (start = floor(i * size / out), k the widest window; shorter ones repeat their last)."""
    starts = [i * size // out for i in range(out)]
    ends = [-(-(i + 1) * size // out) for i in range(out)]
    k = max(e - s for s, e in zip(starts, ends))
    return np.array([[min(s + t, e - 1) for t in range(k)] for s, e in zip(starts, ends)])


@pytest.mark.parametrize("w_first", [False, True])
def test_gathernd_of_two_index_tables_between_transposes(w_first: bool) -> None:
    # x [N, C, H, W]; GatherND reads (h, w) pairs ih[a, b], iw[c, d] (x's H and W brought
    # first, in either order), the result goes back to [N, C, ...] and is max-reduced over
    # the window axes. graphc refused it: "GatherND needs the value in its ONNX layout
    # [H, W, N, C]"
    h, w = 7, 9
    ih, iw = _windows(h, 3), _windows(w, 4)  # [3, 3] and [4, 3]
    if w_first:  # GatherND over [W, H, N, C]: pairs (w, h), the W table's axes first
        idx = np.stack(np.broadcast_arrays(iw[:, :, None, None], ih[None, None]), -1)
        perm1, perm2 = [3, 2, 0, 1], [4, 5, 2, 3, 0, 1]
    else:
        idx = np.stack(np.broadcast_arrays(ih[:, :, None, None], iw[None, None]), -1)
        perm1, perm2 = [2, 3, 0, 1], [4, 5, 0, 1, 2, 3]
    nodes = [
        helper.make_node("Transpose", ["x"], ["t"], perm=perm1),
        helper.make_node("GatherND", ["t", "idx"], ["g"]),
        helper.make_node("Transpose", ["g"], ["b"], perm=perm2),
        helper.make_node("ReduceMax", ["b", "axes"], ["y"], keepdims=0),
    ]
    axes = [3, 5]
    m = make_model(
        nodes, [("x", ["N", 2, h, w])], ["y"], [_i64("idx", idx), _i64("axes", axes)], 18
    )
    model = gc.from_onnx(m).compile()
    rng = np.random.default_rng(0)
    for n in (1, 3):
        x = rng.standard_normal((n, 2, h, w)).astype(np.float32)
        (ref,) = _ort(m, {"x": x})
        got = model.predict(x)
        assert got.shape == ref.shape == (n, 2, 3, 4)
        np.testing.assert_array_equal(got, ref)


def _strided(offsets: np.ndarray, stride: int, x_shape: list, pre: list) -> object:
    """x -> (pre nodes) -> v -> Reshape(v, [-1]) -> Gather(Range(0, N) * stride + offsets),
    the index written as torch's dynamo exporter writes as_strided."""
    nodes = pre + [
        helper.make_node("Reshape", ["v", "flat"], ["f"]),
        helper.make_node("Shape", ["x"], ["s"], start=0, end=1),
        helper.make_node("Squeeze", ["s"], ["n"]),
        helper.make_node("Range", ["zero", "n", "one"], ["r"]),
        helper.make_node("Mul", ["r", "stride"], ["rs"]),
        helper.make_node("Unsqueeze", ["rs", "uaxes"], ["ru"]),
        helper.make_node("Add", ["ru", "offsets"], ["idx"]),
        helper.make_node("Gather", ["f", "idx"], ["y"], axis=0),
    ]
    inits = [
        _i64("flat", [-1]),
        _i64("zero", 0),
        _i64("one", 1),
        _i64("stride", stride),
        _i64("uaxes", list(range(1, offsets.ndim + 1))),
        _i64("offsets", offsets[None]),
    ]
    return make_model(nodes, [("x", x_shape)], ["y"], inits, 18)


def test_as_strided_per_sample_gathers_each_samples_positions() -> None:
    # the Swin head: mean over H, W of [N, C, H, W] -> as_strided([N, C, 1, 1], strides
    # [C, 1, C, C]); and a transposing as_strided of [N, 2, 3] -> [N, 3, 2] (offsets
    # 3 * j + i). graphc refused both: "Range over the batch size N is not supported"
    mean = [helper.make_node("ReduceMean", ["x", "hw"], ["v"], keepdims=1)]
    m1 = _strided(np.arange(4).reshape(4, 1, 1), 4, ["N", 4, 3, 5], mean)
    m1.graph.initializer.append(_i64("hw", [2, 3]))
    ident = [helper.make_node("Identity", ["x"], ["v"])]
    offsets = np.arange(2)[None, :] * 3 + np.arange(3)[:, None]  # [3, 2]: y[n, i, j] = x[n, j, i]
    m2 = _strided(offsets, 6, ["N", 2, 3], ident)
    rng = np.random.default_rng(1)
    for m, shape in ((m1, (4, 3, 5)), (m2, (2, 3))):
        model = gc.from_onnx(m).compile()
        for n in (1, 4):
            x = rng.standard_normal((n, *shape)).astype(np.float32)
            (ref,) = _ort(m, {"x": x})
            got = model.predict(x)
            assert got.shape == ref.shape
            np.testing.assert_allclose(got, ref, rtol=1e-6, atol=1e-7)  # (the mean's rounding)


def test_as_strided_that_reads_across_samples_is_still_refused() -> None:
    # stride 3 into samples of 6 elements: sample n reads half of sample n and of n + 1's
    # neighbour; no per-sample gather computes it, and the Range over N is named
    ident = [helper.make_node("Identity", ["x"], ["v"])]
    m = _strided(np.arange(3), 3, ["N", 6], ident)
    with pytest.raises(OnnxError, match=r"Range.*batch size N"):
        gc.from_onnx(m)


@pytest.mark.parametrize("name, shape", [("adapool", (3, 12, 11)), ("swinhead", (4, 4, 8))])
def test_dynamo_exports_of_the_two_decompositions_match_onnxruntime(name: str, shape) -> None:
    # tests/data/onnx/vision_dyn_{adapool,swinhead}_18.onnx (export_torch_vision.py, torch
    # 2.13): AdaptiveAvgPool2d((3, 5)) of a 10 x 9 map, and torchvision's Swin head; both were
    # refused (GatherND needs [10,9,N,4]; Range over the batch size N)
    path = os.path.join(DATA, f"vision_dyn_{name}_18.onnx")
    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    model = gc.from_onnx(path).compile()
    rng = np.random.default_rng(2)
    for n in (1, 5):
        x = rng.standard_normal((n, *shape)).astype(np.float32)
        (ref,) = sess.run(None, {"x": x})
        got = model.predict(x)
        assert got.shape == ref.shape
        np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-6)
